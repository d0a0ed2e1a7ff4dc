/**
 * A bounded sliding-window counter keyed by string (client IP, sender, recipient domain, AUTH
 * failures per IP). Shared by the RateLimiter rule and the AUTH failure limit.
 *
 * Each key keeps the timestamps of its counted events inside the window (at most `limit` of
 * them: an event over the limit is refused and not recorded, so a client hammering us cannot
 * grow memory), so the count falls as old events leave the window — a true sliding window, not
 * a fixed bucket. Keys live in a Map in least-recently-used order; at `maxEntries` the least
 * recently used key is evicted. Eviction forgets that key's history, so the limiter FAILS OPEN
 * for the evicted key (it starts a fresh window): under memory pressure we would rather let a
 * little extra mail through than defer legitimate senders because of someone else's flood.
 * Time is passed in (from Effect's Clock), so TestClock drives it.
 */
export interface SlidingWindow {
  /** Records an event for `key` at `now` if under the limit; returns whether it was allowed. */
  readonly hit: (key: string, now: number) => boolean
  /** Events counted for `key` within the window ending at `now`. */
  readonly count: (key: string, now: number) => number
  /** Records an event regardless of the limit (failure counting). Returns the count after it. */
  readonly record: (key: string, now: number) => number
  /** Drops keys whose newest event has left the window; returns how many were removed. */
  readonly sweep: (now: number) => number
  readonly size: () => number
  readonly delete: (key: string) => void
}

export interface SlidingWindowOptions {
  readonly limit: number
  readonly windowMs: number
  readonly maxEntries: number
}

export const make = (options: SlidingWindowOptions): SlidingWindow => {
  const entries = new Map<string, Array<number>>()

  const live = (key: string, now: number): Array<number> | undefined => {
    const times = entries.get(key)
    if (times === undefined) return undefined
    const cutoff = now - options.windowMs
    let drop = 0
    while (drop < times.length && times[drop]! <= cutoff) drop++
    if (drop > 0) times.splice(0, drop)
    return times
  }

  // Re-inserting moves the key to the end of the Map's order: the first key is the least recently used.
  const touch = (key: string, times: Array<number>) => {
    entries.delete(key)
    if (entries.size >= options.maxEntries) {
      const oldest = entries.keys().next()
      if (oldest.done !== true) entries.delete(oldest.value)
    }
    entries.set(key, times)
  }

  const push = (key: string, now: number, times: Array<number>) => {
    times.push(now)
    // Bound per-key memory even for `record`, which ignores the limit.
    if (times.length > Math.max(options.limit, 1) * 2) times.splice(0, times.length - Math.max(options.limit, 1) * 2)
    touch(key, times)
  }

  return {
    hit: (key, now) => {
      const times = live(key, now) ?? []
      if (times.length >= options.limit) {
        touch(key, times)
        return false
      }
      push(key, now, times)
      return true
    },
    record: (key, now) => {
      const times = live(key, now) ?? []
      push(key, now, times)
      return times.length
    },
    count: (key, now) => live(key, now)?.length ?? 0,
    sweep: (now) => {
      let removed = 0
      for (const key of [...entries.keys()]) {
        const times = live(key, now)
        if (times !== undefined && times.length === 0) {
          entries.delete(key)
          removed++
        }
      }
      return removed
    },
    size: () => entries.size,
    delete: (key) => void entries.delete(key)
  }
}
