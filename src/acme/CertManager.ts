/**
 * The managed certificates of this server: issued before the listeners start when one is
 * missing, renewed in the background, and swapped into the running listeners.
 *
 * - Start (`make`, below the listeners): every name with a usable certificate on disk is ready
 *   at once; a name without one is issued now, retried with backoff until it is, so a listener
 *   never starts on a certificate that is not there. A certificate on disk is used as it is,
 *   even expired: the renewal loop replaces it, and the server is up meanwhile.
 * - Renewal (`attach`, above the listeners): one supervised fiber wakes when a certificate is
 *   due (`renew_before`, default a third of its lifetime before expiry) or a retry is, issues,
 *   stores, and has the listeners re-read their certificate files (`Listeners.reloadCertificates`):
 *   open connections keep the context they negotiated, new handshakes get the new one.
 * - Failures (CA down or refusing, validation failing, the port taken) never reach the
 *   listeners: the certificate in use stays, the failure is logged and counted, and the name is
 *   tried again after 5 min, then doubling up to 6 h (Let's Encrypt allows 5 failed validations
 *   per name per hour). Once less than half of the renewal window is left the log says so
 *   at warning level on every failure.
 *
 * Metrics: `incoming_certificate_expiry_seconds{domain}` (the expiry, Unix seconds) and
 * `incoming_certificate_renewals_total{domain,outcome}`.
 */
import { Clock, Context, Duration, Effect, Layer, Metric, Queue, type Scope, Semaphore } from "effect"
import { AcmeError, detailOf } from "./AcmeError.ts"
import { type AcmeOptions, defaults, directoryUrl, renewAt } from "./AcmeOptions.ts"
import * as CertStore from "./CertStore.ts"
import * as Issuer from "./Issuer.ts"
import { Listeners } from "../smtp/Listener.ts"

export interface CertStatus {
  readonly domain: string
  /** What is on disk and served: `valid` (possibly past `renewAt`), `expired`, or `missing`. */
  readonly state: "valid" | "expired" | "missing"
  readonly notBefore?: Date | undefined
  readonly notAfter?: Date | undefined
  readonly renewAt?: Date | undefined
  readonly issuer?: string | undefined
  /** The failures since the last success, and the last one's message. */
  readonly failures: number
  readonly lastError?: string | undefined
  readonly nextAttemptAt?: Date | undefined
}

export class CertManager extends Context.Service<CertManager, {
  readonly domains: ReadonlyArray<string>
  readonly status: Effect.Effect<ReadonlyArray<CertStatus>>
  /**
   * Issues a new certificate for `domain` (every managed name when undefined) now, due or not,
   * and swaps it into the listeners. Fails, changing nothing, when the CA does.
   */
  readonly renew: (domain?: string) => Effect.Effect<void, AcmeError>
  /** Wiring done by `attach`: how a new certificate reaches the listeners, and the renewal loop. */
  readonly start: (install: Effect.Effect<void, unknown>) => Effect.Effect<void, never, Scope.Scope>
}>()("incoming/CertManager") {}

/** The manager's metrics (labelled per name at update: renewals are rare, this is no hot path). */
export const metrics = {
  expiry: Metric.gauge("incoming_certificate_expiry_seconds", { description: "expiry of the managed certificate, Unix seconds" }),
  renewals: Metric.counter("incoming_certificate_renewals_total", {
    description: "ACME issuances by name and outcome (issued, ca_error, challenge_failed, bind_failed, storage_failed)",
    incremental: true
  })
}

const expiryOf = (domain: string) => metrics.expiry.pipe(Metric.withAttributes({ domain }))
const renewalsOf = (domain: string, outcome: string) => metrics.renewals.pipe(Metric.withAttributes({ domain, outcome }))

interface State {
  stored: CertStore.Stored | undefined
  failures: number
  lastError: string | undefined
  nextAttemptAt: number | undefined
}

/** The wait after the `failures`-th failure in a row. */
export const retryDelay = (options: Pick<AcmeOptions, "retryBaseMs" | "retryMaxMs">, failures: number): number =>
  Math.min(options.retryMaxMs, options.retryBaseMs * 2 ** Math.min(30, Math.max(0, failures - 1)))

export const make = Effect.fnUntraced(function*(options: AcmeOptions, dataDir: string) {
  const store = CertStore.paths(dataDir, directoryUrl(options.directory))
  const states = new Map<string, State>()
  // One order at a time: the responder's port is shared, and the CA limits concurrent orders.
  const lock = yield* Semaphore.make(1)
  let install: Effect.Effect<void, unknown> = Effect.void
  // Wakes the renewal loop before its time: a forced renewal that failed is retried on the loop's schedule.
  const wake = yield* Queue.sliding<void>(1)

  const load = (domain: string) =>
    Effect.gen(function*() {
      const read = CertStore.read(store, domain)
      if (read._tag === "Unusable") yield* Effect.logWarning(`stored certificate for ${domain} is unusable, issuing a new one: ${read.problem}`)
      const state: State = { stored: read._tag === "Found" ? read.stored : undefined, failures: 0, lastError: undefined, nextAttemptAt: undefined }
      states.set(domain, state)
      if (state.stored !== undefined) yield* Metric.update(expiryOf(domain), Math.floor(state.stored.notAfter / 1000))
      return state
    })

  /**
   * Issues and stores a certificate for `domain`, recording the outcome; the listeners are not
   * told. Returns the failure, if any (already logged and counted).
   */
  const issueOne = (domain: string) =>
    lock.withPermits(1)(Effect.gen(function*() {
      const state = states.get(domain)!
      const started = yield* Clock.currentTimeMillis
      const outcome = yield* Issuer.issue(options, store, domain).pipe(
        Effect.flatMap((issued) =>
          Effect.try({
            try: () => CertStore.writePair(store, domain, issued),
            catch: (cause) => new AcmeError({ domain, reason: { _tag: "Storage", detail: detailOf(cause) }, cause })
          })
        ),
        Effect.result
      )
      const now = yield* Clock.currentTimeMillis
      if (outcome._tag === "Failure") {
        const error = outcome.failure
        state.failures += 1
        state.lastError = error.message
        state.nextAttemptAt = now + retryDelay(options, state.failures)
        yield* Metric.update(renewalsOf(domain, error.outcome), 1)
        const stored = state.stored
        const late = stored === undefined || now > stored.notAfter - (stored.notAfter - renewAt(options, stored.notBefore, stored.notAfter)) / 2
        const next = `next attempt in ${Duration.format(Duration.millis(state.nextAttemptAt - now))}`
        const kept = stored === undefined ? "no certificate yet" : `keeping the current one (expires ${new Date(stored.notAfter).toISOString()})`
        const line = `${state.lastError}; ${kept}; ${next}`
        yield* late ? Effect.logWarning(line) : Effect.logInfo(line)
        return error
      }
      const read = CertStore.read(store, domain)
      state.stored = read._tag === "Found" ? read.stored : undefined
      state.failures = 0
      state.lastError = undefined
      state.nextAttemptAt = undefined
      yield* Metric.update(renewalsOf(domain, "issued"), 1)
      if (state.stored !== undefined) yield* Metric.update(expiryOf(domain), Math.floor(state.stored.notAfter / 1000))
      yield* Effect.logInfo(
        `certificate for ${domain} issued in ${now - started} ms, valid until ${state.stored === undefined ? "?" : new Date(state.stored.notAfter).toISOString()}`
      )
      return undefined
    }))

  /** The lines in force: the listeners re-read their files; a failure there is logged (the old context stays). */
  const swap = Effect.suspend(() => install).pipe(
    Effect.catchCause((cause) => Effect.logError("new certificate stored but the listeners could not load it; they keep the previous one", cause))
  )

  // Start: names without a usable certificate are issued before the listeners exist.
  for (const domain of options.domains) {
    const state = yield* load(domain)
    while (state.stored === undefined) {
      if ((yield* issueOne(domain)) === undefined) break
      yield* Effect.sleep(Duration.millis(state.nextAttemptAt! - (yield* Clock.currentTimeMillis)))
    }
  }

  /** When `domain` should next be tried (a retry, or its renewal time). */
  const dueAt = (state: State): number =>
    state.nextAttemptAt ?? (state.stored === undefined ? 0 : renewAt(options, state.stored.notBefore, state.stored.notAfter))

  const loop = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    let renewed = false
    for (const [domain, state] of states) {
      if (dueAt(state) > now) continue
      // A certificate written meanwhile (`incoming cert renew`) counts: no new order when it is not due.
      const onDisk = CertStore.read(store, domain)
      if (onDisk._tag === "Found" && state.failures === 0 && renewAt(options, onDisk.stored.notBefore, onDisk.stored.notAfter) > now) {
        state.stored = onDisk.stored
        renewed = true
        continue
      }
      yield* Effect.logInfo(`certificate for ${domain} is due for renewal`)
      renewed = (yield* issueOne(domain)) === undefined || renewed
    }
    if (renewed) yield* swap
    const next = Math.min(now + options.checkIntervalMs, ...[...states.values()].map(dueAt))
    const wait = Math.max(1000, next - (yield* Clock.currentTimeMillis))
    yield* Effect.race(Effect.sleep(Duration.millis(wait)), Queue.take(wake))
  })

  const status = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    return [...states].map(([domain, s]): CertStatus => ({
      domain,
      state: s.stored === undefined ? "missing" : s.stored.notAfter < now ? "expired" : "valid",
      notBefore: s.stored === undefined ? undefined : new Date(s.stored.notBefore),
      notAfter: s.stored === undefined ? undefined : new Date(s.stored.notAfter),
      renewAt: s.stored === undefined ? undefined : new Date(renewAt(options, s.stored.notBefore, s.stored.notAfter)),
      issuer: s.stored?.issuer,
      failures: s.failures,
      lastError: s.lastError,
      nextAttemptAt: s.nextAttemptAt === undefined ? undefined : new Date(s.nextAttemptAt)
    }))
  })

  return CertManager.of({
    domains: options.domains,
    status,
    renew: Effect.fn("CertManager.renew")(function*(domain?: string) {
      const names = domain === undefined ? options.domains : [domain]
      for (const name of names) {
        if (!states.has(name)) yield* load(name)
        // A failure is recorded and logged by issueOne; the caller gets it too.
        const failed = yield* issueOne(name)
        if (failed !== undefined) {
          yield* Queue.offer(wake, undefined)
          return yield* failed
        }
      }
      yield* swap
    }),
    start: (next) =>
      Effect.gen(function*() {
        install = next
        if (options.domains.length === 0) return
        // Supervised: a defect in one round is logged and the loop goes on; only the scope ends it.
        yield* Effect.forkScoped(Effect.forever(loop.pipe(
          Effect.catchCause((cause) => Effect.andThen(Effect.logError("certificate renewal round failed", cause), Effect.sleep(Duration.minutes(1))))
        )))
      })
  })
})

/** The manager of `options` (none: a manager of no names, which does nothing). */
export const layer = (options: AcmeOptions | undefined, dataDir: string): Layer.Layer<CertManager> =>
  Layer.effect(CertManager, make(options ?? { ...defaults, domains: [] }, dataDir))

/**
 * Starts the renewal loop once the listeners are bound, installing renewed certificates with
 * `Listeners.reloadCertificates`. Built above the listeners, so the loop stops before they drain.
 */
export const attach: Layer.Layer<never, never, CertManager | Listeners> = Layer.effectDiscard(
  Effect.gen(function*() {
    const manager = yield* CertManager
    const listeners = yield* Listeners
    yield* manager.start(listeners.reloadCertificates)
  })
)
