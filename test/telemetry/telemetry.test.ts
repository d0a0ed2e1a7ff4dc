/**
 * The event stream and metrics on the data path: connect/accept/queued for a good message,
 * rejected with the reason for a refused recipient, an enqueue error (and a 451, not a 5xx)
 * when the queue fails a commit; log lines carry session and message ids.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Logger, Metric, References } from "effect"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import { MailQueueError } from "../../src/queue/MailQueueError.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { memoryWith } from "../support/queues.ts"

describe("Telemetry", () => {
  it.live("publishes connect, queued, accepted and rejected events with their fields", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(TestIncoming.layer())
      const port = Context.get(ctx, Listeners).all[0]!.port
      const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe

      const ok = yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: "Subject: t\r\n\r\nx\r\n" })
      const id = /queued as (\w+)/.exec(ok.text)![1]!
      const connect = yield* Telemetry.awaitEvent(sub, Telemetry.is("SessionConnect"))
      assert.strictEqual(connect.peer, "127.0.0.1")
      const queued = yield* Telemetry.awaitEvent(sub, Telemetry.is("MessageQueued"))
      assert.strictEqual(queued.id, id)
      assert.isAbove(queued.size, 10)
      assert.strictEqual(queued.queueDepth, 1)
      assert.strictEqual((yield* Telemetry.awaitEvent(sub, Telemetry.is("SessionAccepted"))).id, id)

      const refused = yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@elsewhere.test"], data: "x" })
      assert.strictEqual(refused.code, 554)
      const rejected = yield* Telemetry.awaitEvent(sub, Telemetry.is("SessionRejected"))
      assert.deepStrictEqual([rejected.stage, rejected.reason, rejected.code], ["rcpt", "relay_denied", 554])

      const accepted = yield* Metric.value(Telemetry.metrics.accepted)
      assert.isAtLeast(accepted.count, 1)
      // Recipients by domain: ours by name, anything else as "other" (bounded label values).
      const rcpts = (domain: string, result: string) =>
        Metric.value(Telemetry.metrics.recipients.pipe(Metric.withAttributes({ listener: "test", domain, result })))
      assert.isAtLeast((yield* rcpts("example.test", "accepted")).count, 1)
      assert.isAtLeast((yield* rcpts("other", "relay_denied")).count, 1)
      const mailDuration = yield* Metric.value(Telemetry.commandDuration("MAIL"))
      assert.isAtLeast(mailDuration.count, 2)
    }))

  it.live("a failing commit answers 451 4.3.0, publishes EnqueueError and keeps nothing", () =>
    Effect.gen(function*() {
      const failing = memoryWith(() => ({
          commit: () => Effect.fail(new MailQueueError({ reason: { _tag: "StorageFailed", detail: "disk on fire" } }))
        }))
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({ queue: { kind: "custom", layer: failing } }).pipe(Layer.provideMerge(CapturingAdapter.layer))
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe
      const reply = yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: "Subject: t\r\n\r\nbody\r\n" })
      assert.strictEqual(reply.code, 451)
      assert.match(reply.text, /^4\.3\.0 /)
      const err = yield* Telemetry.awaitEvent(sub, Telemetry.is("EnqueueError"))
      assert.strictEqual(err.reason, "StorageFailed", "a bounded key, fit for a metric label")
      assert.include(err.detail, "451 4.3.0")
      assert.include(err.detail, "disk on fire")
      assert.isAbove(err.attemptedSize ?? 0, 0)
      assert.strictEqual(yield* Context.get(ctx, MailQueue).depth, 0)
    }))

  it.live("log lines about a message carry its session and message ids", () =>
    Effect.gen(function*() {
      const lines: Array<{ message: unknown; annotations: Record<string, unknown> }> = []
      const collector = Logger.make<unknown, void>(({ message, fiber }) => {
        lines.push({ message, annotations: Object.fromEntries(Object.entries(fiber.getRef(References.CurrentLogAnnotations))) })
      })
      const ctx = yield* Layer.build(
        TestIncoming.layer().pipe(
          Layer.provide(Logger.layer([collector], { mergeWithExisting: false })),
          Layer.provide(Layer.succeed(References.MinimumLogLevel, "Debug"))
        )
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const ok = yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: "x\r\n" })
      const id = /queued as (\w+)/.exec(ok.text)![1]!
      const queuedLine = lines.find((l) => String(l.message).includes("message queued"))
      assert.isDefined(queuedLine, JSON.stringify(lines.map((l) => l.message)))
      assert.strictEqual(queuedLine!.annotations["message"], id)
      assert.isString(queuedLine!.annotations["session"])
      assert.strictEqual(queuedLine!.annotations["listener"], "test")
    }))
})
