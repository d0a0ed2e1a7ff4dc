/**
 * The macros (Sendmail's "symbols") a milter is told at each stage, named and valued as Postfix
 * sends them by default (`milter_*_macros`), from what the session knows. Pure.
 *
 * Postfix sends only the macros that have a value, and so do we: no `{tls_version}` or
 * `{cipher}` (the policy contexts know whether TLS is on, not which version), no `{auth_type}`;
 * `i` (the queue id) exists from DATA on, since our message id is made when DATA starts. A
 * filter that asked for its own lists in the negotiation (v6 `smfi_setsymlist`) gets those of
 * its names we can value.
 */
import type { MacroStage } from "./Codec.ts"

/** What the macros are made of; every field is optional because the stages know more and more. */
export interface MacroSource {
  /** Our host name (`j`). */
  readonly hostname: string
  /** The listener's name (`{daemon_name}`). */
  readonly listener?: string | undefined
  readonly clientAddress?: string | undefined
  readonly clientHostname?: string | undefined
  readonly helo?: string | undefined
  readonly secure?: boolean | undefined
  readonly user?: string | undefined
  readonly mailFrom?: string | undefined
  readonly rcptTo?: string | undefined
  /** The queue id (`i`). */
  readonly queueId?: string | undefined
}

/** Postfix's defaults, plus the client macros (which Postfix sends on request) at connect. */
export const defaults: Record<MacroStage, ReadonlyArray<string>> = {
  connect: ["j", "{daemon_name}", "v", "_", "{client_addr}", "{client_name}"],
  helo: ["{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"],
  mail: ["i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}"],
  rcpt: ["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"],
  data: ["i"],
  endOfHeaders: ["i"],
  endOfMessage: ["i"]
}

const domainOf = (address: string | undefined): string | undefined => {
  if (address === undefined) return undefined
  const at = address.lastIndexOf("@")
  return at === -1 ? undefined : address.slice(at + 1)
}

/** The client's name when its address resolved; the engine writes `[address]` when it did not. */
const clientName = (s: MacroSource): string | undefined =>
  s.clientHostname !== undefined && !s.clientHostname.startsWith("[") ? s.clientHostname : undefined

const valueOf = (name: string, s: MacroSource): string | undefined => {
  switch (name) {
    case "j":
      return s.hostname
    case "v":
      return "Incoming"
    case "{daemon_name}":
      return s.listener
    case "{client_addr}":
      return s.clientAddress
    case "{client_name}":
      return clientName(s) ?? (s.clientAddress === undefined ? undefined : "unknown")
    case "_":
      return s.clientAddress === undefined ? undefined : `${clientName(s) ?? "unknown"} [${s.clientAddress}]`
    case "i":
      return s.queueId
    case "{auth_authen}":
    case "{auth_author}":
      return s.user
    case "{mail_addr}":
      return s.mailFrom
    case "{mail_host}":
      return domainOf(s.mailFrom)
    case "{mail_mailer}":
      return s.mailFrom === undefined ? undefined : "smtp"
    case "{rcpt_addr}":
      return s.rcptTo
    case "{rcpt_host}":
      return domainOf(s.rcptTo)
    case "{rcpt_mailer}":
      return s.rcptTo === undefined ? undefined : "smtp"
    default:
      return undefined
  }
}

/** The (name, value) pairs for `stage`: the filter's own list when it gave one, else Postfix's. */
export const forStage = (
  stage: MacroStage,
  source: MacroSource,
  requested?: ReadonlyArray<string> | undefined
): Array<readonly [string, string]> => {
  const out: Array<readonly [string, string]> = []
  for (const name of requested ?? defaults[stage]) {
    // A filter may write `{client_addr}` or `client_addr`: Sendmail accepts both.
    const canonical = name.length > 1 && !name.startsWith("{") ? `{${name}}` : name
    const value = valueOf(canonical, source)
    if (value !== undefined) out.push([canonical, value])
  }
  return out
}
