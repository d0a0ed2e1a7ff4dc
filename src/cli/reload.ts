/**
 * SIGHUP for `incoming serve`: re-read the configuration file and apply it to the running
 * server through `Control.reload`. An invalid file, or one the server cannot apply (a bad
 * certificate), is logged and the running configuration stays. Delivery routes and adapters are
 * built once at start, and so is the trace exporter: a change there is reported as needing a restart.
 */
import { Cause, Effect, Exit, Layer, Queue, Scope } from "effect"
import * as Build from "../config/Build.ts"
import type * as Options from "../config/Options.ts"
import * as Control from "../Control.ts"
import * as Delivery from "./delivery.ts"

export const layer = <E, R>(
  load: Effect.Effect<Options.Runner, E, R>,
  started: Options.Runner
): Layer.Layer<never, never, Control.Control | Delivery.DeliverySwap | R> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const control = yield* Control.Control
    const delivery = yield* Delivery.DeliverySwap
    const layerScope = yield* Effect.scope
    let deliveryNow = JSON.stringify(started.delivery)
    // Header values are Redacted and compare as "<redacted>": a changed API key alone goes unnoticed.
    const tracingAtStart = JSON.stringify(started.tracing)
    // Rules built for a reload (a rate limiter's sweeper) live in a scope of their own, closed
    // when the next reload replaces them; the rules built at start live with the server.
    let generation: Scope.Closeable | undefined
    const once = Effect.gen(function*() {
      yield* Effect.logInfo("SIGHUP: reloading the configuration")
      const runner = yield* load
      const scope = yield* Scope.fork(layerScope)
      const applied = yield* Effect.exit(Effect.flatMap(Build.options(runner).pipe(Scope.provide(scope)), control.reload))
      if (Exit.isFailure(applied)) {
        yield* Scope.close(scope, Exit.void)
        return yield* Effect.failCause(applied.cause)
      }
      const previous = generation
      generation = scope
      if (previous !== undefined) yield* Scope.close(previous, Exit.void)
      // Adapters and routes are rebuilt only when the file changed them (a rebuild closes the
      // old adapters' connections).
      const deliveryNext = JSON.stringify(runner.delivery)
      if (deliveryNext !== deliveryNow) {
        yield* delivery.replace(runner.delivery)
        deliveryNow = deliveryNext
        yield* Effect.logInfo("delivery adapters and routes reloaded")
      }
      if (JSON.stringify(runner.tracing) !== tracingAtStart) {
        yield* Effect.logWarning("tracing settings changed: restart to apply them")
      }
    }).pipe(
      Effect.catchCause((cause) => Effect.logError("reload failed; the running configuration stays", Cause.pretty(cause)))
    )
    // The signal handler only queues the request; one fiber of this layer applies them in turn
    // (a SIGHUP during a reload waits for it), and stopping the server interrupts it.
    const hangups = yield* Queue.unbounded<void>()
    const onHangup = () => {
      Queue.offerUnsafe(hangups, undefined)
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => process.on("SIGHUP", onHangup)),
      () => Effect.sync(() => process.off("SIGHUP", onHangup))
    )
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(Queue.take(hangups), once)))
  }))
