/**
 * The one error type of the queue contract. Its reason says what went wrong and knows the SMTP
 * reply a session gives when a commit fails for that reason: every reason is transient (4xx),
 * because a storage problem is ours, never the sender's.
 */
import { Data } from "effect"
import * as SmtpReply from "../protocol/SmtpReply.ts"

export type MailQueueErrorReason =
  | { readonly _tag: "Full"; readonly depth: number; readonly maxDepth: number }
  | { readonly _tag: "StorageFull"; readonly detail: string }
  | { readonly _tag: "StorageFailed"; readonly detail: string }
  | { readonly _tag: "LeaseLost"; readonly id: string }
  | { readonly _tag: "NotFound"; readonly id: string }

export class MailQueueError extends Data.TaggedError("MailQueueError")<{
  readonly reason: MailQueueErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    switch (r._tag) {
      case "Full":
        return `queue full: depth ${r.depth} >= max_depth ${r.maxDepth}`
      case "StorageFull":
        return `storage full: ${r.detail}`
      case "StorageFailed":
        return `storage failed: ${r.detail}`
      case "LeaseLost":
        return `lease lost for ${r.id}`
      case "NotFound":
        return `no message ${r.id}`
    }
  }

  get reply(): SmtpReply.SmtpReply {
    switch (this.reason._tag) {
      case "Full":
        return SmtpReply.queueFull
      case "StorageFull":
        return SmtpReply.storageFull
      default:
        return SmtpReply.storageFailed
    }
  }
}

/** Classifies a storage exception: out-of-space conditions get their own reason (452). */
export const fromStorageException = (cause: unknown, what: string): MailQueueError => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : ""
  const text = cause instanceof Error ? cause.message : String(cause)
  const full = code === "ENOSPC" || code === "EDQUOT" || /SQLITE_FULL|database or disk is full|ENOSPC/i.test(text)
  return new MailQueueError({
    reason: full ? { _tag: "StorageFull", detail: `${what}: ${text}` } : { _tag: "StorageFailed", detail: `${what}: ${text}` },
    cause
  })
}
