/**
 * HelloRequired: a transaction needs a plausible HELO/EHLO. Evaluated at MAIL because
 * smtp-server has no HELO hook (it already answers MAIL before HELO with 503; this rule is the
 * defence in depth for sessions where that is not so, e.g. XCLIENT) and, more usefully, judges
 * the argument's syntax: RFC 5321 4.1.1.1 asks for a domain name or an address literal, so a bare
 * IP (`EHLO 192.0.2.1` instead of `EHLO [192.0.2.1]`), an empty label or a character outside
 * letters/digits/hyphen is refused. A non-FQDN name (`EHLO localhost`) is allowed unless
 * `requireFqdn` is set, because many legitimate clients send one.
 */
import { isIP } from "node:net"
import { Effect } from "effect"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import type { Rule } from "../Policy.ts"
import * as Verdict from "../Verdict.ts"

export interface HelloRequiredOptions {
  readonly name?: string
  readonly observe?: boolean
  /** Accept `EHLO 192.0.2.1` (an IP without brackets). Default false. */
  readonly allowBareIp?: boolean
  /** Refuse a single-label name (`EHLO localhost`). Default false. */
  readonly requireFqdn?: boolean
}

export const missingHelo = SmtpReply.make(503, "5.5.1", "Send HELO/EHLO first")
export const invalidHelo = (why: string) => SmtpReply.make(504, "5.5.2", `HELO/EHLO hostname rejected: ${why}`)

const label = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i

/** Why `helo` is not acceptable, or `undefined` when it is. */
export const check = (helo: string, options: HelloRequiredOptions = {}): string | undefined => {
  if (helo.length === 0) return "empty"
  if (helo.startsWith("[") && helo.endsWith("]")) {
    const inner = helo.slice(1, -1)
    const v6 = /^ipv6:/i.test(inner) ? inner.slice(5) : undefined
    if (v6 !== undefined) return isIP(v6) === 6 ? undefined : "invalid address literal"
    return isIP(inner) === 4 ? undefined : "invalid address literal"
  }
  if (isIP(helo) !== 0) return options.allowBareIp === true ? undefined : "IP address must be in brackets"
  const name = helo.endsWith(".") ? helo.slice(0, -1) : helo
  if (name.length === 0 || name.length > 253) return "invalid hostname"
  const labels = name.split(".")
  if (!labels.every((l) => label.test(l))) return "invalid hostname"
  if (options.requireFqdn === true && labels.length < 2) return "need fully-qualified hostname"
  // An all-numeric last label is an IP-ish typo, not a domain (RFC 3696 2).
  if (labels.length > 1 && /^\d+$/.test(labels[labels.length - 1]!)) return "invalid hostname"
  return undefined
}

export const make = (options: HelloRequiredOptions = {}): Rule => ({
  name: options.name ?? "hello_required",
  observe: options.observe,
  onMailFrom: (ctx) =>
    Effect.sync(() => {
      if (ctx.helo === undefined || ctx.helo === "") return Verdict.reject(missingHelo)
      const why = check(ctx.helo, options)
      return why === undefined ? Verdict.Continue : Verdict.reject(invalidHelo(why))
    })
})
