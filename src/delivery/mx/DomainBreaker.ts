/**
 * A circuit breaker per destination domain: after `failures` attempts in a row in which no MX
 * of the domain would take a connection, the domain is paused for `pauseMs` — its recipients
 * wait for the pause to end instead of every queued message hammering MXes that are down or
 * refusing us. One successful connection closes the breaker again.
 */
import { Clock, Effect } from "effect"

export interface BreakerOptions {
  readonly failures: number
  readonly pauseMs: number
}

export interface DomainBreaker {
  /** Epoch ms until which `domain` is paused, if it is paused now. */
  readonly pausedUntil: (domain: string) => Effect.Effect<number | undefined>
  /** No MX took a connection; returns the end of the pause this failure started, if it started one. */
  readonly failed: (domain: string) => Effect.Effect<number | undefined>
  readonly succeeded: (domain: string) => void
  /** Paused domains and until when, for operators. */
  readonly paused: () => ReadonlyMap<string, number>
}

export const make = (options: BreakerOptions): DomainBreaker => {
  const state = new Map<string, { failures: number; until: number }>()
  const pausedUntil = (domain: string) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      const s = state.get(domain)
      return s !== undefined && s.until > now ? s.until : undefined
    })
  const failed = (domain: string) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      const s = state.get(domain) ?? { failures: 0, until: 0 }
      s.failures++
      state.set(domain, s)
      if (s.failures < options.failures || options.pauseMs <= 0) return undefined
      // Paused; the count starts again so that one more failure after the pause pauses again.
      s.failures = options.failures - 1
      s.until = now + options.pauseMs
      return s.until
    })
  return {
    pausedUntil,
    failed,
    succeeded: (domain) => void state.delete(domain),
    paused: () => new Map([...state].filter(([, s]) => s.until > 0).map(([d, s]) => [d, s.until]))
  }
}
