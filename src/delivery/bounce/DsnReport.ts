/**
 * A delivery status notification (RFC 3464) as message bytes: `multipart/report;
 * report-type=delivery-status` with a human-readable part, the `message/delivery-status` part
 * (per-message fields, then one block per recipient) and the original's header
 * (`text/rfc822-headers`) or, under `RET=FULL`, the whole original (`message/rfc822`).
 *
 * Pure: the caller decides whom to notify and reads the original; this only writes. No npm
 * library writes DSNs (nodemailer composes mail, postal-mime parses it), and the format is a few
 * dozen lines of fields.
 */
import { randomBytes } from "node:crypto"

export interface FailedRecipient {
  /** The recipient as we tried it (`Final-Recipient`). */
  readonly rcpt: string
  /** ORCPT (RFC 3461): `Original-Recipient`, with its address type. */
  readonly original?: { readonly type: string; readonly address: string } | undefined
  readonly action: "failed" | "delayed"
  /** Our last reason: usually the peer's reply (`550 5.1.1 no such user`). */
  readonly reason: string
  /** The host that gave the reply, when one did (`Remote-MTA`). */
  readonly remoteMta?: string | undefined
  readonly lastAttemptAt: number
  /** A delayed recipient: when we stop trying (`Will-Retry-Until`). */
  readonly willRetryUntil?: number | undefined
}

export interface ReportInput {
  /** Our host name (`Reporting-MTA`, the From address's domain, the Message-ID's right side). */
  readonly reportingMta: string
  /** Whom the report goes to: the original envelope sender. */
  readonly to: string
  readonly arrivalAt: number
  readonly envid?: string | undefined
  readonly recipients: ReadonlyArray<FailedRecipient>
  /** The original: its header block, or the whole message when `full`. */
  readonly original: Uint8Array
  readonly full: boolean
  readonly now: number
}

const statusPattern = /\b([245])\.(\d{1,3})\.(\d{1,3})\b/

/**
 * The RFC 3463 status of a reason: the enhanced code it carries, else one from its reply code's
 * class (`5.0.0`, `4.0.0`), else `5.0.0` for a failure and `4.0.0` for a delay.
 */
export const statusOf = (reason: string, action: FailedRecipient["action"]): string => {
  const found = statusPattern.exec(reason)
  if (found !== null) return `${found[1]}.${found[2]}.${found[3]}`
  const code = /^\s*([245])\d\d\b/.exec(reason)
  if (code !== null) return `${code[1]}.0.0`
  return action === "failed" ? "5.0.0" : "4.0.0"
}

/** Whether the reason is an SMTP reply (a `Diagnostic-Code: smtp;` value) rather than our own words. */
const smtpReply = (reason: string) => /^\s*[245]\d\d[ -]/.test(reason)

/** RFC 5322 date-time. */
export const rfc5322Date = (ms: number): string => new Date(ms).toUTCString().replace(/GMT$/, "+0000")

/** A field value on one line: no CR/LF can reach the report's header from a peer's reply. */
const oneLine = (text: string) => text.replace(/[\r\n]+/g, " ").trim()

const human = (input: ReportInput): string => {
  const failed = input.recipients.filter((r) => r.action === "failed")
  const delayed = input.recipients.filter((r) => r.action === "delayed")
  const lines = [`This is the mail system at ${input.reportingMta}.`, ""]
  if (failed.length > 0) {
    lines.push("Your message could not be delivered to the following recipient(s). This is a permanent error;", "it will not be tried again.", "")
    for (const r of failed) lines.push(`<${r.rcpt}>: ${oneLine(r.reason)}`)
    lines.push("")
  }
  if (delayed.length > 0) {
    lines.push("Your message has not been delivered yet to the following recipient(s). It will be tried again;", "you do not need to send it again.", "")
    for (const r of delayed) lines.push(`<${r.rcpt}>: ${oneLine(r.reason)}`)
    lines.push("")
  }
  lines.push(input.full ? "The original message is attached." : "The original message's header is attached.")
  return lines.join("\r\n")
}

const deliveryStatus = (input: ReportInput): string => {
  const blocks: Array<string> = []
  blocks.push([
    `Reporting-MTA: dns; ${input.reportingMta}`,
    ...(input.envid !== undefined ? [`Original-Envelope-Id: ${oneLine(input.envid)}`] : []),
    `Arrival-Date: ${rfc5322Date(input.arrivalAt)}`
  ].join("\r\n"))
  for (const r of input.recipients) {
    blocks.push([
      `Final-Recipient: rfc822; ${r.rcpt}`,
      ...(r.original !== undefined ? [`Original-Recipient: ${oneLine(r.original.type)}; ${oneLine(r.original.address)}`] : []),
      `Action: ${r.action}`,
      `Status: ${statusOf(r.reason, r.action)}`,
      ...(r.remoteMta !== undefined ? [`Remote-MTA: dns; ${oneLine(r.remoteMta)}`] : []),
      `Diagnostic-Code: ${smtpReply(r.reason) ? "smtp" : "x-incoming"}; ${oneLine(r.reason)}`,
      `Last-Attempt-Date: ${rfc5322Date(r.lastAttemptAt)}`,
      ...(r.action === "delayed" && r.willRetryUntil !== undefined ? [`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`] : [])
    ].join("\r\n"))
  }
  return blocks.join("\r\n\r\n")
}

/** The header block of a message (up to and including the empty line), or all of it when it has no body. */
export const headerBlock = (message: Uint8Array): Uint8Array => {
  const text = Buffer.from(message.buffer, message.byteOffset, message.byteLength)
  const crlf = text.indexOf("\r\n\r\n")
  const lf = text.indexOf("\n\n")
  const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 4 : lf >= 0 ? lf + 2 : text.length
  return text.subarray(0, end)
}

/** The report as a message (header and body, CRLF line ends). */
export const render = (input: ReportInput): Buffer => {
  const boundary = `=_incoming_dsn_${randomBytes(12).toString("hex")}`
  const anyFailed = input.recipients.some((r) => r.action === "failed")
  const header = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: <${input.to}>`,
    `Subject: ${anyFailed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)"}`,
    `Date: ${rfc5322Date(input.now)}`,
    `Message-ID: <${input.now.toString(36)}.${randomBytes(6).toString("hex")}@${input.reportingMta}>`,
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    "",
    "This is a MIME-encapsulated delivery status notification (RFC 3464).",
    ""
  ].join("\r\n")
  const original = Buffer.from(input.original.buffer, input.original.byteOffset, input.original.byteLength)
  const parts = [
    `--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nContent-Description: Notification\r\n\r\n${human(input)}\r\n`,
    `--${boundary}\r\nContent-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n${deliveryStatus(input)}\r\n`,
    `--${boundary}\r\nContent-Type: ${input.full ? "message/rfc822" : "text/rfc822-headers"}\r\nContent-Description: ${input.full ? "Undelivered message" : "Undelivered message header"}\r\n\r\n`
  ]
  const closing = `${original.length > 0 && original[original.length - 1] !== 0x0a ? "\r\n" : ""}--${boundary}--\r\n`
  return Buffer.concat([Buffer.from(header + "\r\n" + parts.join("")), original, Buffer.from(closing)])
}
