/**
 * Wakes idle delivery workers when a commit or a retry makes work available, instead of having
 * them poll. Waiting is bounded by a timeout on the Effect clock, so `TestClock` drives it.
 *
 * Each notification wakes one waiter. One that finds nobody waiting is kept (one permit) for the next waiter: a worker
 * that found the queue empty and is about to wait must not sleep through a commit that landed
 * in between. The cost is at most one spurious wake-up.
 *
 * A worker waits once per delivered message, so the wait is on the hot path: under the live
 * clock its bound is one Node timer inside the wait's own callback, not `Effect.timeoutOption`,
 * which races the wait against a sleeping fiber (measured: 3.9 vs 0.8 µs per wait). Under any
 * other clock (`TestClock`) it stays `timeoutOption`, so the clock drives it.
 */
import { Clock, Context, Effect } from "effect"

/** The clock a fiber sees when none is provided: real time, whose sleeps are Node timers. */
const liveClock = Context.get(Context.empty(), Clock.Clock)

export interface WorkSignal {
  readonly notify: () => void
  readonly await: (timeoutMs: number) => Effect.Effect<void>
}

export const make = (): WorkSignal => {
  const waiters = new Set<() => void>()
  let permit = false
  return {
    notify: () => {
      // One notification, one worker: waking every idle worker per message would have all but one
      // find nothing and go back to sleep. A busy worker claims again before it waits, so work
      // that arrives while nobody is waiting is not missed either.
      const first = waiters.values().next()
      if (first.done === true) {
        permit = true
        return
      }
      waiters.delete(first.value)
      first.value()
    },
    await: (timeoutMs) =>
      Effect.withFiber((fiber) => {
        const live = fiber.getRef(Clock.Clock) === liveClock
        const wait = Effect.callback<void>((resume) => {
          if (permit) {
            permit = false
            resume(Effect.void)
            return
          }
          let timer: ReturnType<typeof setTimeout> | undefined
          const w = () => {
            if (timer !== undefined) clearTimeout(timer)
            resume(Effect.void)
          }
          waiters.add(w)
          if (live) {
            timer = setTimeout(() => {
              waiters.delete(w)
              resume(Effect.void)
            }, Math.min(Math.max(0, timeoutMs), 2 ** 31 - 1))
          }
          return Effect.sync(() => {
            if (timer !== undefined) clearTimeout(timer)
            waiters.delete(w)
          })
        })
        return live ? wait : wait.pipe(Effect.timeoutOption(Math.max(0, timeoutMs)), Effect.asVoid)
      })
  }
}
