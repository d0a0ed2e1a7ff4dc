/**
 * Mailbox addresses: the RFC 5321 §4.1.2 `Mailbox` grammar (with RFC 6531's UTF-8 additions),
 * its length limits, and the one canonical string form the rest of Incoming stores and compares.
 *
 * - Local part: a dot-string (`john.smith`) or a quoted string (`"john smith"`, with `\` escapes).
 *   RFC 5322 §3.4.1 makes the two forms equivalent, so the canonical form unquotes what needs no
 *   quotes (`"john"` is `john`) and quotes the rest with the minimum of escapes. The case of the
 *   local part is kept (RFC 5321 §2.4 leaves it to the receiving host).
 * - Domain: LDH labels of at most 63 octets, lower-cased; under SMTPUTF8 also U-labels, stored as
 *   their A-label (`bücher.example` is `xn--bcher-kva.example`), so one domain has one spelling.
 *   Or an address literal: `[192.0.2.1]`, `[IPv6:2001:db8::1]` (stored compressed, RFC 5952) or a
 *   general one `[tag:content]`.
 * - Limits (§4.5.3.1): local part 64 octets, domain 255 octets, both counted as sent; the 256-octet
 *   path limit belongs to the command (AddressCommand.ts).
 * - UTF-8 (RFC 6531) only where the caller allows it (`utf8`); the C1 controls and the invisible
 *   formatting characters (zero-width space, bidi overrides, BOM) are refused even then: they only
 *   serve to spoof an address in a log line or a header.
 *
 * `postmaster` without a domain (RFC 5321 §4.5.1) parses to an empty domain and stands for the
 * postmaster of our primary domain; the null reverse-path `<>` is the empty string elsewhere.
 */
import { isIPv4, isIPv6 } from "node:net"
import { domainToASCII } from "node:url"
import ipaddr from "ipaddr.js"
import { Result } from "effect"

export interface Mailbox {
  /** The local part as meant: unquoted and unescaped (`john smith` for `"john smith"`). */
  readonly local: string
  /** Canonical: lower-cased, A-labels, compressed IPv6; empty only for the bare `postmaster`. */
  readonly domain: string
}

export const maxLocalOctets = 64
export const maxDomainOctets = 255
export const maxPathOctets = 256

/** Why a string is not a mailbox. `NonAscii`: UTF-8 where it is not allowed (RFC 6531: 553 5.6.7). */
export type Problem =
  | { readonly _tag: "Syntax"; readonly detail: string }
  | { readonly _tag: "LocalTooLong"; readonly octets: number }
  | { readonly _tag: "DomainTooLong"; readonly octets: number }
  | { readonly _tag: "NonAscii" }

export interface ParseOptions {
  /** Accept UTF-8 in the local part and U-labels in the domain (the transaction is SMTPUTF8). */
  readonly utf8?: boolean | undefined
  /** Accept the bare `postmaster` (RCPT only). */
  readonly postmaster?: boolean | undefined
}

const syntax = (detail: string): Result.Result<never, Problem> => Result.fail({ _tag: "Syntax", detail })
const octets = (s: string): number => Buffer.byteLength(s, "utf8")

// RFC 5322 atext: ALPHA / DIGIT / "!#$%&'*+-/=?^_`{|}~"
const atextAscii = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]$/
/** Non-ASCII characters that are never part of an address: C1 controls and invisible formatting ones. */
const invisible = /[\u0080-\u009f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/

const isAtext = (ch: string, utf8: boolean): boolean =>
  ch.length === 1 && ch.charCodeAt(0) < 0x80 ? atextAscii.test(ch) : utf8 && !invisible.test(ch)

/** qtextSMTP (%d32-33 / %d35-91 / %d93-126) and, under SMTPUTF8, UTF8-non-ascii. */
const isQtext = (ch: string, utf8: boolean): boolean => {
  const c = ch.codePointAt(0)!
  if (c < 0x80) return c >= 32 && c <= 126 && c !== 34 && c !== 92
  return utf8 && !invisible.test(ch)
}

const hasNonAscii = (s: string): boolean => /[^\x00-\x7f]/.test(s)

/** An all-ASCII Dot-string in one pass (the common case; the loop below handles UTF-8). */
const asciiDotString = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*$/

/** Whether `s` is a Dot-string (atoms joined by single dots). */
export const isDotString = (s: string, utf8 = true): boolean => {
  if (s === "") return false
  if (!hasNonAscii(s)) return asciiDotString.test(s)
  for (const atom of s.split(".")) {
    if (atom === "") return false
    for (const ch of atom) if (!isAtext(ch, utf8)) return false
  }
  return true
}

/** The local part as written in an address: bare when it is a dot-string, else quoted. */
export const formatLocal = (local: string): string =>
  isDotString(local) ? local : `"${local.replace(/["\\]/g, "\\$&")}"`

/** The canonical string form: `local@domain`, or `postmaster` for the domainless one. */
export const toString = (m: Mailbox): string => (m.domain === "" ? m.local : `${formatLocal(m.local)}@${m.domain}`)

interface LocalPart {
  readonly local: string
  /** Index of the `@` after it. */
  readonly end: number
}

const parseLocal = (s: string, utf8: boolean): Result.Result<LocalPart, Problem> => {
  if (s.startsWith('"')) {
    let local = ""
    let i = 1
    while (i < s.length) {
      const ch = String.fromCodePoint(s.codePointAt(i)!)
      if (ch === '"') {
        if (s[i + 1] !== "@") return syntax("a quoted local part must be followed by @domain")
        return Result.succeed({ local, end: i + 1 })
      }
      if (ch === "\\") {
        // quoted-pairSMTP = "\" %d32-126
        const next = s.charCodeAt(i + 1)
        if (!(next >= 32 && next <= 126)) return syntax("a backslash in a quoted string must escape a printable ASCII character")
        local += s[i + 1]
        i += 2
        continue
      }
      if (!isQtext(ch, utf8)) {
        return !utf8 && ch.codePointAt(0)! >= 0x80 ? Result.fail({ _tag: "NonAscii" }) : syntax("a character not allowed in a quoted string")
      }
      local += ch
      i += ch.length
    }
    return syntax("an unterminated quoted string")
  }
  // atext has no "@": the first one ends a dot-string (a general address literal may hold more).
  const at = s.indexOf("@")
  if (at <= 0) return syntax(at === 0 ? "an empty local part" : "no @domain")
  const local = s.slice(0, at)
  if (!utf8 && hasNonAscii(local)) return Result.fail({ _tag: "NonAscii" })
  if (!isDotString(local, utf8)) return syntax("the local part is neither a dot-string nor a quoted string")
  return Result.succeed({ local, end: at })
}

/** LDH label: a letter or digit, then letters, digits and hyphens, not ending in a hyphen; at most 63. */
const ldhLabel = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/

const canonicalLabel = (label: string, utf8: boolean): Result.Result<string, Problem> => {
  if (ldhLabel.test(label)) return Result.succeed(label.toLowerCase())
  if (!hasNonAscii(label)) return syntax(label === "" ? "an empty domain label" : "a domain label that is not letters, digits and inner hyphens (at most 63)")
  if (!utf8) return Result.fail({ _tag: "NonAscii" })
  if (invisible.test(label)) return syntax("an invisible character in the domain")
  // RFC 6531 sub-domain =/ U-label: stored as its A-label so both spellings are one domain.
  const ascii = domainToASCII(label)
  return ascii.startsWith("xn--") && ldhLabel.test(ascii) ? Result.succeed(ascii) : syntax("a domain label that is not a valid U-label")
}

const snum = /^\d{1,3}$/

const canonicalLiteral = (literal: string): Result.Result<string, Problem> => {
  const inner = literal.slice(1, -1)
  const colon = inner.indexOf(":")
  if (colon === -1) {
    const parts = inner.split(".")
    if (parts.length !== 4 || !parts.every((p) => snum.test(p) && Number(p) <= 255)) return syntax("a bad IPv4 address literal")
    const canonical = parts.map(Number).join(".")
    return isIPv4(canonical) ? Result.succeed(`[${canonical}]`) : syntax("a bad IPv4 address literal")
  }
  const tag = inner.slice(0, colon)
  const content = inner.slice(colon + 1)
  if (tag.toLowerCase() === "ipv6") {
    if (content.includes("%") || !isIPv6(content)) return syntax("a bad IPv6 address literal")
    const ip = ipaddr.IPv6.parse(content)
    // RFC 5952 §5: an IPv4-mapped address keeps its dotted quad.
    const text = ip.isIPv4MappedAddress() ? `::ffff:${ip.toIPv4Address().toString()}` : ip.toRFC5952String()
    return Result.succeed(`[ipv6:${text}]`)
  }
  // General-address-literal = Standardized-tag ":" 1*dcontent; dcontent = %d33-90 / %d94-126
  if (!/^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/.test(tag) || !/^[\x21-\x5a\x5e-\x7e]+$/.test(content)) {
    return syntax("a bad address literal")
  }
  return Result.succeed(`[${tag.toLowerCase()}:${content.toLowerCase()}]`)
}

// Canonical domains by the text sent, per SMTPUTF8 mode: every MAIL and RCPT canonicalises its
// domain, and mail comes from and to few domains, so most lookups are one Map read. Bounded:
// cleared when full (a Result is immutable, so sharing one is safe).
const canonicalCache = [new Map<string, Result.Result<string, Problem>>(), new Map<string, Result.Result<string, Problem>>()] as const
const canonicalCacheSize = 1024

/** The canonical form of a domain or address literal, as in `Mailbox.domain`. */
export const canonicalDomain = (domain: string, options: { readonly utf8?: boolean | undefined } = {}): Result.Result<string, Problem> => {
  const cache = canonicalCache[options.utf8 === true ? 1 : 0]
  const known = cache.get(domain)
  if (known !== undefined) return known
  const result = canonicalDomainOf(domain, options.utf8 === true)
  if (cache.size >= canonicalCacheSize) cache.clear()
  cache.set(domain, result)
  return result
}

const canonicalDomainOf = (domain: string, utf8: boolean): Result.Result<string, Problem> => {
  if (domain === "") return syntax("an empty domain")
  const sent = octets(domain)
  if (sent > maxDomainOctets) return Result.fail({ _tag: "DomainTooLong", octets: sent })
  if (domain.startsWith("[")) {
    return domain.endsWith("]") && domain.length > 2 ? canonicalLiteral(domain) : syntax("a bad address literal")
  }
  const labels: Array<string> = []
  for (const label of domain.split(".")) {
    const c = canonicalLabel(label, utf8)
    if (Result.isFailure(c)) return Result.fail(c.failure)
    labels.push(c.success)
  }
  const canonical = labels.join(".")
  // The A-label form is what DNS carries: it too must fit.
  return octets(canonical) > maxDomainOctets ? Result.fail({ _tag: "DomainTooLong", octets: octets(canonical) }) : Result.succeed(canonical)
}

/** Parses `local@domain` (no angle brackets), or the bare postmaster when allowed. */
export const check = (address: string, options: ParseOptions = {}): Result.Result<Mailbox, Problem> => {
  if (options.postmaster === true && address.toLowerCase() === "postmaster") return Result.succeed({ local: "postmaster", domain: "" })
  const utf8 = options.utf8 === true
  const local = parseLocal(address, utf8)
  if (Result.isFailure(local)) return Result.fail(local.failure)
  const written = octets(address.slice(0, local.success.end))
  if (written > maxLocalOctets) return Result.fail({ _tag: "LocalTooLong", octets: written })
  const domain = canonicalDomain(address.slice(local.success.end + 1), { utf8 })
  if (Result.isFailure(domain)) return Result.fail(domain.failure)
  return Result.succeed({ local: local.success.local, domain: domain.success })
}

/**
 * Parses an address the protocol engine accepted (or one from configuration): UTF-8 allowed,
 * the bare postmaster too. `undefined` for anything that is not a mailbox.
 */
export const parse = (address: string): Mailbox | undefined => {
  const r = check(address, { utf8: true, postmaster: true })
  return Result.isSuccess(r) ? r.success : undefined
}

/** The canonical string form of an address, or `undefined` when it is not one. */
export const normalize = (address: string): string | undefined => {
  const m = parse(address)
  return m === undefined ? undefined : toString(m)
}

/**
 * A configured domain in the form `Mailbox.domain` has (`Bücher.example` → `xn--bcher-kva.example`),
 * so configuration and envelopes compare equal; lower-cased as is when it is not a valid domain.
 */
export const domainKey = (domain: string): string => {
  const c = canonicalDomain(domain, { utf8: true })
  return Result.isSuccess(c) ? c.success : domain.toLowerCase()
}

/** A configured mailbox for case-insensitive comparison with envelope addresses (canonical, lower-cased). */
export const mailboxKey = (address: string): string => (normalize(address) ?? address).toLowerCase()

/** Whether `domain` is a domain name or address literal (UTF-8 labels included). */
export const isDomain = (domain: string): boolean => Result.isSuccess(canonicalDomain(domain, { utf8: true }))

export const isPostmaster = (m: Mailbox): boolean => m.local.toLowerCase() === "postmaster"

/** A human-readable reason, for reply texts and config errors. */
export const describe = (p: Problem): string => {
  switch (p._tag) {
    case "Syntax":
      return p.detail
    case "LocalTooLong":
      return `local part of ${p.octets} octets (at most ${maxLocalOctets})`
    case "DomainTooLong":
      return `domain of ${p.octets} octets (at most ${maxDomainOctets})`
    case "NonAscii":
      return "non-ASCII address without SMTPUTF8"
  }
}
