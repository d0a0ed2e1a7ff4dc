/**
 * One line saying why an effect failed, for logs, events and stored last replies: the error's
 * message for a failure, "interrupted" for an interruption, the first line of the pretty cause
 * for a defect.
 */
import { Cause } from "effect"

export const oneLine = (cause: Cause.Cause<unknown>): string => {
  const fail = cause.reasons.find(Cause.isFailReason)
  if (fail !== undefined) return fail.error instanceof Error ? fail.error.message : String(fail.error)
  if (cause.reasons.length > 0 && cause.reasons.every(Cause.isInterruptReason)) return "interrupted"
  return Cause.pretty(cause).split("\n")[0] ?? "defect"
}
