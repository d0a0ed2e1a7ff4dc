/**
 * The `DeliveryAdapter` contract: hand one message to one destination for a set of recipients
 * and say, per recipient, whether it is done (`Ok`), should be tried again later (`Retry`) or
 * can never succeed (`Reject`, dead-lettered with the reason).
 *
 * An adapter that fails as a whole (connection refused, timeout, a bug) fails with
 * `DeliveryError`; the dispatcher turns that into a retry for every recipient, or a rejection
 * when the error says it is permanent.
 */
import { Context, Data, type Effect } from "effect"
import type { MessageBody } from "../queue/MailQueue.ts"
import type { Envelope } from "../smtp/Envelope.ts"

export interface Delivery {
  readonly id: string
  readonly envelope: Envelope
  readonly receivedAt: number
  /** The recipients of this attempt (a subset of the envelope after partial success). */
  readonly recipients: ReadonlyArray<{ readonly rcpt: string; readonly attempt: number }>
  /** The stored message: `Received:` trace header first, then the body as received. */
  readonly body: MessageBody
}

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
  }
  | { readonly _tag: "Reject"; readonly rcpt: string; readonly reason: string; readonly via?: string | undefined }

export const ok = (rcpt: string, reply?: string): RecipientOutcome => ({ _tag: "Ok", rcpt, reply })
export const retry = (rcpt: string, reason: string, at?: number): RecipientOutcome => ({ _tag: "Retry", rcpt, reason, at })
export const reject = (rcpt: string, reason: string): RecipientOutcome => ({ _tag: "Reject", rcpt, reason })

/** The same outcome for every recipient of a delivery. */
export const all = (delivery: Delivery, f: (rcpt: string) => RecipientOutcome): ReadonlyArray<RecipientOutcome> =>
  delivery.recipients.map((r) => f(r.rcpt))

export class DeliveryError extends Data.TaggedError("DeliveryError")<{
  readonly reason: string
  /** False when retrying cannot help (the recipients are dead-lettered). */
  readonly retryable: boolean
  readonly cause?: unknown
}> {
  override get message(): string {
    return this.reason
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
