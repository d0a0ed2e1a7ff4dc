/**
 * The coalescing loop shared by the PostgreSQL queue's claims and settles: requests queue up
 * while a statement is out, and the next statement takes all of them, at most `maxBatch` at a
 * time. When the scope closes, requests still waiting are answered by `abandon` (nobody would
 * take them any more) before the loop is interrupted.
 */
import { Effect, Queue } from "effect"
import type { Scope } from "effect"

export interface Options<J> {
  readonly maxBatch: number
  /** Orders or filters what one take got, before it is cut into batches. */
  readonly prepare?: ((taken: Array<J>) => Array<J>) | undefined
  /** Writes one batch; answers each of its requests, failures included (it must not fail). */
  readonly write: (batch: ReadonlyArray<J>) => Effect.Effect<void>
  /** Answers a request left waiting at close. */
  readonly abandon: (job: J) => void
}

/** Starts the loop in the current scope; returns what a request is offered with. */
export const make = <J>(options: Options<J>): Effect.Effect<(job: J) => void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const jobs = yield* Queue.unbounded<J>()
    const loop = Effect.gen(function*() {
      const taken = [...(yield* Queue.takeAll(jobs))]
      const batches = options.prepare === undefined ? taken : options.prepare(taken)
      for (let i = 0; i < batches.length; i += options.maxBatch) yield* options.write(batches.slice(i, i + options.maxBatch))
    }).pipe(Effect.forever)
    yield* Effect.forkScoped(loop)
    // Added after the fork, so it runs first at close: stragglers are answered, then the loop stops.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const left = yield* Queue.clear(jobs)
        for (const j of left) options.abandon(j)
        yield* Queue.shutdown(jobs)
      })
    )
    return (job) => void Queue.offerUnsafe(jobs, job)
  })
