/**
 * The dispatcher against the memory queue: retry timing, dead-lettering and TTL driven by
 * `TestClock`; per-recipient outcomes; a dying worker restarted; an interrupted worker giving its
 * lease back; a settle in flight neither holding up the worker nor cut short by a drain.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Option, type PubSub, Ref, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import { DeliveryAdapter } from "../../src/delivery/DeliveryAdapter.ts"
import * as Dispatcher from "../../src/delivery/Dispatcher.ts"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { message } from "../support/fixtures.ts"
import { memoryWith } from "../support/queues.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"

const options: Partial<Dispatcher.DispatcherOptions> = {
  workers: 1,
  maxAttempts: 3,
  backoff: { baseMs: 1_000, maxMs: 60_000, jitter: 0 },
  idlePollMs: 60_000,
  sweepIntervalMs: 1_000,
  leaseMs: 30_000,
  deliveryTimeoutMs: 10_000
}

/** Queue + telemetry visible to the test; the dispatcher built on them with the given adapter. */
const harness = (adapter: Layer.Layer<DeliveryAdapter>, queue = MemoryQueue.layer({ deadLetterTtlMs: 10_000 })) =>
  Dispatcher.layer(options).pipe(
    Layer.provideMerge(Layer.mergeAll(queue, Telemetry.layer(), adapter))
  )

const countingAdapter = (decide: (attempt: number, rcpt: string) => DA.RecipientOutcome) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make(0)
    const layer = Layer.succeed(DeliveryAdapter, DeliveryAdapter.of({
      name: "test",
      deliver: (d) =>
        Effect.as(Ref.update(calls, (n) => n + 1), d.recipients.map((r) => decide(r.attempt, r.rcpt)))
    }))
    return { calls, layer }
  })

const nextResult = (sub: PubSub.Subscription<Telemetry.TelemetryEvent>) =>
  Telemetry.awaitEvent(sub, Telemetry.is("DeliveryResult"))

describe("Dispatcher", () => {
  it.effect("retries with exponential backoff on the clock, then dead-letters, then purges after the TTL", () =>
    Effect.gen(function*() {
      const { calls, layer } = yield* countingAdapter(() => DA.retry("u@example.test", "451 4.2.0 mailbox busy"))
      const ctx = yield* Layer.build(harness(layer))
      const q = Context.get(ctx, MailQueue)
      const qAdmin = Context.get(ctx, QueueAdmin)
      const telemetry = Context.get(ctx, Telemetry.Telemetry)
      const sub = yield* telemetry.subscribe
      const msg = message(["u@example.test"], 0)
      yield* q.commit(msg)

      const first = yield* nextResult(sub)
      assert.strictEqual(first.outcome, "retry")
      const info1 = Option.getOrThrow(yield* qAdmin.get(msg.id))
      assert.strictEqual(info1.state, "retry")
      assert.strictEqual(info1.recipients[0]!.attempts, 1)
      assert.strictEqual(info1.recipients[0]!.nextAttemptAt, 1_000)

      // Nothing happens before the backoff has passed.
      yield* TestClock.adjust(999)
      assert.strictEqual(yield* Ref.get(calls), 1)
      yield* TestClock.adjust(1)
      const second = yield* nextResult(sub)
      assert.strictEqual(second.outcome, "retry")
      assert.strictEqual(Option.getOrThrow(yield* qAdmin.get(msg.id)).recipients[0]!.nextAttemptAt, 1_000 + 2_000)

      yield* TestClock.adjust(1_999)
      assert.strictEqual(yield* Ref.get(calls), 2)
      yield* TestClock.adjust(1)
      const third = yield* nextResult(sub)
      assert.strictEqual(third.outcome, "dead")
      assert.include(third.reason, "gave up after 3 attempts")
      const dead = Option.getOrThrow(yield* qAdmin.get(msg.id))
      assert.strictEqual(dead.state, "dead")
      assert.strictEqual(yield* q.depth, 0)

      // Kept for the TTL (10 s), purged by the janitor afterwards.
      yield* TestClock.adjust(9_000)
      assert.isTrue(Option.isSome(yield* qAdmin.get(msg.id)))
      yield* TestClock.adjust(2_000)
      assert.isTrue(Option.isNone(yield* qAdmin.get(msg.id)))
      assert.strictEqual(yield* Ref.get(calls), 3)
    }))

  it.effect("an adapter reads the stored message through the delivery and through a copy of it", () =>
    Effect.gen(function*() {
      const read = yield* Deferred.make<{ readonly direct: string; readonly copied: string; readonly keys: ReadonlyArray<string> }>()
      const text = (body: DA.Delivery["body"]) =>
        Effect.map(Stream.runCollect(body), (chunks) => Buffer.concat(chunks.map((c) => Buffer.from(c))).toString("utf8"))
      const layer = Layer.succeed(DeliveryAdapter, DeliveryAdapter.of({
        name: "reader",
        deliver: (d) =>
          Effect.gen(function*() {
            // A router or a host adapter passes a copy on: the body must come with it.
            const copy = { ...d, recipients: d.recipients }
            const direct = yield* text(d.body)
            const copied = yield* text(copy.body)
            yield* Deferred.succeed(read, { direct, copied, keys: Object.keys(d) })
            return DA.all(d, (rcpt) => DA.ok(rcpt, "read"))
          }).pipe(Effect.orDie)
      }))
      const ctx = yield* Layer.build(harness(layer))
      const msg = message(["u@example.test"], 0, "Subject: body\r\n\r\nread me\r\n")
      yield* Context.get(ctx, MailQueue).commit(msg)
      const got = yield* Deferred.await(read)
      assert.strictEqual(got.direct, "Received: test\r\nSubject: body\r\n\r\nread me\r\n")
      assert.strictEqual(got.copied, got.direct)
      // What an adapter sees of the attempt is the Delivery, not the queue's lease behind it.
      assert.deepStrictEqual([...got.keys].sort(), ["body", "envelope", "id", "receivedAt", "recipients", "size"])
    }))

  it.effect("records outcomes per recipient: one delivered, one retried, one rejected", () =>
    Effect.gen(function*() {
      const { layer } = yield* countingAdapter((attempt, rcpt) =>
        rcpt.startsWith("ok") || attempt > 1 ? DA.ok(rcpt) : rcpt.startsWith("no") ? DA.reject(rcpt, "550 5.1.1 no such user") : DA.retry(rcpt, "451 later")
      )
      const ctx = yield* Layer.build(harness(layer))
      const q = Context.get(ctx, MailQueue)
      const qAdmin = Context.get(ctx, QueueAdmin)
      const telemetry = Context.get(ctx, Telemetry.Telemetry)
      const sub = yield* telemetry.subscribe
      const msg = message(["ok@example.test", "later@example.test", "no@example.test"], 0)
      yield* q.commit(msg)
      const outcomes = new Map<string, string>()
      for (let i = 0; i < 3; i++) {
        const e = yield* nextResult(sub)
        outcomes.set(e.rcpt, e.outcome)
      }
      assert.deepStrictEqual(Object.fromEntries(outcomes), {
        "ok@example.test": "delivered",
        "later@example.test": "retry",
        "no@example.test": "dead"
      })
      const info = Option.getOrThrow(yield* qAdmin.get(msg.id))
      const states = Object.fromEntries(info.recipients.map((r) => [r.rcpt, r.state]))
      assert.deepStrictEqual(states, { "ok@example.test": "delivered", "later@example.test": "retry", "no@example.test": "dead" })

      // Only the retrying recipient is attempted again.
      yield* TestClock.adjust(1_000)
      const again = yield* nextResult(sub)
      assert.strictEqual(again.rcpt, "later@example.test")
      assert.strictEqual(again.outcome, "delivered")
    }))

  it.effect("a Retry that carries its own maxAttempts (a route's) overrides the dispatcher's limit", () =>
    Effect.gen(function*() {
      // The dispatcher gives up after 3 attempts; the outcome says 5.
      const { layer } = yield* countingAdapter((_attempt, rcpt) => ({ ...DA.retry(rcpt, "451 later"), maxAttempts: 5 }))
      const ctx = yield* Layer.build(harness(layer))
      const q = Context.get(ctx, MailQueue)
      const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe
      yield* q.commit(message(["u@example.test"], 0))
      const outcomes: Array<string> = []
      for (let i = 0; i < 5; i++) {
        if (i > 0) yield* TestClock.adjust(60_000)
        outcomes.push((yield* nextResult(sub)).outcome)
      }
      assert.deepStrictEqual(outcomes, ["retry", "retry", "retry", "retry", "dead"])
    }))

  it.effect("a failing adapter (error or defect) retries every recipient; a permanent error rejects", () =>
    Effect.gen(function*() {
      const mode = yield* Ref.make<"fail" | "die" | "permanent">("fail")
      const adapter = Layer.succeed(DeliveryAdapter, DeliveryAdapter.of({
        name: "flaky",
        deliver: () =>
          Effect.flatMap(Ref.get(mode), (m) =>
            m === "fail"
              ? Effect.fail(new DA.DeliveryError({ reason: { _tag: "Refused", detail: "connection refused" } }))
              : m === "die"
              ? Effect.die(new Error("adapter bug"))
              : Effect.fail(new DA.DeliveryError({ reason: { _tag: "Rejected", reply: "endpoint gone" } })))
      }))
      const ctx = yield* Layer.build(harness(adapter))
      const q = Context.get(ctx, MailQueue)
      const telemetry = Context.get(ctx, Telemetry.Telemetry)
      const sub = yield* telemetry.subscribe
      yield* q.commit(message(["a@example.test"], 0))
      const r1 = yield* nextResult(sub)
      assert.deepStrictEqual([r1.outcome, r1.reason], ["retry", "connection refused"])
      yield* Ref.set(mode, "die")
      yield* TestClock.adjust(1_000)
      const r2 = yield* nextResult(sub)
      assert.strictEqual(r2.outcome, "retry")
      assert.include(r2.reason, "adapter bug")
      yield* Ref.set(mode, "permanent")
      yield* TestClock.adjust(2_000)
      const r3 = yield* nextResult(sub)
      assert.deepStrictEqual([r3.outcome, r3.reason], ["dead", "endpoint gone"])
    }))

  it.live("a worker that dies is restarted and goes on delivering", () =>
    Effect.gen(function*() {
      const delivered = yield* Deferred.make<string>()
      const adapter = Layer.succeed(DeliveryAdapter, DeliveryAdapter.of({
        name: "ok",
        deliver: (d) => Effect.as(Deferred.succeed(delivered, d.id), DA.all(d, (r) => DA.ok(r)))
      }))
      // A queue whose first claim dies, as a storage bug would.
      let claims = 0
      const crashingQueue = memoryWith((q) => ({
          claim: (o) => (++claims === 1 ? Effect.die(new Error("claim exploded")) : q.claim(o))
        }))
      const ctx = yield* Layer.build(harness(adapter, crashingQueue))
      const q = Context.get(ctx, MailQueue)
      const dispatcher = Context.get(ctx, Dispatcher.Dispatcher)
      const msg = message(["a@example.test"], Date.now())
      yield* q.commit(msg)
      assert.strictEqual(yield* Deferred.await(delivered).pipe(Effect.timeout("5 seconds")), msg.id)
      assert.strictEqual(yield* dispatcher.restarts, 1)
      assert.isAtLeast(claims, 2)
    }))

  it.live("interrupting a worker mid-delivery returns the message to the queue", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const adapter = Layer.succeed(DeliveryAdapter, DeliveryAdapter.of({
        name: "stuck",
        deliver: () => Effect.andThen(Deferred.succeed(started, undefined), Effect.never)
      }))
      const queueCtx = yield* Layer.build(Layer.mergeAll(MemoryQueue.layer(), Telemetry.layer(), adapter))
      const q = Context.get(queueCtx, MailQueue)
      const qAdmin = Context.get(queueCtx, QueueAdmin)
      const msg = message(["a@example.test"], Date.now())
      yield* q.commit(msg)

      const scope = yield* Scope.make()
      // A short drain: with a memory queue the dispatcher first tries to deliver the backlog.
      yield* Layer.buildWithScope(
        Dispatcher.layer({ ...options, drainTimeoutMs: 100 }).pipe(Layer.provide(Layer.succeedContext(queueCtx))),
        scope
      )
      yield* Deferred.await(started)
      assert.strictEqual(Option.getOrThrow(yield* qAdmin.get(msg.id)).state, "inflight")
      yield* Scope.close(scope, Exit.void)

      const info = Option.getOrThrow(yield* qAdmin.get(msg.id))
      assert.strictEqual(info.state, "queued")
      assert.strictEqual(info.recipients[0]!.attempts, 0, "a released lease does not count as an attempt")
      assert.isTrue(Option.isSome(yield* q.claim({ owner: "next", leaseMs: 1_000 })))
    }))

  it.live("a worker delivers its next message while a settle is still being written; a drain waits for the settle", () =>
    Effect.gen(function*() {
      const delivered: Array<string> = []
      const adapter = Layer.succeed(DeliveryAdapter, DeliveryAdapter.of({
        name: "ok",
        deliver: (d) => Effect.as(Effect.sync(() => delivered.push(d.id)), DA.all(d, (r) => DA.ok(r)))
      }))
      // The first settle hangs until released, as one waiting for a slow write batch would.
      const gate = yield* Deferred.make<void>()
      let settles = 0
      const slowSettle = memoryWith((q) => ({ settle: (lease, s) => (++settles === 1 ? Effect.andThen(Deferred.await(gate), q.settle(lease, s)) : q.settle(lease, s)) }))
      const queueCtx = yield* Layer.build(Layer.mergeAll(slowSettle, Telemetry.layer(), adapter))
      const q = Context.get(queueCtx, MailQueue)
      const qAdmin = Context.get(queueCtx, QueueAdmin)
      const sub = yield* Context.get(queueCtx, Telemetry.Telemetry).subscribe
      const first = message(["a@example.test"], Date.now() - 1)
      const second = message(["b@example.test"], Date.now())
      yield* q.commit(first)
      yield* q.commit(second)

      const scope = yield* Scope.make()
      // One worker: before, it waited for the first settle and delivered nothing else meanwhile.
      yield* Layer.buildWithScope(Dispatcher.layer(options).pipe(Layer.provide(Layer.succeedContext(queueCtx))), scope)
      const result = yield* Telemetry.awaitEvent(sub, Telemetry.is("DeliveryResult")).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(result.id, second.id, "the second message is delivered and settled first")
      assert.deepStrictEqual(delivered, [first.id, second.id])
      assert.strictEqual(Option.getOrThrow(yield* qAdmin.get(first.id)).state, "inflight", "the first is leased until its settle lands")
      assert.strictEqual(yield* q.depth, 1)

      // Closing the dispatcher while the settle waits: the drain lets it finish, nothing is released.
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* Effect.sleep(50)
      assert.isUndefined(closing.pollUnsafe(), "the drain waits for the settle in flight")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(closing)
      assert.strictEqual(yield* q.depth, 0, "the first message was settled as delivered, not handed back")
      assert.isTrue(Option.isNone(yield* qAdmin.get(first.id)))
    }))
})
