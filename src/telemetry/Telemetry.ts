/**
 * The typed event stream of Incoming and the metrics derived from it.
 *
 * Every box on the data path publishes here; host apps subscribe as a `Stream`. Publishing never
 * blocks the SMTP hot path: the PubSub is sliding, so a slow subscriber loses the oldest events
 * rather than slowing a session down. Metrics are updated in the same call, so events and
 * metrics cannot disagree.
 */
import type { AuthResult } from "../protocol/AuthenticationResults.ts"
import { Context, Effect, Layer, Metric, PubSub, type Scope, Stream } from "effect"

/** The package version, as `incoming_build_info` and the trace resource report it. */
export const version = "0.1.0"

export type DeliveryOutcome = "delivered" | "retry" | "dead"

export type TelemetryEvent =
  | { readonly _tag: "MessageQueued"; readonly id: string; readonly size: number; readonly queueDepth: number }
  | {
    readonly _tag: "EnqueueError"
    readonly id: string
    /** A short, bounded key (the queue error's reason, `timeout`, `defect`): a metric label. */
    readonly reason: string
    /** The reply the client got and what failed, for logs. */
    readonly detail: string
    readonly attemptedSize?: number | undefined
  }
  | {
    readonly _tag: "DeliveryResult"
    readonly id: string
    readonly rcpt: string
    readonly outcome: DeliveryOutcome
    readonly reason: string
    readonly adapter: string
  }
  | { readonly _tag: "SessionConnect"; readonly peer: string; readonly listener: string }
  | { readonly _tag: "SessionAccepted"; readonly id: string; readonly listener: string }
  /** Accepted (250) and stored nowhere, as a DATA-stage rule asked (a milter's discard). */
  | { readonly _tag: "MessageDiscarded"; readonly id: string; readonly rule: string; readonly reason: string; readonly listener: string }
  | { readonly _tag: "SessionRejected"; readonly reason: string; readonly stage: string; readonly code: number; readonly listener: string }
  | { readonly _tag: "QueueDepth"; readonly count: number }
  | { readonly _tag: "WorkerRestarted"; readonly worker: string; readonly cause: string }
  | {
    readonly _tag: "PolicyVerdict"
    readonly rule: string
    readonly stage: string
    /** Continue, Accept, Reject, Defer or Disconnect: what the rule decided (observe mode: would have). */
    readonly verdict: string
    readonly mode: "enforce" | "observe"
    readonly sessionId: string
    /** DATA stage: the authentication results the rule gave (observe mode: would have written). */
    readonly results?: ReadonlyArray<AuthResult> | undefined
    /** DATA stage: why the rule quarantined the message (observe mode: would have). */
    readonly quarantine?: string | undefined
  }

export type TelemetryEventTag = TelemetryEvent["_tag"]

type Attributes = Readonly<Record<string, string>>

// Each event metric as a function of its attributes. A series with attributes is a metric of its
// own, built with them: `Metric.withAttributes` would instead copy the context and rebuild the
// series key (a sorted JSON string) on every update, on the hot path.
const define = {
  connections: (attributes?: Attributes) =>
    Metric.counter("incoming_connections_total", { description: "SMTP connections accepted", incremental: true, attributes }),
  accepted: () => Metric.counter("incoming_messages_accepted_total", { description: "messages queued (250 sent)", incremental: true }),
  rejected: (attributes?: Attributes) =>
    Metric.counter("incoming_replies_rejected_total", { description: "transactions or commands refused", incremental: true, attributes }),
  enqueueErrors: (attributes?: Attributes) =>
    Metric.counter("incoming_enqueue_errors_total", { description: "commits that failed", incremental: true, attributes }),
  deliveries: (attributes?: Attributes) =>
    Metric.counter("incoming_delivery_results_total", { description: "per-recipient delivery outcomes", incremental: true, attributes }),
  discarded: (attributes?: Attributes) =>
    Metric.counter("incoming_messages_discarded_total", { description: "messages accepted and stored nowhere, by rule", incremental: true, attributes }),
  workerRestarts: () => Metric.counter("incoming_worker_restarts_total", { description: "delivery workers restarted", incremental: true }),
  queueDepth: () => Metric.gauge("incoming_queue_depth", { description: "messages not yet delivered or dead" }),
  messageBytes: () =>
    Metric.histogram("incoming_message_bytes", {
      description: "accepted message sizes",
      // 1 KiB … 64 MiB: large messages get buckets of their own instead of +Inf.
      boundaries: Metric.exponentialBoundaries({ start: 1024, factor: 4, count: 9 })
    }),
  recipients: (attributes?: Attributes) =>
    Metric.counter("incoming_recipients_total", {
      description: "RCPT outcomes by listener, recipient domain (a local domain, or `other`) and result",
      incremental: true,
      attributes
    }),
  tlsConnections: (attributes?: Attributes) =>
    Metric.counter("incoming_tls_connections_total", {
      description: "connections that completed TLS (implicit or STARTTLS) by listener and protocol version",
      incremental: true,
      attributes
    }),
  commandDuration: (attributes?: Attributes) =>
    Metric.histogram("incoming_command_duration_seconds", {
      description: "time our MAIL, RCPT and DATA handling took (DATA: from the 354 to the reply)",
      boundaries: Metric.exponentialBoundaries({ start: 0.0005, factor: 4, count: 9 }),
      attributes
    }),
  deliveryDuration: (attributes?: Attributes) =>
    Metric.histogram("incoming_delivery_duration_seconds", {
      description: "delivery attempts by adapter (a router's route adapter) and recipient outcome",
      boundaries: Metric.exponentialBoundaries({ start: 0.001, factor: 4, count: 9 }),
      attributes
    })
}

/** The event metrics without attributes; `Metric.withAttributes` on these addresses the same series as the hot path. */
export const metrics = Object.fromEntries(Object.entries(define).map(([name, make]) => [name, make()])) as {
  readonly [K in keyof typeof define]: ReturnType<(typeof define)[K]>
}

/** The metrics that take attributes. */
type Labelled = { readonly [K in keyof typeof define]: Parameters<(typeof define)[K]> extends [] ? never : K }[keyof typeof define]

// Built once per attribute set. The cache is a tree keyed by the metric's name, then by each
// attribute value in order, so a lookup allocates nothing (callers pass their attributes in a
// fixed order per name).
interface AttrNode {
  metric: Metric.Metric<number, unknown> | undefined
  readonly next: Map<string, AttrNode>
}
const attributed = new Map<string, AttrNode>()
const withAttrs = <K extends Labelled>(name: K, attrs: Attributes): ReturnType<(typeof define)[K]> => {
  let node = attributed.get(name)
  if (node === undefined) {
    node = { metric: undefined, next: new Map() }
    attributed.set(name, node)
  }
  for (const key in attrs) {
    const value = attrs[key]!
    let child: AttrNode | undefined = node.next.get(value)
    if (child === undefined) {
      child = { metric: undefined, next: new Map() }
      node.next.set(value, child)
    }
    node = child
  }
  node.metric ??= define[name](attrs)
  return node.metric as ReturnType<(typeof define)[K]>
}

/**
 * What a metric update reads from its context: the registry and contextual metric attributes.
 * `Metric.update` hands a metric the fiber's whole context, and a metric with attributes copies
 * that context on every update to add them; a context holding only these two makes the copy
 * cheap and lets each series key be cached. One per (registry, attributes) pair.
 */
const metricsContexts = new WeakMap<object, { readonly attributes: object; readonly context: Context.Context<never> }>()
export const metricsContext = (context: Context.Context<never>): Context.Context<never> => {
  const registry = Context.get(context, Metric.MetricRegistry)
  const attributes = Context.get(context, Metric.CurrentMetricAttributes)
  const cached = metricsContexts.get(registry)
  if (cached !== undefined && cached.attributes === attributes) return cached.context
  const small = Context.make(Metric.MetricRegistry, registry).pipe(Context.add(Metric.CurrentMetricAttributes, attributes))
  metricsContexts.set(registry, { attributes, context: small })
  return small
}

/** `Metric.update` through `metricsContext`. */
const update = <In>(metric: Metric.Metric<In, unknown>, input: In): Effect.Effect<void> =>
  Effect.withFiber((fiber) => {
    metric.updateUnsafe(input, metricsContext(fiber.context))
    return Effect.void
  })

const recordUnsafe = (event: TelemetryEvent, context: Context.Context<never>): void => {
  switch (event._tag) {
    case "MessageQueued":
      metrics.accepted.updateUnsafe(1, context)
      metrics.messageBytes.updateUnsafe(event.size, context)
      metrics.queueDepth.updateUnsafe(event.queueDepth, context)
      return
    case "EnqueueError":
      return withAttrs("enqueueErrors", { reason: event.reason }).updateUnsafe(1, context)
    case "DeliveryResult":
      return withAttrs("deliveries", { outcome: event.outcome, adapter: event.adapter }).updateUnsafe(1, context)
    case "SessionConnect":
      return withAttrs("connections", { listener: event.listener }).updateUnsafe(1, context)
    case "SessionAccepted":
      return
    case "MessageDiscarded":
      return withAttrs("discarded", { rule: event.rule }).updateUnsafe(1, context)
    case "SessionRejected":
      return withAttrs("rejected", {
        listener: event.listener,
        stage: event.stage,
        reason: event.reason,
        code: String(event.code)
      }).updateUnsafe(1, context)
    case "QueueDepth":
      return metrics.queueDepth.updateUnsafe(event.count, context)
    case "WorkerRestarted":
      return metrics.workerRestarts.updateUnsafe(1, context)
    case "PolicyVerdict":
      // Counted by the policy pipeline itself (incoming_policy_verdicts_total).
      return
  }
}

/** A recipient's outcome at RCPT; `domain` must already be bounded (a local domain or `other`). */
export const recordRecipient = (listener: string, domain: string, result: string): Effect.Effect<void> =>
  update(withAttrs("recipients", { listener, domain, result }), 1)

/** `recordRecipient` without an effect, for a hook answering synchronously; `context` from `metricsContext`. */
export const recordRecipientUnsafe = (listener: string, domain: string, result: string, context: Context.Context<never>): void =>
  withAttrs("recipients", { listener, domain, result }).updateUnsafe(1, context)

/** A connection that switched to TLS, from the engine's callback (no effect); `context` from `metricsContext`. */
export const recordTlsUnsafe = (listener: string, version: string, context: Context.Context<never>): void =>
  withAttrs("tlsConnections", { listener, version }).updateUnsafe(1, context)

/** The duration histogram for one SMTP command (seconds). */
export const commandDuration = (command: string) => withAttrs("commandDuration", { command })

export const recordDelivery = (adapter: string, outcome: DeliveryOutcome, seconds: number): Effect.Effect<void> =>
  update(withAttrs("deliveryDuration", { adapter, outcome }), seconds)

/** `recordDelivery` without an effect, for the dispatcher's per-message path; `context` from `metricsContext`. */
export const recordDeliveryUnsafe = (adapter: string, outcome: DeliveryOutcome, seconds: number, context: Context.Context<never>): void =>
  withAttrs("deliveryDuration", { adapter, outcome }).updateUnsafe(seconds, context)

export class Telemetry extends Context.Service<Telemetry, {
  readonly publish: (event: TelemetryEvent) => Effect.Effect<void>
  /** `publish` without an effect, for code answering synchronously; `context` from `metricsContext`. */
  readonly publishUnsafe: (event: TelemetryEvent, context: Context.Context<never>) => void
  /** Every event published after the stream starts. */
  readonly events: Stream.Stream<TelemetryEvent>
  /** A subscription that exists from the moment this effect completes (no race with what follows). */
  readonly subscribe: Effect.Effect<PubSub.Subscription<TelemetryEvent>, never, Scope.Scope>
}>()("incoming/Telemetry") {}

export const make = Effect.fnUntraced(function*(options: { readonly capacity?: number } = {}) {
  const bus = yield* PubSub.sliding<TelemetryEvent>({ capacity: options.capacity ?? 4096 })
  yield* Effect.addFinalizer(() => PubSub.shutdown(bus))
  return Telemetry.of({
    // One step for metrics and event: publish runs several times per message.
    publish: (event) =>
      Effect.withFiber((fiber) => {
        recordUnsafe(event, metricsContext(fiber.context))
        PubSub.publishUnsafe(bus, event)
        return Effect.void
      }),
    publishUnsafe: (event, context) => {
      recordUnsafe(event, context)
      PubSub.publishUnsafe(bus, event)
    },
    events: Stream.fromPubSub(bus),
    subscribe: PubSub.subscribe(bus)
  })
})

export const layer = (options: { readonly capacity?: number } = {}): Layer.Layer<Telemetry> =>
  Layer.effect(Telemetry, make(options))

/** Waits for the first event matching `pred` on a subscription taken earlier. */
export const awaitEvent = <T extends TelemetryEvent>(
  sub: PubSub.Subscription<TelemetryEvent>,
  pred: (e: TelemetryEvent) => e is T
): Effect.Effect<T> =>
  Effect.gen(function*() {
    while (true) {
      const e = yield* PubSub.take(sub)
      if (pred(e)) return e
    }
  })

export const is = <Tag extends TelemetryEventTag>(tag: Tag) => (e: TelemetryEvent): e is Extract<TelemetryEvent, { _tag: Tag }> =>
  e._tag === tag
