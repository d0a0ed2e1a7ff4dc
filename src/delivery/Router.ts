/**
 * Routing: which destination each recipient's copy goes to, and how that destination retries.
 *
 * The router is itself a `DeliveryAdapter`. It picks a route per recipient — a host-app Effect
 * first when there is one, then the table: exact address, the address without its `+tag`,
 * `*@domain`, then the catch-all `*` — splits the delivery into one sub-delivery per route, runs
 * them concurrently on the routes' named adapters (each route bounded by its own semaphore and
 * deadline) and merges the per-recipient outcomes, so one recipient can be delivered while
 * another waits for a retry.
 *
 * Each route may carry its own retry policy. Knowing each recipient's attempt number, the router
 * turns a `Retry` into `Retry(at = now + delay(attempt))` from the route's schedule (an adapter's
 * own `at`, such as a webhook's `Retry-After`, wins), or into a `Reject` once the route's
 * `maxAttempts` is reached. Routes without a policy leave retry timing to the dispatcher.
 *
 * `routeFor` is pure, for callers that must decide without running anything: the session asks
 * it whether a recipient's route is marked `acknowledge: "sync"`.
 */
import { Cause, Clock, Context, Data, Effect, Exit, Layer, Random, Result, type Scope, Semaphore } from "effect"
import type { Envelope } from "../protocol/Envelope.ts"
import * as Priority from "../protocol/Priority.ts"
import * as DA from "./DeliveryAdapter.ts"
import * as CauseText from "../internal/causeText.ts"

/**
 * `durable` (default): the 250 after DATA means "queued"; delivery happens afterwards.
 * `sync`: the session is meant to deliver before answering, so the sender learns the outcome.
 */
export type Acknowledge = "sync" | "durable"

export type RetrySchedule =
  /** Delay after the 1st, 2nd, ... failed attempt; the last delay repeats. */
  | { readonly kind: "delays"; readonly delaysMs: ReadonlyArray<number>; readonly jitter?: number }
  /** `baseMs × factor^(attempt-1)`, capped at `maxMs` (factor defaults to 2). */
  | { readonly kind: "exponential"; readonly baseMs: number; readonly maxMs: number; readonly factor?: number; readonly jitter?: number }

export interface RouteOptions<AdapterName extends string = string> {
  readonly name: string
  /**
   * Recipient patterns: `user@example.com` (also matches `user+tag@example.com`),
   * `user+tag@example.com` (only that tag), `*@example.com`, and `*` for the catch-all. Empty
   * for a route only the host app's `decide` chooses.
   */
  readonly match: ReadonlyArray<string>
  /** The key of the adapter in `RouterOptions.adapters`. */
  readonly adapter: AdapterName
  readonly acknowledge?: Acknowledge
  /** Without it, retry timing is the dispatcher's backoff. */
  readonly retry?: RetrySchedule
  /** The attempt at which a recipient still failing is rejected; without it, the dispatcher's limit. */
  readonly maxAttempts?: number
  /** Sub-deliveries of this route running at once (default: unbounded). */
  readonly concurrency?: number
  /** Deadline of one sub-delivery on this route; past it, its recipients are retried. */
  readonly timeoutMs?: number
  /**
   * Every recipient of a quarantined message (`Envelope.quarantine`, e.g. DMARC `p=quarantine`)
   * goes to this route instead of the one its address matches. At most one route; the host
   * app's `decide` is still asked first.
   */
  readonly quarantine?: boolean
  /**
   * Priority (-9..9, protocol/Priority.ts) of messages with a recipient on this route; the
   * highest level that applies to a message wins, and the queue claims by it.
   */
  readonly priority?: number
}

export interface Route {
  readonly name: string
  readonly adapter: string
  readonly match: ReadonlyArray<string>
  readonly acknowledge: Acknowledge
  readonly retry?: RetrySchedule | undefined
  readonly maxAttempts?: number | undefined
  readonly concurrency?: number | undefined
  readonly timeoutMs?: number | undefined
  readonly quarantine?: boolean | undefined
  readonly priority?: number | undefined
}

export interface RouteTable {
  readonly routes: ReadonlyArray<Route>
  /** The route quarantined messages take, if one is marked. */
  readonly quarantine?: Route | undefined
  /** The route for a recipient by the table alone (no host-app decision), if any. */
  readonly routeFor: (rcpt: string) => Route | undefined
  readonly byName: (name: string) => Route | undefined
  /** The host app's priority for a message (`RouterOptions.priority`), asked when it is accepted. */
  readonly prioritize?: ((envelope: Envelope) => Effect.Effect<number | undefined>) | undefined
}

export type RouterErrorReason =
  /** A route's own settings are out of range (`detail` names the setting). */
  | { readonly _tag: "InvalidRoute"; readonly route: string; readonly detail: string }
  | { readonly _tag: "DuplicateName"; readonly route: string }
  | { readonly _tag: "BadPattern"; readonly route: string; readonly pattern: string }
  /** `pattern` of `route` is already matched by `owner` (two catch-alls: `pattern` is `*`). */
  | { readonly _tag: "Conflict"; readonly route: string; readonly pattern: string; readonly owner: string }
  | { readonly _tag: "UnknownAdapter"; readonly route: string; readonly adapter: string }

export class RouterError extends Data.TaggedError("RouterError")<{ readonly reason: RouterErrorReason }> {
  /** The problem in one sentence, without the "invalid routing configuration" preamble. */
  get problem(): string {
    const r = this.reason
    switch (r._tag) {
      case "InvalidRoute":
        return r.route.trim() === "" ? r.detail : `route "${r.route}": ${r.detail}`
      case "DuplicateName":
        return `two routes are named "${r.route}"`
      case "BadPattern":
        return `route "${r.route}": bad pattern "${r.pattern}"`
      case "Conflict":
        return r.pattern === "*"
          ? `route "${r.route}" and route "${r.owner}" are both catch-alls`
          : `pattern "${r.pattern}" of route "${r.route}" is already matched by route "${r.owner}"`
      case "UnknownAdapter":
        return `route "${r.route}" names adapter "${r.adapter}", which is not configured`
    }
  }

  override get message(): string {
    return `invalid routing configuration: ${this.problem}`
  }
}

/** The route table a `Router.layer` was built with, for sessions (`acknowledge`) and tools. */
export class Routes extends Context.Service<Routes, RouteTable>()("incoming/Routes") {}

export interface TableOptions {
  /** Separator of sub-addresses (`user+tag@d`); `false` turns tag matching off. Default `+`. */
  readonly tagSeparator?: string | false
}

const splitAddress = (address: string): { readonly local: string; readonly domain: string } => {
  const at = address.lastIndexOf("@")
  return at < 0 ? { local: address, domain: "" } : { local: address.slice(0, at), domain: address.slice(at + 1) }
}

/** Decimal ms values as configured: finite, not negative. */
const validDelay = (n: number) => Number.isFinite(n) && n >= 0

/** What is wrong with a route's own settings, if anything. */
const invalidSetting = (route: RouteOptions): string | undefined => {
  if (route.name.trim() === "") return "a route has an empty name"
  if (route.maxAttempts !== undefined && !(Number.isInteger(route.maxAttempts) && route.maxAttempts >= 1)) {
    return "maxAttempts must be an integer ≥ 1"
  }
  if (route.concurrency !== undefined && !(Number.isInteger(route.concurrency) && route.concurrency >= 1)) {
    return "concurrency must be an integer ≥ 1"
  }
  if (route.timeoutMs !== undefined && !(Number.isFinite(route.timeoutMs) && route.timeoutMs > 0)) {
    return "timeoutMs must be > 0"
  }
  if (route.priority !== undefined && !Priority.isPriority(route.priority)) return "priority must be an integer from -9 to 9"
  const retry = route.retry
  if (retry !== undefined) {
    if (retry.jitter !== undefined && !(retry.jitter >= 0 && retry.jitter < 1)) return "jitter must be in [0, 1)"
    if (retry.kind === "delays" && (retry.delaysMs.length === 0 || !retry.delaysMs.every(validDelay))) {
      return "delaysMs must be a non-empty list of delays ≥ 0"
    }
    if (retry.kind === "exponential" && !(retry.baseMs > 0 && retry.maxMs >= retry.baseMs && (retry.factor ?? 2) >= 1)) {
      return "exponential retry needs baseMs > 0, maxMs ≥ baseMs and factor ≥ 1"
    }
  }
  return undefined
}

/** Builds the lookup structures; fails on ambiguous or malformed configuration. */
export const compile = (routes: ReadonlyArray<RouteOptions>, options: TableOptions = {}): Result.Result<RouteTable, RouterError> => {
  const separator = options.tagSeparator === undefined ? "+" : options.tagSeparator
  const byName = new Map<string, Route>()
  const exact = new Map<string, Route>()
  const domains = new Map<string, Route>()
  let catchAll: Route | undefined
  let quarantine: Route | undefined
  const fail = (reason: RouterErrorReason) => Result.fail(new RouterError({ reason }))
  const claim = (map: Map<string, Route>, key: string, route: Route, pattern: string): RouterErrorReason | undefined => {
    const owner = map.get(key)
    if (owner !== undefined) return { _tag: "Conflict", route: route.name, pattern, owner: owner.name }
    map.set(key, route)
    return undefined
  }
  for (const options of routes) {
    const detail = invalidSetting(options)
    if (detail !== undefined) return fail({ _tag: "InvalidRoute", route: options.name, detail })
    if (byName.has(options.name)) return fail({ _tag: "DuplicateName", route: options.name })
    const route: Route = {
      name: options.name,
      adapter: options.adapter,
      match: options.match,
      acknowledge: options.acknowledge ?? "durable",
      retry: options.retry,
      maxAttempts: options.maxAttempts,
      concurrency: options.concurrency,
      timeoutMs: options.timeoutMs,
      quarantine: options.quarantine,
      priority: options.priority
    }
    if (route.quarantine === true) {
      if (quarantine !== undefined) {
        return fail({ _tag: "InvalidRoute", route: route.name, detail: `only one route may take quarantined mail, and route "${quarantine.name}" already does` })
      }
      quarantine = route
    }
    byName.set(route.name, route)
    for (const raw of options.match) {
      const pattern = raw.trim().toLowerCase()
      let conflict: RouterErrorReason | undefined
      if (pattern === "*") {
        conflict = catchAll === undefined ? undefined : { _tag: "Conflict", route: route.name, pattern: "*", owner: catchAll.name }
        catchAll ??= route
      } else if (pattern.startsWith("*@") || pattern.startsWith("@")) {
        const domain = pattern.slice(pattern.indexOf("@") + 1)
        if (domain === "" || /[@*\s]/.test(domain)) return fail({ _tag: "BadPattern", route: route.name, pattern: raw })
        conflict = claim(domains, domain, route, raw)
      } else {
        const { local, domain } = splitAddress(pattern)
        if (local === "" || domain === "" || /[*\s]/.test(pattern) || local.includes("@")) {
          return fail({ _tag: "BadPattern", route: route.name, pattern: raw })
        }
        conflict = claim(exact, pattern, route, raw)
      }
      if (conflict !== undefined) return fail(conflict)
    }
  }
  const routeFor = (rcpt: string): Route | undefined => {
    const address = rcpt.trim().toLowerCase()
    const { local, domain } = splitAddress(address)
    const hit = exact.get(address)
    if (hit !== undefined) return hit
    if (separator !== false && separator !== "") {
      const cut = local.indexOf(separator)
      if (cut > 0) {
        const base = exact.get(`${local.slice(0, cut)}@${domain}`)
        if (base !== undefined) return base
      }
    }
    return domains.get(domain) ?? catchAll
  }
  return Result.succeed({ routes: [...byName.values()], routeFor, byName: (name) => byName.get(name), quarantine })
}

/** The route for a recipient by the table alone (pure). */
export const routeFor = (table: RouteTable, rcpt: string): Route | undefined => table.routeFor(rcpt)

/** How the session should acknowledge a recipient: its route's choice, `durable` when unrouted. */
/**
 * The priority the routing gives a message: the highest of its recipients' route priorities and
 * the host app's `priority`, or `undefined` when none says anything.
 */
export const priorityFor = (table: RouteTable, envelope: Envelope): Effect.Effect<number | undefined> => {
  let best: number | undefined
  for (const rcpt of envelope.rcptTo) {
    const p = table.routeFor(rcpt)?.priority
    if (p !== undefined && (best === undefined || p > best)) best = p
  }
  if (table.prioritize === undefined) return Effect.succeed(best)
  return Effect.map(table.prioritize(envelope), (p) => (p !== undefined && (best === undefined || p > best) ? p : best))
}

export const acknowledgementFor = (table: RouteTable, rcpt: string): Acknowledge => table.routeFor(rcpt)?.acknowledge ?? "durable"

/** The nominal delay before the next attempt after the `attempt`-th failure (1-based), before jitter. */
export const nominalDelay = (schedule: RetrySchedule, attempt: number): number => {
  const n = Math.max(1, attempt)
  if (schedule.kind === "delays") return schedule.delaysMs[Math.min(n, schedule.delaysMs.length) - 1]!
  return Math.min(schedule.maxMs, schedule.baseMs * (schedule.factor ?? 2) ** (n - 1))
}

const delayFor = (schedule: RetrySchedule, attempt: number): Effect.Effect<number> => {
  const nominal = nominalDelay(schedule, attempt)
  const jitter = schedule.jitter ?? 0
  return jitter <= 0 ? Effect.succeed(nominal) : Effect.map(Random.next, (r) => Math.round(nominal * (1 + jitter * (2 * r - 1))))
}

type AdapterService = DA.DeliveryAdapter["Service"]

/** An adapter already built, or the Effect that builds it (run once, in the router layer's scope). */
export type AdapterInput = AdapterService | Effect.Effect<AdapterService, unknown, unknown>

type InputError<I> = I extends Effect.Effect<AdapterService, infer E, unknown> ? E : never
type InputServices<I> = I extends Effect.Effect<AdapterService, unknown, infer R> ? R : never

export type Adapters = Readonly<Record<string, AdapterInput>>

export interface RouterOptions<A extends Adapters, DE = never, DR = never> extends TableOptions {
  /** Adapter name in events and logs (default `router`). */
  readonly name?: string
  readonly adapters: A
  readonly routes: ReadonlyArray<RouteOptions<NoInfer<Extract<keyof A, string>>>>
  /**
   * The host app's choice, asked first for every recipient: a route name, or `undefined` to
   * fall back to the table. A failure retries that recipient.
   */
  readonly decide?: (rcpt: string, delivery: DA.Delivery) => Effect.Effect<string | undefined, DE, DR>
  /** What happens to a recipient no route matches (default `retry`: a configuration gap should not bounce mail). */
  readonly unrouted?: "retry" | "reject"
  /**
   * The host app's priority for a message, asked once when it is accepted (before it is
   * queued, so unlike `decide` it sees the envelope, not the body): -9..9, or `undefined` to
   * leave it to the routes and the configuration. The highest level that applies wins.
   */
  readonly priority?: (envelope: Envelope) => Effect.Effect<number | undefined>
}

export type RouterBuildError<A extends Adapters> = RouterError | InputError<A[keyof A]>
export type RouterServices<A extends Adapters, DR> = InputServices<A[keyof A]> | DR

type Recipient = DA.Delivery["recipients"][number]

export const make = <A extends Adapters, DE = never, DR = never>(
  options: RouterOptions<A, DE, DR>
): Effect.Effect<{ readonly adapter: AdapterService; readonly routes: RouteTable }, RouterBuildError<A>, RouterServices<A, DR>> =>
  Effect.gen(function*() {
    const name = options.name ?? "router"
    const compiled = compile(options.routes, options)
    if (Result.isFailure(compiled)) return yield* compiled.failure
    const table: RouteTable = options.priority === undefined ? compiled.success : { ...compiled.success, prioritize: options.priority }
    for (const route of table.routes) {
      if (!(route.adapter in options.adapters)) {
        return yield* new RouterError({ reason: { _tag: "UnknownAdapter", route: route.name, adapter: route.adapter } })
      }
    }
    const adapters = new Map<string, AdapterService>()
    for (const [key, input] of Object.entries(options.adapters)) {
      adapters.set(key, Effect.isEffect(input) ? yield* (input as Effect.Effect<AdapterService, InputError<A[keyof A]>, InputServices<A[keyof A]>>) : input)
    }
    const permits = new Map<string, Semaphore.Semaphore>()
    for (const route of table.routes) {
      if (route.concurrency !== undefined) permits.set(route.name, yield* Semaphore.make(route.concurrency))
    }
    const decideContext = yield* Effect.context<DR>()

    type Choice = { readonly _tag: "Route"; readonly route: Route } | { readonly _tag: "None"; readonly outcome: DA.RecipientOutcome }

    const unroutedOutcome = (rcpt: string, reason: string): Choice => ({
      _tag: "None",
      outcome: options.unrouted === "reject" ? DA.reject(rcpt, `550 5.1.1 ${reason}`) : DA.retry(rcpt, reason)
    })

    // Each generator below is made once, with Effect.fnUntraced, not per call: a generator
    // function created per call and then run gets a new prototype and initial map in V8's old
    // space, which keep its closure alive through scavenges (docs/benchmark.md, issue 20).
    const choose: (rcpt: string, delivery: DA.Delivery) => Effect.Effect<Choice> = Effect.fnUntraced(
      function*(rcpt: string, delivery: DA.Delivery) {
        if (options.decide !== undefined) {
          const decided = yield* options.decide(rcpt, delivery).pipe(Effect.provideContext(decideContext), Effect.exit)
          if (Exit.isFailure(decided)) {
            if (Cause.hasInterruptsOnly(decided.cause)) return yield* Effect.interrupt
            return { _tag: "None", outcome: DA.retry(rcpt, `choosing a route failed: ${CauseText.oneLine(decided.cause)}`) }
          }
          if (decided.value !== undefined) {
            const route = table.byName(decided.value)
            return route === undefined
              ? { _tag: "None", outcome: DA.retry(rcpt, `the host app chose route "${decided.value}", which does not exist`) }
              : { _tag: "Route", route }
          }
        }
        if (delivery.envelope.quarantine !== undefined && table.quarantine !== undefined) return { _tag: "Route", route: table.quarantine }
        const route = table.routeFor(rcpt)
        return route === undefined ? unroutedOutcome(rcpt, `no route for ${rcpt}`) : { _tag: "Route", route }
      }
    )

    /** What the route's adapter said, one outcome per recipient of the sub-delivery. */
    const outcomesOf = (
      route: Route,
      recipients: ReadonlyArray<Recipient>,
      exit: Exit.Exit<ReadonlyArray<DA.RecipientOutcome>, DA.DeliveryError | Cause.TimeoutError>
    ): ReadonlyArray<DA.RecipientOutcome> => {
      if (Exit.isSuccess(exit)) {
        const given = new Map(exit.value.map((o) => [o.rcpt, o]))
        return recipients.map((r) => given.get(r.rcpt) ?? DA.retry(r.rcpt, `adapter "${route.adapter}" gave no outcome`))
      }
      const error = exit.cause.reasons.find(Cause.isFailReason)?.error
      switch (error?._tag) {
        case "TimeoutError":
          return recipients.map((r) => DA.retry(r.rcpt, `route "${route.name}" timed out after ${route.timeoutMs} ms`))
        case "DeliveryError":
          return recipients.map((r) => (error.retryable ? DA.retry(r.rcpt, error.message) : DA.reject(r.rcpt, error.message)))
        default:
          return recipients.map((r) => DA.retry(r.rcpt, `adapter "${route.adapter}" failed: ${CauseText.oneLine(exit.cause)}`))
      }
    }

    /** The route's retry policy applied to one outcome. */
    const scheduled = Effect.fnUntraced(function*(route: Route, outcome: DA.RecipientOutcome, attempt: number, now: number) {
        const via = route.adapter
        if (outcome._tag !== "Retry") return { ...outcome, via }
        if (route.maxAttempts !== undefined && attempt >= route.maxAttempts) {
          return { ...DA.reject(outcome.rcpt, `gave up after ${attempt} attempts: ${outcome.reason}`), ...(outcome.remote !== undefined ? { remote: outcome.remote } : {}), via }
        }
        // The route's limit travels with the outcome, so the dispatcher's own limit does not cut it short.
        const limit = route.maxAttempts ?? outcome.maxAttempts
        const at = outcome.at ?? (route.retry === undefined ? undefined : now + (yield* delayFor(route.retry, attempt)))
        return { ...outcome, at, maxAttempts: limit, via }
      })

    const runRouteBody = Effect.fnUntraced(function*(route: Route, delivery: DA.Delivery, recipients: ReadonlyArray<Recipient>) {
        const adapter = adapters.get(route.adapter)!
        let call: Effect.Effect<ReadonlyArray<DA.RecipientOutcome>, DA.DeliveryError | Cause.TimeoutError> = adapter.deliver({ ...delivery, recipients })
        if (route.timeoutMs !== undefined) call = Effect.timeout(call, route.timeoutMs)
        const permit = permits.get(route.name)
        if (permit !== undefined) call = permit.withPermit(call)
        const exit = yield* Effect.exit(call)
        // Interrupted (a drain): let the interruption through so the dispatcher hands the lease back.
        if (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.interrupt
        const now = yield* Clock.currentTimeMillis
        const attempts = new Map(recipients.map((r) => [r.rcpt, r.attempt]))
        return yield* Effect.forEach(outcomesOf(route, recipients, exit), (o) => scheduled(route, o, attempts.get(o.rcpt) ?? 1, now))
      })
    const runRoute = (route: Route, delivery: DA.Delivery, recipients: ReadonlyArray<Recipient>) =>
      runRouteBody(route, delivery, recipients).pipe(
        Effect.annotateLogs({ route: route.name }),
        Effect.withSpan("Router.route", { attributes: { route: route.name, adapter: route.adapter, recipients: recipients.length } })
      )

    const deliver = Effect.fn("Router.deliver")(function*(delivery: DA.Delivery) {
      const groups = new Map<Route, Array<Recipient>>()
      const settled: Array<DA.RecipientOutcome> = []
      for (const recipient of delivery.recipients) {
        const choice = yield* choose(recipient.rcpt, delivery)
        if (choice._tag === "None") {
          settled.push(choice.outcome)
          continue
        }
        const group = groups.get(choice.route) ?? []
        group.push(recipient)
        groups.set(choice.route, group)
      }
      const routed = yield* Effect.forEach(groups, ([route, recipients]) => runRoute(route, delivery, recipients), { concurrency: "unbounded" })
      return [...settled, ...routed.flat()]
    })

    // Off-site when the recipient's route leads to an adapter that is; with a host-app `decide`,
    // which may pick any route, when any of them is.
    const offSite = (adapter: AdapterService | undefined, rcpt: string) => adapter?.deliversOffSite?.(rcpt) === true
    const deliversOffSite = (rcpt: string): boolean => {
      if (options.decide !== undefined) return [...adapters.values()].some((a) => offSite(a, rcpt))
      const route = table.routeFor(rcpt)
      return route !== undefined && offSite(adapters.get(route.adapter), rcpt)
    }

    return { adapter: DA.DeliveryAdapter.of({ name, deliver, deliversOffSite }), routes: table }
  })

/** The router as the `DeliveryAdapter`, with its `Routes` table. */
export const layer = <A extends Adapters, DE = never, DR = never>(
  options: RouterOptions<A, DE, DR>
): Layer.Layer<DA.DeliveryAdapter | Routes, RouterBuildError<A>, Exclude<RouterServices<A, DR>, Scope.Scope>> =>
  Layer.effectContext(
    Effect.map(make(options), ({ adapter, routes }) => Context.make(DA.DeliveryAdapter, adapter).pipe(Context.add(Routes, routes)))
  )
