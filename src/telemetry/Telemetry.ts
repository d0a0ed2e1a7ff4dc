/**
 * The typed event stream of Incoming and the metrics derived from it.
 *
 * Every box on the data path publishes here; host apps subscribe as a `Stream`. Publishing never
 * blocks the SMTP hot path: the PubSub is sliding, so a slow subscriber loses the oldest events
 * rather than slowing a session down. Metrics are updated in the same call, so events and
 * metrics cannot disagree.
 */
import { Context, Effect, Layer, Metric, PubSub, type Scope, Stream } from "effect"

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
  }

export type TelemetryEventTag = TelemetryEvent["_tag"]

export const metrics = {
  connections: Metric.counter("incoming_connections_total", { description: "SMTP connections accepted", incremental: true }),
  accepted: Metric.counter("incoming_messages_accepted_total", { description: "messages queued (250 sent)", incremental: true }),
  rejected: Metric.counter("incoming_replies_rejected_total", { description: "transactions or commands refused", incremental: true }),
  enqueueErrors: Metric.counter("incoming_enqueue_errors_total", { description: "commits that failed", incremental: true }),
  deliveries: Metric.counter("incoming_delivery_results_total", { description: "per-recipient delivery outcomes", incremental: true }),
  workerRestarts: Metric.counter("incoming_worker_restarts_total", { description: "delivery workers restarted", incremental: true }),
  queueDepth: Metric.gauge("incoming_queue_depth", { description: "messages not yet delivered or dead" }),
  messageBytes: Metric.histogram("incoming_message_bytes", {
    description: "accepted message sizes",
    // 1 KiB … 64 MiB: large messages get buckets of their own instead of +Inf.
    boundaries: Metric.exponentialBoundaries({ start: 1024, factor: 4, count: 9 })
  }),
  recipients: Metric.counter("incoming_recipients_total", {
    description: "RCPT outcomes by listener, recipient domain (a local domain, or `other`) and result",
    incremental: true
  }),
  tlsConnections: Metric.counter("incoming_tls_connections_total", {
    description: "connections that completed TLS (implicit or STARTTLS) by listener and protocol version",
    incremental: true
  }),
  commandDuration: Metric.histogram("incoming_command_duration_seconds", {
    description: "time our MAIL, RCPT and DATA handling took (DATA: from the 354 to the reply)",
    boundaries: Metric.exponentialBoundaries({ start: 0.0005, factor: 4, count: 9 })
  }),
  deliveryDuration: Metric.histogram("incoming_delivery_duration_seconds", {
    description: "delivery attempts by adapter (a router's route adapter) and recipient outcome",
    boundaries: Metric.exponentialBoundaries({ start: 0.001, factor: 4, count: 9 })
  })
}

// Metrics with attributes are built once per attribute set: `withAttributes` on every event
// would rebuild the metric key on the hot path. The cache is a tree keyed by the metric's name,
// then by each attribute value in order, so a lookup allocates nothing (callers pass their
// attributes in a fixed order per name).
interface AttrNode {
  metric: Metric.Metric<number, unknown> | undefined
  readonly next: Map<string, AttrNode>
}
const attributed = new Map<string, AttrNode>()
const withAttrs = <M extends Metric.Metric<number, unknown>>(metric: M, name: string, attrs: Record<string, string>): M => {
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
  node.metric ??= metric.pipe(Metric.withAttributes(attrs))
  return node.metric as M
}

const record = (event: TelemetryEvent): Effect.Effect<void> => {
  switch (event._tag) {
    case "MessageQueued":
      return Effect.andThen(
        Metric.update(metrics.accepted, 1),
        Effect.andThen(Metric.update(metrics.messageBytes, event.size), Metric.update(metrics.queueDepth, event.queueDepth))
      )
    case "EnqueueError":
      return Metric.update(withAttrs(metrics.enqueueErrors, "enqueue", { reason: event.reason }), 1)
    case "DeliveryResult":
      return Metric.update(withAttrs(metrics.deliveries, "delivery", { outcome: event.outcome, adapter: event.adapter }), 1)
    case "SessionConnect":
      return Metric.update(withAttrs(metrics.connections, "connections", { listener: event.listener }), 1)
    case "SessionAccepted":
      return Effect.void
    case "SessionRejected":
      return Metric.update(
        withAttrs(metrics.rejected, "rejected", {
          listener: event.listener,
          stage: event.stage,
          reason: event.reason,
          code: String(event.code)
        }),
        1
      )
    case "QueueDepth":
      return Metric.update(metrics.queueDepth, event.count)
    case "WorkerRestarted":
      return Metric.update(metrics.workerRestarts, 1)
    case "PolicyVerdict":
      // Counted by the policy pipeline itself (incoming_policy_verdicts_total).
      return Effect.void
  }
}

/** A recipient's outcome at RCPT; `domain` must already be bounded (a local domain or `other`). */
export const recordRecipient = (listener: string, domain: string, result: string): Effect.Effect<void> =>
  Metric.update(withAttrs(metrics.recipients, "rcpt", { listener, domain, result }), 1)

export const recordTls = (listener: string, version: string): Effect.Effect<void> =>
  Metric.update(withAttrs(metrics.tlsConnections, "tls", { listener, version }), 1)

/** The duration histogram for one SMTP command (seconds). */
export const commandDuration = (command: string) => withAttrs(metrics.commandDuration, "command", { command })

export const recordDelivery = (adapter: string, outcome: DeliveryOutcome, seconds: number): Effect.Effect<void> =>
  Metric.update(withAttrs(metrics.deliveryDuration, "delivery-duration", { adapter, outcome }), seconds)

export class Telemetry extends Context.Service<Telemetry, {
  readonly publish: (event: TelemetryEvent) => Effect.Effect<void>
  /** Every event published after the stream starts. */
  readonly events: Stream.Stream<TelemetryEvent>
  /** A subscription that exists from the moment this effect completes (no race with what follows). */
  readonly subscribe: Effect.Effect<PubSub.Subscription<TelemetryEvent>, never, Scope.Scope>
}>()("incoming/Telemetry") {}

export const make = Effect.fnUntraced(function*(options: { readonly capacity?: number } = {}) {
  const bus = yield* PubSub.sliding<TelemetryEvent>({ capacity: options.capacity ?? 4096 })
  yield* Effect.addFinalizer(() => PubSub.shutdown(bus))
  return Telemetry.of({
    publish: (event) => Effect.andThen(record(event), Effect.sync(() => void PubSub.publishUnsafe(bus, event))),
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
