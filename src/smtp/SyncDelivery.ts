/**
 * What a session asks of delivery, and all it asks: what priority its routes give a message; is
 * this recipient's route acknowledged synchronously; and if the message's one recipient is,
 * deliver it now so the adapter's outcome becomes the reply to DATA (ok → 250, retry → 4xx,
 * reject → 5xx) and nothing is queued.
 *
 * The session owns this contract and `delivery/SyncAck.ts` implements it from the route table and
 * the adapter, so the listener side never imports delivery code. The service is optional: without
 * it every recipient is acknowledged after the durable commit.
 */
import { Context, Data, type Effect, type Option } from "effect"
import type { NewMessage } from "../queue/MailQueue.ts"
import type { Envelope } from "../protocol/Envelope.ts"
import type { SmtpReply } from "../protocol/SmtpReply.ts"

/** A synchronous delivery that did not succeed; `reply` is what the client gets. */
export class SyncDeliveryError extends Data.TaggedError("SyncDeliveryError")<{
  /** `Rejected`: the adapter refused for good (5xx). `Deferred`: retry, timeout or failure (4xx). */
  readonly reason: "Rejected" | "Deferred"
  readonly reply: SmtpReply
}> {}

export class SyncDelivery extends Context.Service<SyncDelivery, {
  /**
   * Whether `rcpt`'s route is acknowledged synchronously. Such a recipient is alone in its
   * transaction (RFC 5321 3.3 lets the client send the others in a new one), so one reply speaks
   * for exactly one outcome.
   */
  readonly isSync: (rcpt: string) => boolean
  /**
   * `Some`: the message's one recipient is acknowledged synchronously, and the effect delivers it
   * within `timeoutMs`, releases the body, and succeeds with the 250 to send. `None`: commit it to
   * the queue as usual.
   */
  readonly tryNow: (
    message: NewMessage,
    options: { readonly timeoutMs: number }
  ) => Option.Option<Effect.Effect<SmtpReply, SyncDeliveryError>>
  /**
   * The priority delivery gives a message about to be queued (its routes', the host app's), or
   * `undefined` when it says nothing. Optional: without it, delivery has no say.
   */
  readonly priorityOf?: ((envelope: Envelope) => Effect.Effect<number | undefined>) | undefined
}>()("incoming/SyncDelivery") {}
