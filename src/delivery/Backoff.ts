/**
 * Retry timing: exponential from `baseMs`, capped at `maxMs`, spread by ±`jitter` so a burst of
 * failures does not come back as a burst. Randomness comes from Effect's `Random` service, so
 * tests can pin it.
 */
import { Effect, Random } from "effect"

export interface BackoffOptions {
  readonly baseMs: number
  readonly maxMs: number
  /** Fraction in [0, 1): 0.2 spreads each delay over ±20 %. */
  readonly jitter: number
}

export const defaults: BackoffOptions = { baseMs: 60_000, maxMs: 4 * 3600_000, jitter: 0.2 }

/** The nominal delay after the `attempt`-th failed attempt (1-based), before jitter. */
export const nominal = (options: BackoffOptions, attempt: number): number =>
  Math.min(options.maxMs, options.baseMs * 2 ** Math.max(0, attempt - 1))

export const delay = (options: BackoffOptions, attempt: number): Effect.Effect<number> =>
  options.jitter <= 0
    ? Effect.succeed(nominal(options, attempt))
    : Effect.map(Random.next, (r) => Math.round(nominal(options, attempt) * (1 + options.jitter * (2 * r - 1))))
