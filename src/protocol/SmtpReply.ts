/**
 * SMTP replies as values, and the one place where a failure becomes a reply.
 *
 * Every reply Incoming produces carries an RFC 3463 enhanced status code. Errors that know
 * their reply implement `HasReply`; anything else that reaches `fromCause` — a defect, a
 * timeout, an interruption — is our problem, not the client's, and becomes a 4xx so the
 * sender retries (guarantee 4: our bug is never a 5xx).
 */
import { Cause } from "effect"

export interface SmtpReply {
  readonly code: number
  readonly enhanced: string
  readonly text: string
}

export interface HasReply {
  readonly reply: SmtpReply
}

export const make = (code: number, enhanced: string, text: string): SmtpReply => ({ code, enhanced, text })

export const format = (reply: SmtpReply): string => `${reply.code} ${reply.enhanced} ${reply.text}`

export const isTransient = (reply: SmtpReply): boolean => reply.code >= 400 && reply.code < 500
export const isPermanent = (reply: SmtpReply): boolean => reply.code >= 500

const hasReply = (u: unknown): u is HasReply =>
  typeof u === "object" && u !== null && "reply" in u && typeof (u as { reply: unknown }).reply === "object" &&
  (u as { reply: SmtpReply | null }).reply !== null && typeof (u as { reply: SmtpReply }).reply.code === "number"

/** A reply to a command or transaction that failed because of `cause`. */
export const fromCause = (cause: Cause.Cause<unknown>): SmtpReply => {
  const failure = cause.reasons.find(Cause.isFailReason)
  if (failure !== undefined) {
    if (hasReply(failure.error)) return failure.error.reply
    if (Cause.isTimeoutError(failure.error)) return timeout
    return internalError
  }
  if (cause.reasons.length > 0 && cause.reasons.every(Cause.isInterruptReason)) return shuttingDown
  return internalError
}

/** An `Error` the protocol engine understands: `responseCode` plus our enhanced code in the text. */
export const toEngineError = (reply: SmtpReply): Error & { responseCode: number } =>
  Object.assign(new Error(`${reply.enhanced} ${reply.text}`), { responseCode: reply.code })

// The catalogue: every reply text Incoming itself emits lives here, so codes stay consistent.
export const queued = (id: string): SmtpReply => make(250, "2.0.0", `queued as ${id}`)
export const deliveredNow = (id: string): SmtpReply => make(250, "2.0.0", `delivered as ${id}`)
export const separateTransaction = make(452, "4.5.3", "Send this recipient in a separate transaction")

/**
 * The reply for a delivery outcome decided synchronously (sync-ack routes). An adapter's reason
 * often is the next hop's reply ("550 5.1.1 no such user"): its code and enhanced code are kept
 * when their class fits the outcome; otherwise the text is wrapped in a generic 451/550. Control
 * characters are stripped and the text capped, since it came from elsewhere.
 */
export const fromAdapterReason = (reason: string, kind: "transient" | "permanent"): SmtpReply => {
  const text = reason.replace(/[\x00-\x1f\x7f]/g, " ").slice(0, 200)
  const cls = kind === "transient" ? "4" : "5"
  const full = /^([245])(\d\d)[ -]([245]\.\d{1,3}\.\d{1,3}) (.*)$/.exec(text)
  if (full !== null && full[1] === cls && full[3]!.startsWith(cls)) return make(Number(`${full[1]}${full[2]}`), full[3]!, full[4]!)
  const bare = /^([245])(\d\d) (.*)$/.exec(text)
  if (bare !== null && bare[1] === cls) return make(Number(`${bare[1]}${bare[2]}`), `${cls}.0.0`, bare[3]!)
  return kind === "transient" ? make(451, "4.4.0", text) : make(550, "5.0.0", text)
}
export const badSequence = (text: string): SmtpReply => make(503, "5.5.1", text)
export const syntaxError = (text: string): SmtpReply => make(501, "5.5.2", text)
export const unknownParameter = (name: string): SmtpReply =>
  make(555, "5.5.4", `${name} parameter not recognized`)
export const badRecipientSyntax = (text: string): SmtpReply => make(501, "5.1.3", text)
export const tooManyRecipients = make(452, "4.5.3", "Too many recipients")
export const tooManyCommands = make(421, "4.7.0", "Too many commands, closing connection")
export const tooManyErrors = make(421, "4.7.0", "Too many errors, closing connection")
export const tooManyConnections = make(421, "4.7.0", "Too many connections, try again later")
export const tooManyConnectionsFromIp = make(421, "4.7.0", "Too many connections from your address, try again later")
export const commandTimeout = make(421, "4.4.2", "Command timeout, closing connection")
export const connectionTimeLimit = make(421, "4.4.2", "Connection time limit reached, closing connection")
export const messageTooBig = (limit: number): SmtpReply =>
  make(552, "5.3.4", `Message exceeds the fixed maximum message size of ${limit} bytes`)
export const bareLineEnding = (kind: "LF" | "CR"): SmtpReply =>
  make(550, "5.6.0", `Message contains a bare ${kind} (line endings must be CRLF, RFC 5321 2.3.8)`)
export const relayDenied = make(554, "5.7.1", "Relay access denied")
export const queueFull = make(452, "4.3.1", "Insufficient system storage, try again later")
export const storageFull = make(452, "4.3.1", "Insufficient system storage, try again later")
export const storageFailed = make(451, "4.3.0", "Temporary storage failure, try again later")
export const internalError = make(451, "4.3.0", "Temporary local problem, try again later")
export const timeout = make(451, "4.4.2", "Timeout while processing, try again later")
export const shuttingDown = make(421, "4.3.2", "Service shutting down, try again later")
