/**
 * Why receiving a DATA stream failed, and the reply each reason earns. Size and line-ending
 * violations are the sender's (5xx); a broken stream or full disk is ours (4xx).
 */
import { Data } from "effect"
import * as SmtpReply from "../protocol/SmtpReply.ts"

export type SpoolErrorReason =
  | { readonly _tag: "SizeExceeded"; readonly limit: number }
  | { readonly _tag: "BareLineEnding"; readonly kind: "LF" | "CR" }
  | { readonly _tag: "StreamFailed"; readonly detail: string }
  | { readonly _tag: "StorageFull"; readonly detail: string }
  | { readonly _tag: "StorageFailed"; readonly detail: string }

export class SpoolError extends Data.TaggedError("SpoolError")<{
  readonly reason: SpoolErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    switch (r._tag) {
      case "SizeExceeded":
        return `message larger than ${r.limit} bytes`
      case "BareLineEnding":
        return `bare ${r.kind} in message`
      default:
        return `${r._tag}: ${r.detail}`
    }
  }

  get reply(): SmtpReply.SmtpReply {
    const r = this.reason
    switch (r._tag) {
      case "SizeExceeded":
        return SmtpReply.messageTooBig(r.limit)
      case "BareLineEnding":
        return SmtpReply.bareLineEnding(r.kind)
      case "StorageFull":
        return SmtpReply.storageFull
      default:
        return SmtpReply.storageFailed
    }
  }
}
