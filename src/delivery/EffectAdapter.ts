/**
 * Delivery to the host app: an Effect function receives each message. Returning nothing means
 * every recipient is done; returning outcomes decides per recipient. Failures retry, except a
 * `DeliveryError` whose reason is `Rejected`.
 *
 * The handler reads `delivery.body` as a `Stream`; a failure to read it (`MailQueueError`) may
 * be left in its error channel and becomes a retried `DeliveryError`.
 */
import { Effect, Layer } from "effect"
import type { MailQueueError } from "../queue/MailQueueError.ts"
import { type Delivery, DeliveryAdapter, DeliveryError, type RecipientOutcome } from "./DeliveryAdapter.ts"
import * as DA from "./DeliveryAdapter.ts"

export type Handler<R> = (delivery: Delivery) => Effect.Effect<ReadonlyArray<RecipientOutcome> | void, DeliveryError | MailQueueError, R>

export interface EffectAdapterOptions {
  /**
   * The handler sends mail on to other hosts (it relays): clients allowed to relay may then give
   * recipients outside our domains. Default false: such recipients are refused at RCPT.
   */
  readonly deliversOffSite?: boolean | ((rcpt: string) => boolean)
}

export const make = <R>(name: string, handler: Handler<R>, options: EffectAdapterOptions = {}): Effect.Effect<DeliveryAdapter["Service"], never, R> =>
  Effect.map(Effect.context<R>(), (context) =>
    DeliveryAdapter.of({
      name,
      ...(options.deliversOffSite === undefined
        ? {}
        : { deliversOffSite: typeof options.deliversOffSite === "function" ? options.deliversOffSite : () => options.deliversOffSite === true }),
      deliver: (delivery) =>
        handler(delivery).pipe(
          Effect.provideContext(context),
          Effect.map((out) => out ?? DA.all(delivery, (rcpt) => DA.ok(rcpt))),
          Effect.catchTag("MailQueueError", (e) =>
            Effect.fail(new DeliveryError({ reason: { _tag: "Failed", detail: `reading message ${delivery.id} failed: ${e.message}` }, cause: e }))),
          Effect.catchDefect((defect) =>
            Effect.fail(new DeliveryError({ reason: { _tag: "Failed", detail: `handler defect: ${String(defect)}` }, cause: defect }))
          )
        )
    }))

export const layer = <R>(name: string, handler: Handler<R>, options: EffectAdapterOptions = {}): Layer.Layer<DeliveryAdapter, never, R> =>
  Layer.effect(DeliveryAdapter, make(name, handler, options))
