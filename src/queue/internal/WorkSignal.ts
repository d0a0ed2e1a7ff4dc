/**
 * Wakes idle delivery workers when a commit or a retry makes work available, instead of having
 * them poll. Waiting is bounded by a timeout on the Effect clock, so `TestClock` drives it.
 *
 * A notification that finds nobody waiting is kept (one permit) for the next waiter: a worker
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
      if (waiters.size === 0) {
        permit = true
        return
      }
      const all = [...waiters]
      waiters.clear()
      for (const w of all) w()
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
