/**
 * Sync-ack routes: when the Router marks a recipient's route `acknowledge: "sync"`, its message
 * is delivered before the reply to DATA and the adapter's outcome is the reply (ok → 250,
 * retry → 4xx with the adapter's reason, reject → 5xx with it); nothing is queued. This is the
 * `SyncDelivery` a session consults, built from the route table and the adapter the host app
 * provides; without a route table every recipient is durable.
 */
import { Cause, Effect, Exit, Layer, Option } from "effect"
import * as BodyStream from "../queue/internal/bodyStream.ts"
import type { NewMessage } from "../queue/MailQueue.ts"
import * as SmtpReply from "../protocol/SmtpReply.ts"
import { SyncDelivery, SyncDeliveryError } from "../smtp/SyncDelivery.ts"
import * as Telemetry from "../telemetry/Telemetry.ts"
import { bodyStream, DeliveryAdapter } from "./DeliveryAdapter.ts"
import * as Router from "./Router.ts"

export const make = Effect.gen(function*() {
  const routes = Option.getOrUndefined(yield* Effect.serviceOption(Router.Routes))
  const adapter = yield* DeliveryAdapter
  const telemetry = yield* Telemetry.Telemetry

  const isSync = (rcpt: string): boolean => routes !== undefined && Router.acknowledgementFor(routes, rcpt) === "sync"

  const deliverNow = (message: NewMessage, timeoutMs: number) =>
    Effect.gen(function*() {
      const rcpt = message.envelope.rcptTo[0]!
      const { body, trace } = message
      const exit = yield* adapter.deliver({
        id: message.id,
        envelope: message.envelope,
        receivedAt: message.receivedAt,
        recipients: [{ rcpt, attempt: 1 }],
        size: Buffer.byteLength(trace) + body.size,
        body: bodyStream(() => (body._tag === "InMemory" ? BodyStream.fromParts(trace, body.chunks) : BodyStream.fromFile(trace, body.path)))
      }).pipe(Effect.timeout(timeoutMs), Effect.exit, Effect.ensuring(body.release))
      const outcome = Exit.isSuccess(exit) ? exit.value.find((o) => o.rcpt === rcpt) : undefined
      const publish = (result: "delivered" | "retry" | "dead", reason: string) =>
        telemetry.publish({ _tag: "DeliveryResult", id: message.id, rcpt, outcome: result, reason, adapter: adapter.name })
      if (outcome?._tag === "Ok") {
        yield* publish("delivered", outcome.reply ?? "delivered")
        return SmtpReply.deliveredNow(message.id)
      }
      if (outcome?._tag === "Reject") {
        yield* publish("dead", outcome.reason)
        return yield* new SyncDeliveryError({ reason: "Rejected", reply: SmtpReply.fromAdapterReason(outcome.reason, "permanent") })
      }
      // The adapter failed as a whole: its DeliveryError knows the reply (Rejected → 5xx).
      const failure = Exit.isFailure(exit) ? exit.cause.reasons.find(Cause.isFailReason)?.error : undefined
      if (failure?._tag === "DeliveryError") {
        yield* publish(failure.retryable ? "retry" : "dead", failure.message)
        return yield* new SyncDeliveryError({ reason: failure.retryable ? "Deferred" : "Rejected", reply: failure.reply })
      }
      const reason = outcome?._tag === "Retry"
        ? outcome.reason
        : failure?._tag === "TimeoutError"
        ? "delivery timed out"
        : Exit.isFailure(exit)
        ? "delivery failed"
        : "adapter gave no outcome"
      yield* publish("retry", reason)
      return yield* new SyncDeliveryError({ reason: "Deferred", reply: SmtpReply.fromAdapterReason(reason, "transient") })
    })

  return SyncDelivery.of({
    isSync,
    priorityOf: routes === undefined ? undefined : (envelope) => Router.priorityFor(routes, envelope),
    tryNow: (message, { timeoutMs }) =>
      message.envelope.rcptTo.length === 1 && isSync(message.envelope.rcptTo[0]!)
        ? Option.some(deliverNow(message, timeoutMs))
        : Option.none()
  })
})

/** Sync acknowledgement from the host app's adapter and, when it is a Router, its route table. */
export const layer: Layer.Layer<SyncDelivery, never, DeliveryAdapter | Telemetry.Telemetry> = Layer.effect(SyncDelivery, make)
