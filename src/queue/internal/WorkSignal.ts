/**
 * Wakes idle delivery workers when a commit or a retry makes work available, instead of having
 * them poll. Waiting is bounded by a timeout on the Effect clock, so `TestClock` drives it.
 */
import { Effect } from "effect"

export interface WorkSignal {
  readonly notify: () => void
  readonly await: (timeoutMs: number) => Effect.Effect<void>
}

export const make = (): WorkSignal => {
  const waiters = new Set<() => void>()
  return {
    notify: () => {
      if (waiters.size === 0) return
      const all = [...waiters]
      waiters.clear()
      for (const w of all) w()
    },
    await: (timeoutMs) =>
      Effect.callback<void>((resume) => {
        const w = () => resume(Effect.void)
        waiters.add(w)
        return Effect.sync(() => {
          waiters.delete(w)
        })
      }).pipe(Effect.timeoutOption(Math.max(0, timeoutMs)), Effect.asVoid)
  }
}
