/**
 * The dispatcher: N supervised worker fibers that drain the queue through the delivery adapter.
 *
 * A worker claims a message under a lease, delivers it with a deadline, turns the per-recipient
 * outcomes into settlements (delivered / retry at now + backoff / dead after `maxAttempts`) and
 * records them — in a child fiber, so that it goes on to its next message while a durable queue
 * writes the settle (the message stays leased until then; a drain waits for it). A worker that dies is restarted with a capped backoff; a worker interrupted
 * mid-delivery (drain) gives its lease back so the message is delivered later, not lost. A
 * janitor fiber purges dead letters whose TTL passed and publishes the queue depth.
 *
 * A recipient still failing `maxLifetimeMs` after the message arrived is dead-lettered whatever
 * its attempt count. With `bounces`, dead-lettered recipients are reported to the sender
 * (`bounce/Bounces.ts`), and with `bounces.delayNoticeMs` a message still retried that long
 * after arrival gets one delay notice; the report is committed in the settle's transaction.
 */
import { Cause, Clock, Context, Effect, Exit, Layer, Option, References, Schedule } from "effect"
import { MailQueue, type Lease, type Settlement } from "../queue/MailQueue.ts"
import * as MailQueueModule from "../queue/MailQueue.ts"
import * as Telemetry from "../telemetry/Telemetry.ts"
import * as Backoff from "./Backoff.ts"
import * as Bounces from "./bounce/Bounces.ts"
import { bodyStream, type Delivery, DeliveryAdapter, type DeliveryError, type RecipientOutcome } from "./DeliveryAdapter.ts"
import * as CauseText from "../internal/causeText.ts"
import { withSpanIf } from "../internal/spanIf.ts"
import * as HotPath from "../internal/hotPath.ts"

export interface DispatcherOptions {
  readonly workers: number
  readonly leaseMs: number
  readonly deliveryTimeoutMs: number
  readonly maxAttempts: number
  readonly backoff: Backoff.BackoffOptions
  /** Longest an idle worker sleeps before looking at the queue again (commits wake it sooner). */
  readonly idlePollMs: number
  readonly sweepIntervalMs: number
  /**
   * At shutdown with a non-durable queue, how long workers keep delivering what is queued
   * before they are interrupted (whatever is left is lost, and logged as such).
   */
  readonly drainTimeoutMs: number
  /** A recipient not delivered this long after arrival is dead-lettered (default 5 days). */
  readonly maxLifetimeMs: number
  /** Report dead-lettered recipients to the sender (RFC 3464); off when absent. */
  readonly bounces?: Bounces.BounceOptions | undefined
}

export const defaults: DispatcherOptions = {
  workers: 4,
  leaseMs: 5 * 60_000,
  deliveryTimeoutMs: 2 * 60_000,
  maxAttempts: 12,
  backoff: Backoff.defaults,
  idlePollMs: 1_000,
  sweepIntervalMs: 60_000,
  drainTimeoutMs: 30_000,
  maxLifetimeMs: 5 * 24 * 3600_000
}

export class Dispatcher extends Context.Service<Dispatcher, {
  readonly workers: number
  /** How many times a worker was restarted after dying. */
  readonly restarts: Effect.Effect<number>
}>()("incoming/Dispatcher") {}

/**
 * The adapter's outcome for `rcpt` (the last one, if it gave two). A search rather than a map
 * built per attempt: most messages have one recipient, and two `Map`s per delivered message were
 * ~650 bytes of garbage each time (docs/benchmark.md, issue 20).
 */
const outcomeOf = (outcomes: ReadonlyArray<RecipientOutcome>, rcpt: string): RecipientOutcome | undefined =>
  outcomes.findLast((o) => o.rcpt === rcpt)
const remoteOf = (outcomes: ReadonlyArray<RecipientOutcome>, rcpt: string): string | undefined => {
  const o = outcomeOf(outcomes, rcpt)
  return o === undefined || o._tag === "Ok" ? undefined : o.remote
}

/**
 * A delivery attempt of a lease, its body stream made when the adapter asks for it.
 *
 * Made for every attempt, the stream cost about 1 KB of promotion per message even when the
 * adapter never reads it (discard, a webhook without the body): Effect's `Channel.fromTransform`
 * assigns an arrow function to a property, which V8 allocates in old space (it pretenures
 * functions assigned to properties), and that function kept the lease and the message alive
 * through scavenges until the next mark-compact (docs/benchmark.md, issue 20).
 *
 * `body` is an own enumerable getter, so a copy (`{ ...delivery, recipients }`, as the router
 * and host adapters make) still has a body.
 */
class LeaseDelivery {
  readonly id: string
  readonly envelope: Delivery["envelope"]
  readonly receivedAt: number
  readonly recipients: Delivery["recipients"]
  readonly size: number
  declare readonly body: Delivery["body"]
  readonly #lease: Lease
  constructor(lease: Lease) {
    this.id = lease.id
    this.envelope = lease.envelope
    this.receivedAt = lease.receivedAt
    this.recipients = lease.recipients
    this.size = lease.body.size
    this.#lease = lease
    Object.defineProperty(this, "body", LeaseDelivery.#body)
  }
  /** Each read opens the stored message again (see `Delivery.body`); one descriptor for all. */
  static readonly #body: PropertyDescriptor = {
    enumerable: true,
    get(this: LeaseDelivery) {
      const body = this.#lease.body
      return bodyStream(() => body.stream())
    }
  }
}

export const make = Effect.fnUntraced(function*(input: Partial<DispatcherOptions> = {}) {
  const options: DispatcherOptions = { ...defaults, ...input, backoff: { ...defaults.backoff, ...input.backoff } }
  const queue = yield* MailQueue
  const adapter = yield* DeliveryAdapter
  const telemetry = yield* Telemetry.Telemetry
  const tracing = yield* References.TracerEnabled
  let restarts = 0

  // Plain values for the common outcomes; only a retry needs an effect (the backoff's jitter).
  const settlementFor = (lease: Lease, outcome: RecipientOutcome, now: number): Settlement | Effect.Effect<Settlement> => {
    switch (outcome._tag) {
      case "Ok":
        return MailQueueModule.delivered(outcome.rcpt, outcome.reply ?? "delivered")
      case "Reject":
        return MailQueueModule.dead(outcome.rcpt, outcome.reason)
      case "Retry": {
        const attempt = lease.recipients.find((r) => r.rcpt === outcome.rcpt)?.attempt ?? 1
        if (attempt >= (outcome.maxAttempts ?? options.maxAttempts)) {
          return MailQueueModule.dead(outcome.rcpt, `${outcome.reason} (gave up after ${attempt} attempts)`)
        }
        if (now - lease.receivedAt >= options.maxLifetimeMs) {
          return MailQueueModule.dead(outcome.rcpt, `${outcome.reason} (gave up: not delivered within ${Math.round(options.maxLifetimeMs / 3600_000)} h of arrival)`)
        }
        if (outcome.at !== undefined) return MailQueueModule.retryAt(outcome.rcpt, outcome.at, outcome.reason)
        return Effect.map(Backoff.delay(options.backoff, attempt), (wait) => MailQueueModule.retryAt(outcome.rcpt, now + wait, outcome.reason))
      }
    }
  }

  /**
   * What the adapter said, per recipient. A failed or timed-out attempt retries everyone, except
   * a `DeliveryError` whose reason says the destination rejected the message for good.
   */
  const outcomesOf = (
    lease: Lease,
    exit: Exit.Exit<ReadonlyArray<RecipientOutcome>, DeliveryError | Cause.TimeoutError>
  ): ReadonlyArray<RecipientOutcome> => {
    if (Exit.isSuccess(exit)) {
      const given = new Map(exit.value.map((o) => [o.rcpt, o]))
      return lease.recipients.map((r) => given.get(r.rcpt) ?? { _tag: "Retry", rcpt: r.rcpt, reason: "adapter gave no outcome" })
    }
    const error = exit.cause.reasons.find(Cause.isFailReason)?.error
    const permanent = error?._tag === "DeliveryError" && !error.retryable
    const reason = error?._tag === "TimeoutError" ? "delivery timed out" : CauseText.oneLine(exit.cause)
    return lease.recipients.map((r) => (permanent ? { _tag: "Reject", rcpt: r.rcpt, reason } : { _tag: "Retry", rcpt: r.rcpt, reason }))
  }

  const delayDue = (lease: Lease, now: number) => {
    const after = options.bounces?.delayNoticeMs
    return after !== undefined && lease.envelope.delayNotified === undefined && now - lease.receivedAt >= after
  }
  /** Whether a settle may carry a report: checked without an effect, as most settles carry none. */
  const mayReport = (lease: Lease, settlements: ReadonlyArray<Settlement>, now: number) =>
    options.bounces !== undefined && settlements.some((s) => s._tag === "Dead" || (s._tag === "Retry" && delayDue(lease, now)))

  /**
   * The report to the sender for the recipients of `lease` just dead-lettered and, once the
   * message waited `delayNoticeMs`, for those retried (one delay notice per message), to be
   * committed with the settle. A report that cannot be made (the original unreadable) is only
   * logged: the outcomes are recorded without it rather than not at all.
   */
  const reportFor = (lease: Lease, settlements: ReadonlyArray<Settlement>, outcomes: ReadonlyArray<RecipientOutcome>, now: number) =>
    Effect.gen(function*() {
      const bounces = options.bounces!
      const dead = settlements.filter((s) => s._tag === "Dead")
      const delayed = delayDue(lease, now) ? settlements.filter((s) => s._tag === "Retry") : []
      const offSite = (address: string) => adapter.deliversOffSite?.(address) === true
      const message = yield* Bounces.report(bounces, offSite, {
        id: lease.id,
        envelope: lease.envelope,
        receivedAt: lease.receivedAt,
        size: lease.body.size,
        body: bodyStream(() => lease.body.stream())
      }, [
        ...dead.map((d) => ({ rcpt: d.rcpt, reason: d.reply, remoteMta: remoteOf(outcomes, d.rcpt) })),
        ...delayed.map((d) => ({
          rcpt: d.rcpt,
          reason: d.reply,
          remoteMta: remoteOf(outcomes, d.rcpt),
          action: "delayed" as const,
          willRetryUntil: lease.receivedAt + options.maxLifetimeMs
        }))
      ], now)
      if (message === undefined) {
        if (dead.length > 0) {
          const why = Bounces.suppressed(lease.envelope, dead[0]!.rcpt, { localDomains: bounces.localDomains, offSite })
          yield* Effect.logDebug(`no bounce for ${dead.length} dead recipient(s): ${why ?? "not requested"}`)
        }
        return undefined
      }
      const reach = { localDomains: bounces.localDomains, offSite }
      const notice = delayed.some((d) => Bounces.suppressed(lease.envelope, d.rcpt, reach, "delayed") === undefined)
      const about = [...dead, ...delayed].map((d) => d.rcpt).join(", ")
      return { message, delayNotified: notice ? now : undefined, what: dead.length > 0 ? "bounce" : "delay notice", about }
    }).pipe(
      Effect.catchCause((cause) => Effect.as(Effect.logError("making a bounce failed; the outcome is recorded without it", Cause.pretty(cause)), undefined))
    )

  // Metric updates and events of the per-message path go through this context, without an
  // effect each (as the session's do).
  const metrics = Telemetry.metricsContext(yield* Effect.context<never>())

  const record = (lease: Lease, settlements: ReadonlyArray<Settlement>, outcomes: ReadonlyArray<RecipientOutcome>, seconds: number) => {
    for (const s of settlements) {
      const outcome = s._tag === "Delivered" ? "delivered" : s._tag === "Retry" ? "retry" : "dead"
      const by = outcomeOf(outcomes, s.rcpt)?.via ?? adapter.name
      Telemetry.recordDeliveryUnsafe(by, outcome, seconds, metrics)
      telemetry.publishUnsafe({ _tag: "DeliveryResult", id: lease.id, rcpt: s.rcpt, outcome, reason: s.reply, adapter: by }, metrics)
    }
  }

  /** The settle with its report, when the outcome calls for one (a bounce, a delay notice). */
  const settleWithReport = (
    lease: Lease,
    settlements: ReadonlyArray<Settlement>,
    outcomes: ReadonlyArray<RecipientOutcome>,
    now: number
  ) =>
    Effect.gen(function*() {
      const report = yield* reportFor(lease, settlements, outcomes, now)
      // The report is committed with the settle: a crash records both or neither.
      yield* queue.settle(lease, settlements, report === undefined ? undefined : { reports: [report.message], delayNotified: report.delayNotified })
      if (report !== undefined) {
        yield* Effect.logInfo(`${report.what} ${report.message.id} queued to <${lease.envelope.mailFrom}> for ${report.about}`)
      }
    }).pipe(Effect.annotateLogs({ message: lease.id }))

  const settleAndReport = (
    lease: Lease,
    settlements: ReadonlyArray<Settlement>,
    outcomes: ReadonlyArray<RecipientOutcome>,
    seconds: number,
    now: number
  ) =>
    (mayReport(lease, settlements, now) ? settleWithReport(lease, settlements, outcomes, now) : queue.settle(lease, settlements)).pipe(
      Effect.map(() => record(lease, settlements, outcomes, seconds)),
      Effect.catchIf(
        (e) => e.reason._tag === "LeaseLost",
        () => Effect.logWarning("lease lost before settling; another worker owns the message now").pipe(Effect.annotateLogs({ message: lease.id }))
      ),
      // Not recorded (storage failed): the lease expires and the message is delivered again.
      Effect.catchCause((cause) =>
        Effect.logError("settling a delivery failed; it will be retried when its lease expires", Cause.pretty(cause)).pipe(
          Effect.annotateLogs({ message: lease.id })
        )
      )
      // The message id is annotated on the lines above only: annotating the whole settle copied
      // the fiber's context once per delivered message for lines that are rarely written.
    )

  /** What happens once the adapter answered: settlements worked out, their settle started. */
  const afterAttempt = (
    lease: Lease,
    exit: Exit.Exit<ReadonlyArray<RecipientOutcome>, DeliveryError | Cause.TimeoutError>,
    started: number
  ): Effect.Effect<void> => {
    if (Exit.isFailure(exit) && Exit.hasInterrupts(exit) && exit.cause.reasons.every(Cause.isInterruptReason)) {
      return Effect.interrupt
    }
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const outcomes = outcomesOf(lease, exit)
      const settled = outcomes.map((o) => settlementFor(lease, o, now))
      const seconds = (performance.now() - started) / 1000
      // The worker goes on to its next message while the settle is written: with a durable queue
      // a settle waits for a write batch (~1–2 ms under load), and waiting would cap a worker at
      // a few hundred deliveries a second. The message stays leased until the settle is recorded,
      // so nobody else delivers it meanwhile.
      // A child of the worker: a drain interrupts the worker, and its settles (uninterruptible)
      // complete before it stops. Started at once: a settle that needs no write finishes right here.
      const settle = (settlements: ReadonlyArray<Settlement>) =>
        Effect.asVoid(
          Effect.forkChild(settleAndReport(lease, settlements, outcomes, seconds, now), { startImmediately: true, uninterruptible: true })
        )
      // Only a retry's backoff (its jitter) is an effect; the common outcomes are plain values.
      return settled.some(Effect.isEffect)
        ? Effect.flatMap(Effect.forEach(settled, (s) => (Effect.isEffect(s) ? s : Effect.succeed(s))), settle)
        : settle(settled as ReadonlyArray<Settlement>)
    })
  }

  const deliver = (lease: Lease) => {
    const started = performance.now()
    let attempt: Effect.Effect<ReadonlyArray<RecipientOutcome>, DeliveryError>
    try {
      attempt = adapter.deliver(new LeaseDelivery(lease))
    } catch (defect) {
      // An adapter that throws instead of returning an effect: a failed attempt, retried.
      attempt = Effect.die(defect)
    }
    return HotPath.timeout(attempt, options.deliveryTimeoutMs).pipe(
      Effect.exit,
      Effect.flatMap((exit) => afterAttempt(lease, exit, started)),
      // Interrupted mid-delivery (drain): the message goes back to the queue untouched.
      Effect.onInterrupt(() => queue.release(lease).pipe(Effect.ignore)),
      Effect.annotateLogs({ message: lease.id }),
      withSpanIf(tracing, "Dispatcher.deliver", () => ({
        message: lease.id,
        adapter: adapter.name,
        recipients: lease.recipients.length,
        attempt: Math.max(...lease.recipients.map((r) => r.attempt))
      }))
    )
  }

  // Nothing to claim: sleep until the next due time (at most `idlePollMs`) or a commit's signal.
  const idle = Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.flatMap(queue.nextDueAt, (next) =>
      queue.awaitWork(Option.match(next, {
        onNone: () => options.idlePollMs,
        onSome: (at) => Math.min(options.idlePollMs, Math.max(1, at - now))
      }))))

  // One claim per step, asked for anew each time: a queue may decide when it is called.
  const step = (owner: string) =>
    Effect.suspend(() =>
      Effect.flatMap(queue.claim({ owner, leaseMs: options.leaseMs }), (claimed) => (Option.isSome(claimed) ? deliver(claimed.value) : idle))
    )

  const restartPolicy = Schedule.min([Schedule.exponential("100 millis", 2), Schedule.spaced("5 seconds")])

  const supervised = (name: string) =>
    Effect.forever(step(name)).pipe(
      Effect.sandbox,
      Effect.tapError((cause) =>
        Effect.gen(function*() {
          restarts++
          yield* Effect.logError(`delivery worker ${name} died; restarting`, Cause.pretty(cause))
          yield* telemetry.publish({ _tag: "WorkerRestarted", worker: name, cause: CauseText.oneLine(cause) })
        })
      ),
      Effect.retry(restartPolicy),
      Effect.annotateLogs({ worker: name })
    )

  const owner = `${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  for (let i = 0; i < options.workers; i++) {
    yield* Effect.forkScoped(supervised(`${owner}/w${i}`))
  }

  const janitor = Effect.gen(function*() {
    const purged = yield* queue.purgeExpired
    if (purged > 0) yield* Effect.logInfo(`purged ${purged} expired dead letter(s)`)
    yield* telemetry.publish({ _tag: "QueueDepth", count: yield* queue.depth })
  }).pipe(
    Effect.catchCause((cause) => Effect.logWarning("dead-letter sweep failed", Cause.pretty(cause))),
    Effect.repeat(Schedule.spaced(options.sweepIntervalMs))
  )
  yield* Effect.forkScoped(janitor)

  if (!queue.durable) {
    // Registered after the workers, so it runs before they are interrupted: a memory queue's
    // backlog exists nowhere else, so deliver it if we can before the process goes.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const waitEmpty = Effect.gen(function*() {
          while ((yield* queue.depth) > 0 && Option.isSome(yield* queue.nextDueAt.pipe(Effect.orElseSucceed(() => Option.none())))) {
            yield* queue.awaitWork(100)
          }
        })
        yield* waitEmpty.pipe(Effect.timeoutOption(options.drainTimeoutMs))
        const left = yield* queue.depth
        if (left > 0) yield* Effect.logError(`shutting down with ${left} undelivered message(s) in a non-durable queue: they are lost`)
      })
    )
  }

  return Dispatcher.of({ workers: options.workers, restarts: Effect.sync(() => restarts) })
})

export const layer = (options: Partial<DispatcherOptions> = {}): Layer.Layer<Dispatcher, never, MailQueue | DeliveryAdapter | Telemetry.Telemetry> =>
  Layer.effect(Dispatcher, make(options))
