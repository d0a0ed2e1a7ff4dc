/**
 * A new message body written piece by piece into the spool — what a DATA-stage rule that
 * replaces the body (a milter's SMFIR_REPLBODY, sent in many packets) writes to, so that a
 * replacement of any size costs what receiving DATA costs: memory up to the spool's threshold
 * and budget, a spool file beyond, and the size cap counted as bytes arrive.
 *
 * It is `Spool.receive` fed from a pipe: the receive runs as a fiber in the caller's scope and
 * `write` waits while the spool catches up (a spill to disk pauses it). A failure of the receive
 * (over the cap, a full disk) does not stop the writes — the spool keeps draining, so the writer
 * can go on reading its own source to the end — and is what `end` fails with.
 */
import { PassThrough } from "node:stream"
import { Effect, Fiber, type Scope } from "effect"
import type { ReceiveOptions, Spool } from "./Spool.ts"
import type { SpooledBody } from "./SpooledBody.ts"
import type { SpoolError } from "./SpoolError.ts"

export interface BodyWriter {
  /** Appends bytes; completes once the spool can take more. */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void>
  /** No more bytes: the spooled body, or why it could not be kept. */
  readonly end: Effect.Effect<SpooledBody, SpoolError>
}

/** Starts a body in `spool`; its receive fiber belongs to `scope` (closing it releases what was spooled, if not ended). */
export const make = (spool: Spool["Service"], options: ReceiveOptions, scope: Scope.Scope): Effect.Effect<BodyWriter> =>
  Effect.gen(function*() {
    const pipe = new PassThrough()
    const receiving = yield* Effect.forkIn(spool.receive(pipe, options), scope, { startImmediately: true })
    const write = (chunk: Uint8Array) =>
      Effect.callback<void>((resume) => {
        if (chunk.byteLength === 0 || pipe.write(chunk)) return resume(Effect.void)
        const drained = () => resume(Effect.void)
        pipe.once("drain", drained)
        return Effect.sync(() => pipe.off("drain", drained))
      })
    const end = Effect.suspend(() => {
      pipe.end()
      return Fiber.join(receiving)
    })
    return { write, end }
  })
