/**
 * Mailbox addresses as the envelope carries them.
 *
 * RFC 5321 makes the domain case-insensitive and leaves the local part to the receiving host;
 * we lower-case the domain only. `postmaster` without a domain (RFC 5321 4.5.1) is accepted
 * and stands for the postmaster of our primary domain; the null reverse-path `<>` is an empty
 * sender (bounces must be accepted).
 */
export interface Mailbox {
  readonly local: string
  /** Lower-cased; empty only for the bare `postmaster`. */
  readonly domain: string
}

export const toString = (m: Mailbox): string => (m.domain === "" ? m.local : `${m.local}@${m.domain}`)

/**
 * Parses an address already stripped of its angle brackets by the protocol engine.
 * Returns `undefined` for anything that is not `local@domain` or the bare `postmaster`.
 */
export const parse = (address: string): Mailbox | undefined => {
  const at = address.lastIndexOf("@")
  if (at === -1) {
    return address.toLowerCase() === "postmaster" ? { local: "postmaster", domain: "" } : undefined
  }
  const local = address.slice(0, at)
  const domain = address.slice(at + 1).toLowerCase()
  // An "@" inside the local part is only valid quoted (RFC 5321 4.1.2 Quoted-string).
  if (local.includes("@") && !(local.startsWith('"') && local.endsWith('"'))) return undefined
  if (local.length === 0 || local.length > 64 || domain.length === 0 || domain.length > 255) return undefined
  if (!isDomain(domain)) return undefined
  return { local, domain }
}

/** Normalised string form: domain lower-cased, local part kept as sent. */
export const normalize = (address: string): string | undefined => {
  const m = parse(address)
  return m === undefined ? undefined : toString(m)
}

const label = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
const addressLiteral = /^\[[0-9a-f:.]+\]$|^\[ipv6:[0-9a-f:.]+\]$/

export const isDomain = (domain: string): boolean =>
  addressLiteral.test(domain) || domain.split(".").every((l) => label.test(l) || /^xn--[a-z0-9-]+$/.test(l))

export const isPostmaster = (m: Mailbox): boolean => m.local.toLowerCase() === "postmaster"
