/**
 * A queue backend as one value: the hot path (`MailQueue`) and the operator's side
 * (`QueueAdmin`) built over the same store by the backend's `make`, and the layer that provides
 * both. A new backend writes `make` returning a `QueueBackend` and `layer = (o) => QueueBackend.layer(make(o))`.
 */
import { Context, Effect, Layer, type Scope } from "effect"
import { MailQueue } from "./MailQueue.ts"
import { QueueAdmin } from "./QueueAdmin.ts"

export interface QueueBackend {
  readonly queue: MailQueue["Service"]
  readonly admin: QueueAdmin["Service"]
}

/** The two services of a backend, for `Layer.succeedContext` or `Effect.provide`. */
export const context = (backend: QueueBackend): Context.Context<MailQueue | QueueAdmin> =>
  Context.make(MailQueue, backend.queue).pipe(Context.add(QueueAdmin, backend.admin))

/** Both contracts from one `make`: they share the store, so they are built once, in one scope. */
export const layer = <E, R>(make: Effect.Effect<QueueBackend, E, R>): Layer.Layer<MailQueue | QueueAdmin, E, Exclude<R, Scope.Scope>> =>
  Layer.effectContext(Effect.map(make, context))
