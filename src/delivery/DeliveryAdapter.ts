/**
 * The `DeliveryAdapter` contract: hand one message to one destination for a set of recipients
 * and say, per recipient, whether it is done (`Ok`), should be tried again later (`Retry`) or
 * can never succeed (`Reject`, dead-lettered with the reason).
 *
 * The message reaches the adapter as an Effect `Stream` of bytes that reads the stored copy
 * afresh each time it runs (an adapter may read it twice: to sign it, then to send it), so an
 * adapter stays inside Effect from the queue to its destination.
 *
 * An adapter that fails as a whole (connection refused, timeout, a bug) fails with
 * `DeliveryError`; the dispatcher turns that into a retry for every recipient, or a rejection
 * when its reason is `Rejected`.
 */
import type { Readable } from "node:stream"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Context, Data, type Effect, type Stream } from "effect"
import * as MailQueueError from "../queue/MailQueueError.ts"
import type { Envelope } from "../protocol/Envelope.ts"
import * as SmtpReply from "../protocol/SmtpReply.ts"

export interface Delivery {
  /**
   * The queue id, the same on every attempt. Delivery is at-least-once (a crash between the
   * adapter's write and the queue's record of it delivers again): receivers deduplicate by it.
   */
  readonly id: string
  readonly envelope: Envelope
  readonly receivedAt: number
  /** The recipients of this attempt (a subset of the envelope after partial success). */
  readonly recipients: ReadonlyArray<{ readonly rcpt: string; readonly attempt: number }>
  /** Bytes in `body`. */
  readonly size: number
  /**
   * The stored message: `Received:` trace header first, then the body as received. Each run
   * reads it again from the queue; a storage problem fails the stream with `MailQueueError`.
   */
  readonly body: Stream.Stream<Uint8Array, MailQueueError.MailQueueError>
}

/** A delivery body that opens `open()` (a queue's `MessageBody.stream`) each time it runs. */
export const bodyStream = (open: () => Readable): Stream.Stream<Uint8Array, MailQueueError.MailQueueError> =>
  NodeStream.fromReadable({
    evaluate: open,
    onError: (cause) => MailQueueError.fromStorageException(cause, "reading the message")
  })

/** `via` names the adapter that decided (a router's route), for events and metrics. */
export type RecipientOutcome =
  | { readonly _tag: "Ok"; readonly rcpt: string; readonly reply?: string | undefined; readonly via?: string | undefined }
  | {
    readonly _tag: "Retry"
    readonly rcpt: string
    readonly reason: string
    /** When to try again (epoch ms); without it the dispatcher's backoff decides. */
    readonly at?: number | undefined
    /** The attempt limit for this recipient (a route's); without it the dispatcher's applies. */
    readonly maxAttempts?: number | undefined
    readonly via?: string | undefined
    /** The host that gave `reason`, when a remote server did (a bounce's `Remote-MTA`). */
    readonly remote?: string | undefined
  }
  | {
    readonly _tag: "Reject"
    readonly rcpt: string
    readonly reason: string
    readonly via?: string | undefined
    /** The host that gave `reason`, when a remote server did (a bounce's `Remote-MTA`). */
    readonly remote?: string | undefined
  }

export const ok = (rcpt: string, reply?: string): RecipientOutcome => ({ _tag: "Ok", rcpt, reply })
export const retry = (rcpt: string, reason: string, at?: number): RecipientOutcome => ({ _tag: "Retry", rcpt, reason, at })
export const reject = (rcpt: string, reason: string): RecipientOutcome => ({ _tag: "Reject", rcpt, reason })

/** The same outcome for every recipient of a delivery. */
export const all = (delivery: Delivery, f: (rcpt: string) => RecipientOutcome): ReadonlyArray<RecipientOutcome> =>
  delivery.recipients.map((r) => f(r.rcpt))

export type DeliveryErrorReason =
  /** The destination did not answer in time. */
  | { readonly _tag: "Timeout"; readonly detail: string }
  /** The destination could not be reached (connection refused, reset, name not found, TLS). */
  | { readonly _tag: "Refused"; readonly detail: string }
  /** The destination refused the message for good: its recipients are dead-lettered with `reply`. */
  | { readonly _tag: "Rejected"; readonly reply: string }
  /** Anything else (the message could not be read, a bug in a handler): retried. */
  | { readonly _tag: "Failed"; readonly detail: string }

export class DeliveryError extends Data.TaggedError("DeliveryError")<{
  readonly reason: DeliveryErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    return this.reason._tag === "Rejected" ? this.reason.reply : this.reason.detail
  }

  /** False when retrying cannot help (the recipients are dead-lettered). */
  get retryable(): boolean {
    return this.reason._tag !== "Rejected"
  }

  /** The reply a sender gets when this failure decides a synchronously acknowledged message. */
  get reply(): SmtpReply.SmtpReply {
    switch (this.reason._tag) {
      case "Rejected":
        return SmtpReply.fromAdapterReason(this.reason.reply, "permanent")
      case "Timeout":
        return SmtpReply.timeout
      default:
        return SmtpReply.fromAdapterReason(this.reason.detail, "transient")
    }
  }
}

export class DeliveryAdapter extends Context.Service<DeliveryAdapter, {
  readonly name: string
  readonly deliver: (delivery: Delivery) => Effect.Effect<ReadonlyArray<RecipientOutcome>, DeliveryError>
  /**
   * Whether this adapter hands `rcpt` on to another host (an SMTP relay): only then may a client
   * allowed to relay give a recipient outside our domains, which is otherwise refused at RCPT
   * (550 5.7.1) instead of being filed in a local mailbox. Absent: it delivers locally only.
   */
  readonly deliversOffSite?: ((rcpt: string) => boolean) | undefined
}>()("incoming/DeliveryAdapter") {}
