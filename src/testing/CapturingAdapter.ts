/**
 * A delivery adapter that keeps every delivered message in memory, so tests can wait for
 * deliveries and look at exactly what a real adapter would have received.
 */
import { Context, Effect, Layer, Stream } from "effect"
import { DeliveryAdapter } from "../delivery/DeliveryAdapter.ts"
import * as DA from "../delivery/DeliveryAdapter.ts"
import type { Envelope } from "../protocol/Envelope.ts"

export interface CapturedMessage {
  readonly id: string
  readonly envelope: Envelope
  readonly recipients: ReadonlyArray<string>
  readonly attempt: number
  readonly raw: Buffer
  readonly text: string
}

export type Decide = (delivery: DA.Delivery) => Effect.Effect<ReadonlyArray<DA.RecipientOutcome> | void, DA.DeliveryError>

export class Captured extends Context.Service<Captured, {
  readonly messages: Effect.Effect<ReadonlyArray<CapturedMessage>>
  /** Waits until at least `n` messages were delivered (successfully) and returns them. */
  readonly awaitDelivered: (n: number) => Effect.Effect<ReadonlyArray<CapturedMessage>>
  /** Replaces the decision for later deliveries (default: accept everyone). */
  readonly setDecision: (decide: Decide) => Effect.Effect<void>
  /** Every attempt, successful or not. */
  readonly attempts: Effect.Effect<number>
}>()("incoming/testing/Captured") {}

export const make = Effect.sync(() => {
  const messages: Array<CapturedMessage> = []
  const waiters: Array<{ n: number; resume: () => void }> = []
  let decide: Decide = () => Effect.void
  let attempts = 0

  const wake = () => {
    for (const w of [...waiters]) {
      if (messages.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resume()
      }
    }
  }

  const adapter = DeliveryAdapter.of({
    name: "capture",
    // It stands for wherever mail goes, relayed mail included: a test of relaying sees it here.
    deliversOffSite: () => true,
    deliver: (delivery) =>
      Effect.gen(function*() {
        attempts++
        const outcome = (yield* decide(delivery)) ?? DA.all(delivery, (rcpt) => DA.ok(rcpt, "captured"))
        const okRcpts = outcome.filter((o) => o._tag === "Ok").map((o) => o.rcpt)
        if (okRcpts.length > 0) {
          const raw = Buffer.from(
            yield* Stream.mkUint8Array(delivery.body).pipe(
              Effect.mapError((cause) => new DA.DeliveryError({ reason: { _tag: "Failed", detail: `read failed: ${cause.message}` }, cause }))
            )
          )
          messages.push({
            id: delivery.id,
            envelope: delivery.envelope,
            recipients: okRcpts,
            attempt: delivery.recipients[0]?.attempt ?? 1,
            raw,
            text: raw.toString("utf8")
          })
          wake()
        }
        return outcome
      })
  })

  const captured = Captured.of({
    messages: Effect.sync(() => [...messages]),
    awaitDelivered: (n) =>
      Effect.callback<ReadonlyArray<CapturedMessage>>((resume) => {
        if (messages.length >= n) return resume(Effect.succeed([...messages]))
        const w = { n, resume: () => resume(Effect.succeed([...messages])) }
        waiters.push(w)
        return Effect.sync(() => {
          const i = waiters.indexOf(w)
          if (i >= 0) waiters.splice(i, 1)
        })
      }),
    setDecision: (d) => Effect.sync(() => {
      decide = d
    }),
    attempts: Effect.sync(() => attempts)
  })
  return { adapter, captured }
})

export const layer: Layer.Layer<DeliveryAdapter | Captured> = Layer.effectContext(
  Effect.map(make, ({ adapter, captured }) => Context.make(DeliveryAdapter, adapter).pipe(Context.add(Captured, captured)))
)
