/**
 * A TTL cache with a size cap in front of any upstream resolver, with its metrics.
 *
 * Answers are kept for their TTL (clamped to `maxTtlMs`); when the upstream cannot say the TTL
 * (node:dns reports it for A and AAAA only) for `unknownTtlMs`. `NotFound` and `NoData` are
 * answers too and are kept for `negativeTtlMs`; timeouts and server failures are never kept, so
 * the next caller asks again. Queries for the same name and type that arrive while one is in
 * flight wait for it instead of asking again (SPF, DKIM and DMARC of one message, or ten
 * sessions from one sender, ask the same questions at once). The oldest entry goes first when
 * the cap is reached (insertion order, refreshed on a hit: an LRU).
 *
 * Time is the Effect `Clock`, so expiry is testable with `TestClock`.
 */
import { Clock, Deferred, Effect, Exit, Metric } from "effect"
import { type Answers, Dns, type DnsError, normalizeName, type RecordType } from "./Dns.ts"

/** What an upstream answers: the records and, when it knows it, their TTL in seconds. */
export interface Answer<T extends RecordType> {
  readonly records: Answers[T]
  readonly ttl: number | undefined
}

export type Upstream = <T extends RecordType>(name: string, type: T) => Effect.Effect<Answer<T>, DnsError>

export interface CacheOptions {
  /** Entries kept at most; the least recently used goes first. 0 turns caching off. */
  readonly maxEntries: number
  /** Upper bound of any answer's stay. */
  readonly maxTtlMs: number
  /** Stay of an answer whose TTL the upstream does not report. */
  readonly unknownTtlMs: number
  /** Stay of `NotFound` / `NoData`. */
  readonly negativeTtlMs: number
}

export const defaultCacheOptions: CacheOptions = {
  maxEntries: 10_000,
  maxTtlMs: 3_600_000,
  unknownTtlMs: 300_000,
  negativeTtlMs: 60_000
}

export const metrics = {
  queries: Metric.counter("incoming_dns_queries_total", {
    description: "DNS queries sent upstream (cache misses) by record type and result",
    incremental: true
  }),
  cacheHits: Metric.counter("incoming_dns_cache_hits_total", {
    description: "DNS questions answered from the cache (or joined to a query in flight) by record type",
    incremental: true
  }),
  latency: Metric.histogram("incoming_dns_query_duration_seconds", {
    description: "time of DNS queries sent upstream, by record type",
    boundaries: Metric.exponentialBoundaries({ start: 0.0005, factor: 4, count: 8 })
  })
}

// Built once per label set: withAttributes on every query would rebuild the metric key.
const labelled = new Map<string, Metric.Metric<number, unknown>>()
const metricFor = (metric: Metric.Metric<number, unknown>, name: string, attributes: Record<string, string>) => {
  const key = `${name}\u0000${Object.values(attributes).join("\u0000")}`
  let m = labelled.get(key)
  if (m === undefined) {
    m = metric.pipe(Metric.withAttributes(attributes))
    labelled.set(key, m)
  }
  return m
}

const resultLabel = (exit: Exit.Exit<unknown, DnsError>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (error === undefined || error._tag !== "Fail") return "interrupted"
  switch (error.error.reason._tag) {
    case "NotFound":
      return "not_found"
    case "NoData":
      return "no_data"
    case "Timeout":
      return "timeout"
    default:
      return "server_failure"
  }
}

interface Entry {
  readonly expiresAt: number
  readonly exit: Exit.Exit<unknown, DnsError>
}

/** A `Dns` answering from the cache, asking `upstream` on a miss. */
export const make = (upstream: Upstream, options: Partial<CacheOptions> = {}): Dns["Service"] => {
  const opts = { ...defaultCacheOptions, ...options }
  const entries = new Map<string, Entry>()
  const inFlight = new Map<string, Deferred.Deferred<unknown, DnsError>>()

  const stayOf = (exit: Exit.Exit<Answer<RecordType>, DnsError>): number | undefined => {
    if (Exit.isSuccess(exit)) {
      const ttl = exit.value.ttl
      return Math.min(opts.maxTtlMs, ttl === undefined ? opts.unknownTtlMs : ttl * 1000)
    }
    const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
    return failure?._tag === "Fail" && !failure.error.retryable ? opts.negativeTtlMs : undefined
  }

  const store = (key: string, exit: Exit.Exit<Answer<RecordType>, DnsError>, now: number) => {
    const stay = stayOf(exit)
    if (stay === undefined || stay <= 0 || opts.maxEntries <= 0) return
    if (entries.size >= opts.maxEntries) {
      const oldest = entries.keys().next()
      if (oldest.done !== true) entries.delete(oldest.value)
    }
    entries.set(key, { expiresAt: now + stay, exit: Exit.map(exit, (a) => a.records) })
  }

  const ask = <T extends RecordType>(key: string, name: string, type: T, now: number): Effect.Effect<Answers[T], DnsError> => {
    const deferred = Deferred.makeUnsafe<unknown, DnsError>()
    inFlight.set(key, deferred)
    return Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const exit = yield* Effect.exit(upstream(name, type))
      const ended = yield* Clock.currentTimeMillis
      yield* Metric.update(metricFor(metrics.queries, "q", { type, result: resultLabel(exit) }), 1)
      yield* Metric.update(metricFor(metrics.latency, "l", { type }), (ended - started) / 1000)
      inFlight.delete(key)
      store(key, exit as Exit.Exit<Answer<RecordType>, DnsError>, now)
      const records = Exit.map(exit, (a) => a.records)
      yield* Deferred.done(deferred, records)
      return yield* records
    }).pipe(
      Effect.onInterrupt(() =>
        Effect.suspend(() => {
          inFlight.delete(key)
          return Deferred.interrupt(deferred)
        })
      )
    )
  }

  const resolve = <T extends RecordType>(name: string, type: T): Effect.Effect<Answers[T], DnsError> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const key = `${type} ${normalizeName(name)}`
      const hit = entries.get(key)
      if (hit !== undefined) {
        entries.delete(key)
        if (hit.expiresAt > now) {
          entries.set(key, hit)
          return Effect.andThen(Metric.update(metricFor(metrics.cacheHits, "h", { type }), 1), hit.exit as Exit.Exit<Answers[T], DnsError>)
        }
      }
      const pending = inFlight.get(key)
      if (pending !== undefined) {
        return Effect.andThen(
          Metric.update(metricFor(metrics.cacheHits, "h", { type }), 1),
          Deferred.await(pending as Deferred.Deferred<Answers[T], DnsError>)
        )
      }
      return ask(key, name, type, now)
    })

  return Dns.of({ resolve })
}
