/**
 * The accept path's fast path: the few places where a general Effect combinator costs more per
 * message than the work it guards, replaced by a narrower one with the same outcome. Measured in
 * docs/benchmark.md ("What changed", issue 20); each function says what it trades.
 *
 * Used on the per-message path only (the session's commit, a delivery attempt). Elsewhere the
 * general combinators are clearer and their cost does not show.
 */
import { Cause, Effect, Exit, Fiber } from "effect"
import { isDecided } from "./decided.ts"

/**
 * `Effect.timeout(self, ms)` with the same outcome — `self`'s exit, or a `Cause.TimeoutError`
 * failure after `ms` with `self` interrupted — at about half the cost per call.
 *
 * `Effect.timeout` races `self` against a sleep: two fibers, the sleep's effects and its timer,
 * and the loser's interruption, for every message. Here `self` runs in one child fiber, started
 * at once; when it completes without suspending (a memory queue's commit, a discard delivery)
 * its exit is used as it is and no timer is armed at all, otherwise one plain timer races it.
 * An effect already decided (an `Exit`, see internal/decided.ts: a discard delivery) is returned
 * as it is, without the child fiber.
 * What it trades: the timer is the Node timer of this process, not the `Clock` service, so a
 * `TestClock` does not move it (tests of these deadlines run on real time).
 */
export const timeout = <A, E, R>(self: Effect.Effect<A, E, R>, ms: number): Effect.Effect<A, E | Cause.TimeoutError, R> =>
  isDecided(self) ? self : Effect.flatMap(Effect.forkChild(self, { startImmediately: true }), (fiber) => {
    const done = fiber.pollUnsafe()
    if (done !== undefined) return done
    return Effect.callback<A, E | Cause.TimeoutError>((resume) => {
      let settled = false
      const timer = setTimeout(() => {
        if (settled) return
        settled = true
        stop()
        resume(Effect.andThen(Fiber.interrupt(fiber), Exit.fail(new Cause.TimeoutError(`Operation timed out after ${ms} millis`))))
      }, ms)
      const stop = fiber.addObserver((exit) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resume(exit)
      })
      // Interrupted while waiting (the connection closed, a drain): so is `self`.
      return Effect.suspend(() => {
        settled = true
        clearTimeout(timer)
        stop()
        return Fiber.interrupt(fiber)
      })
    })
  })
