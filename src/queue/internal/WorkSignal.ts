/**
 * Wakes idle delivery workers when a commit or a retry makes work available, instead of having
 * them poll. Waiting is bounded by a timeout on the Effect clock, so `TestClock` drives it.
 *
 * Each notification wakes one waiter. One that finds nobody waiting is kept (one permit) for the next waiter: a worker
 * that found the queue empty and is about to wait must not sleep through a commit that landed
 * in between. The cost is at most one spurious wake-up.
 */
import { Effect } from "effect"

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
      Effect.callback<void>((resume) => {
        if (permit) {
          permit = false
          resume(Effect.void)
          return
        }
        const w = () => resume(Effect.void)
        waiters.add(w)
        return Effect.sync(() => {
          waiters.delete(w)
        })
      }).pipe(Effect.timeoutOption(Math.max(0, timeoutMs)), Effect.asVoid)
  }
}
