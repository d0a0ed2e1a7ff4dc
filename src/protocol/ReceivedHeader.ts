/**
 * The `Received:` trace header (RFC 5321 4.4) prepended to every accepted message.
 *
 * The HELO argument is client-controlled text that ends up in a header other software parses:
 * anything outside a conservative hostname/address-literal alphabet is replaced, and it is
 * length-capped, so a client cannot inject header lines or break the clause structure.
 */
export interface TraceInfo {
  readonly helo: string
  readonly clientAddress: string
  readonly clientHostname?: string | undefined
  readonly hostname: string
  readonly secure: boolean
  readonly authenticated: boolean
  /** False when the client opened with HELO: the protocol is then plain `SMTP` (RFC 5321 4.4). */
  readonly esmtp?: boolean | undefined
  /** The transaction used SMTPUTF8: the protocol is `UTF8SMTP` (RFC 6531 §3.7.3). */
  readonly utf8?: boolean | undefined
  /** Received over LMTP: `LMTP` with the RFC 3848 suffixes. */
  readonly lmtp?: boolean | undefined
  readonly id: string
  readonly recipients: ReadonlyArray<string>
  readonly date: Date
}

export const sanitizeHelo = (helo: string): string => {
  const cleaned = helo.replace(/[^A-Za-z0-9.\-:[\]_]/g, "?").slice(0, 255)
  return cleaned.length === 0 ? "unknown" : cleaned
}

/** RFC 5322 date-time, e.g. `Sat, 21 Nov 2026 06:01:02 +0000`. */
export const rfc5322Date = (d: Date): string => {
  const days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
  const p = (n: number) => String(n).padStart(2, "0")
  return `${days[d.getUTCDay()]}, ${p(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
}

/**
 * The protocol keyword for the `with` clause: `SMTP` after HELO (RFC 5321 4.4), otherwise
 * `ESMTP` with the RFC 3848 suffixes (which are defined for ESMTP only), or `UTF8SMTP` with the
 * same suffixes for an SMTPUTF8 transaction (RFC 6531 §3.7.3); `LMTP` with them over LMTP (RFC 3848).
 */
export const protocol = (secure: boolean, authenticated: boolean, esmtp = true, utf8 = false, lmtp = false): string =>
  lmtp || esmtp ? `${lmtp ? "LMTP" : utf8 ? "UTF8SMTP" : "ESMTP"}${secure ? "S" : ""}${authenticated ? "A" : ""}` : "SMTP"

export const make = (t: TraceInfo): string => {
  const ip = t.clientAddress.includes(":") ? `IPv6:${t.clientAddress}` : t.clientAddress
  // The engine reports "[ip]" when it has no verified reverse name; only a real name is worth a clause.
  const name = t.clientHostname
  const rdns = name !== undefined && name !== "" && !name.startsWith("[") && name !== t.clientAddress
    ? `${sanitizeHelo(name)} `
    : ""
  // `for` only with a single recipient: listing every recipient would disclose Bcc recipients.
  const forClause = t.recipients.length === 1 ? `\r\n\tfor <${t.recipients[0]}>` : ""
  return `Received: from ${sanitizeHelo(t.helo)} (${rdns}[${ip}])\r\n` +
    `\tby ${t.hostname} (Incoming) with ${protocol(t.secure, t.authenticated, t.esmtp ?? true, t.utf8 ?? false, t.lmtp ?? false)} id ${t.id}` +
    `${forClause};\r\n\t${rfc5322Date(t.date)}\r\n`
}
