/**
 * What a policy rule decides at one stage, as a value.
 *
 * `Continue` hands the decision to the next rule; `Accept` ends the pipeline for this stage and
 * lets the command through (it never bypasses recipient authority, which is not a rule);
 * `Reject` (5xx), `Defer` (4xx) and `Disconnect` (421, then close) carry the reply the client
 * gets. The constructors have defaults with enhanced codes, and refuse a reply of the wrong
 * class: a "reject" with a 4xx would silently turn a policy into a retry loop, a "defer" with a
 * 5xx would bounce mail that was meant to be retried.
 */
import * as SmtpReply from "../protocol/SmtpReply.ts"

export type Verdict =
  | { readonly _tag: "Continue" }
  | { readonly _tag: "Accept" }
  | { readonly _tag: "Reject"; readonly reply: SmtpReply.SmtpReply }
  | { readonly _tag: "Defer"; readonly reply: SmtpReply.SmtpReply }
  | { readonly _tag: "Disconnect"; readonly reply: SmtpReply.SmtpReply }

export type VerdictTag = Verdict["_tag"]

export const defaultRejectReply = SmtpReply.make(550, "5.7.1", "Rejected by policy")
export const defaultDeferReply = SmtpReply.make(451, "4.7.1", "Try again later")
export const defaultDisconnectReply = SmtpReply.make(421, "4.7.0", "Closing connection")

const classed = (reply: SmtpReply.SmtpReply, low: number, high: number, fallback: SmtpReply.SmtpReply) =>
  reply.code >= low && reply.code < high && reply.enhanced.startsWith(String(Math.floor(low / 100)))
    ? reply
    : { ...fallback, text: reply.text }

export const Continue: Verdict = { _tag: "Continue" }
export const Accept: Verdict = { _tag: "Accept" }

/** A permanent refusal; a reply that is not 5xx with a 5.x.x code is replaced by 550 5.7.1 (text kept). */
export const reject = (reply: SmtpReply.SmtpReply = defaultRejectReply): Verdict => ({
  _tag: "Reject",
  reply: classed(reply, 500, 600, defaultRejectReply)
})

/** A temporary refusal; a reply that is not 4xx with a 4.x.x code is replaced by 451 4.7.1 (text kept). */
export const defer = (reply: SmtpReply.SmtpReply = defaultDeferReply): Verdict => ({
  _tag: "Defer",
  reply: classed(reply, 400, 500, defaultDeferReply)
})

/**
 * Say `reply` and close. smtp-server closes a connection when it sends a 421, so any other code
 * is replaced by 421 4.7.0 (text kept): a disconnect that does not disconnect is a lie.
 */
export const disconnect = (reply: SmtpReply.SmtpReply = defaultDisconnectReply): Verdict => ({
  _tag: "Disconnect",
  reply: reply.code === 421 && reply.enhanced.startsWith("4") ? reply : { ...defaultDisconnectReply, text: reply.text }
})

export const isContinue = (v: Verdict): boolean => v._tag === "Continue"

/** The reply a verdict sends instead of the normal answer, if any. */
export const replyOf = (v: Verdict): SmtpReply.SmtpReply | undefined =>
  v._tag === "Reject" || v._tag === "Defer" || v._tag === "Disconnect" ? v.reply : undefined

export const describe = (v: Verdict): string => {
  const reply = replyOf(v)
  return reply === undefined ? v._tag : `${v._tag} ${SmtpReply.format(reply)}`
}
