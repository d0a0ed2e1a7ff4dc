/**
 * Metrics that are states rather than events — queue contents by state, open connections per
 * listener, readiness, process memory — sampled when Prometheus scrapes `/metrics`, so they
 * are exact at scrape time and cost nothing in between. The event counters (messages accepted,
 * replies rejected, delivery results...) live in `Telemetry.ts`, updated on the data path.
 */
import { Effect, Metric } from "effect"
import * as Priority from "../protocol/Priority.ts"
import type { RecipientState } from "../queue/MailQueue.ts"
import type { QueueAdmin } from "../queue/QueueAdmin.ts"
import type { Listeners } from "../smtp/Listener.ts"
import { metrics as eventMetrics, version } from "../telemetry/Telemetry.ts"

export const sampled = {
  queueRecipients: Metric.gauge("incoming_queue_recipients", { description: "recipients in the queue by state (sampled at scrape)" }),
  queueMessages: Metric.gauge("incoming_queue_messages", { description: "messages stored in the queue, delivered ones included until purged (sampled at scrape)" }),
  queueDepthByPriority: Metric.gauge("incoming_queue_depth_by_priority", {
    description: "pending messages by effective priority: critical (9), high (1..8), normal (0, and aged low), low (-9..-1) (sampled at scrape)"
  }),
  connectionsActive: Metric.gauge("incoming_connections_active", { description: "open SMTP connections per listener (sampled at scrape)" }),
  ready: Metric.gauge("incoming_ready", { description: "1 when /readyz would answer 200" }),
  draining: Metric.gauge("incoming_draining", { description: "1 while the listeners drain (shutdown in progress)" }),
  residentMemory: Metric.gauge("incoming_process_resident_memory_bytes", { description: "resident set size of the process" }),
  heapUsed: Metric.gauge("incoming_process_heap_used_bytes", { description: "V8 heap in use" }),
  startTime: Metric.gauge("incoming_process_start_time_seconds", { description: "process start, seconds since the epoch" }),
  buildInfo: Metric.gauge("incoming_build_info", { description: "always 1; the version is a label" })
}

const states: ReadonlyArray<RecipientState> = ["queued", "inflight", "retry", "delivered", "dead"]

/**
 * The `priority` label of `incoming_queue_depth_by_priority`: the four named levels, each taking
 * the levels nearest it (a client's MT-PRIORITY may be any of -9..9), so dashboards and alerts
 * see four series that always exist instead of nineteen mostly empty ones. `queue stats` shows
 * the exact levels.
 */
export type PriorityBucket = "critical" | "high" | "normal" | "low"
const buckets: ReadonlyArray<PriorityBucket> = ["critical", "high", "normal", "low"]
export const priorityBucket = (priority: number): PriorityBucket =>
  priority >= Priority.max ? "critical" : priority > Priority.normal ? "high" : priority === Priority.normal ? "normal" : "low"

const startedAt = Date.now() / 1000 - process.uptime()

/** Updates every sampled metric; a queue that does not answer leaves the queue gauges as they were. */
export const sample = (options: {
  readonly queue: QueueAdmin["Service"]
  readonly listeners: Listeners["Service"] | undefined
  readonly ready: boolean
  readonly draining: boolean
}): Effect.Effect<void> =>
  Effect.gen(function*() {
    const stats = yield* options.queue.stats.pipe(Effect.timeoutOption(1000), Effect.orElseSucceed(() => undefined))
    if (stats !== undefined && stats._tag === "Some") {
      for (const state of states) {
        yield* Metric.update(sampled.queueRecipients.pipe(Metric.withAttributes({ state })), stats.value.recipients[state])
      }
      yield* Metric.update(sampled.queueMessages, stats.value.messages)
      yield* Metric.update(eventMetrics.queueDepth, stats.value.depth)
      // Every bucket is set, empty ones to 0, so a level that drains reads 0 rather than its last count.
      const byBucket = new Map<PriorityBucket, number>(buckets.map((b) => [b, 0]))
      for (const p of stats.value.byPriority) {
        const bucket = priorityBucket(p.priority)
        byBucket.set(bucket, (byBucket.get(bucket) ?? 0) + p.messages)
      }
      for (const [priority, n] of byBucket) yield* Metric.update(sampled.queueDepthByPriority.pipe(Metric.withAttributes({ priority })), n)
    }
    for (const l of options.listeners?.all ?? []) {
      yield* Metric.update(sampled.connectionsActive.pipe(Metric.withAttributes({ listener: l.name })), yield* l.connections)
      // A counter appears in the output only once updated; adding 0 makes it a 0 series from
      // the first scrape, so rate() and dashboards work before the first event.
      yield* Metric.update(eventMetrics.connections.pipe(Metric.withAttributes({ listener: l.name })), 0)
    }
    yield* Metric.update(eventMetrics.accepted, 0)
    yield* Metric.update(eventMetrics.workerRestarts, 0)
    const memory = process.memoryUsage()
    yield* Metric.update(sampled.residentMemory, memory.rss)
    yield* Metric.update(sampled.heapUsed, memory.heapUsed)
    yield* Metric.update(sampled.startTime, Math.round(startedAt))
    yield* Metric.update(sampled.buildInfo.pipe(Metric.withAttributes({ version })), 1)
    yield* Metric.update(sampled.ready, options.ready ? 1 : 0)
    yield* Metric.update(sampled.draining, options.draining ? 1 : 0)
  })
