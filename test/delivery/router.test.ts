/**
 * The router: route choice per recipient (exact, +tag, *@domain, catch-all, host-app decision),
 * a message split into concurrent per-route deliveries whose outcomes are merged, per-route
 * retry schedules and attempt limits on the `TestClock` (through the real dispatcher and memory
 * queue), per-route concurrency limits and deadlines, and broken configurations refused.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Option, type PubSub, Ref, Result, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as Dispatcher from "../../src/delivery/Dispatcher.ts"
import * as LmtpAdapter from "../../src/delivery/LmtpAdapter.ts"
import * as Router from "../../src/delivery/Router.ts"
import * as SmtpRelayAdapter from "../../src/delivery/SmtpRelayAdapter.ts"
import * as WebhookAdapter from "../../src/delivery/webhook/WebhookAdapter.ts"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { envelope, message } from "../support/fixtures.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"

const delivery = (recipients: ReadonlyArray<string | readonly [string, number]>): DA.Delivery => {
  const list = recipients.map((r) => (typeof r === "string" ? { rcpt: r, attempt: 1 } : { rcpt: r[0], attempt: r[1] }))
  return {
    id: "01ROUTERTEST0001",
    envelope: envelope(list.map((r) => r.rcpt)),
    receivedAt: 0,
    recipients: list,
    size: 20,
    body: DA.bodyStream(() => BodyStream.fromParts("Received: x\r\n", [Buffer.from("Subject: s\r\n\r\nhi\r\n")]))
  }
}

/** An adapter that records the recipients of each call and answers with `decide`. */
const recording = (name: string, decide: (rcpt: string, attempt: number) => DA.RecipientOutcome = (r) => DA.ok(r, `${name} ok`)) => {
  const calls: Array<ReadonlyArray<string>> = []
  const adapter = DA.DeliveryAdapter.of({
    name,
    deliver: (d) =>
      Effect.sync(() => {
        calls.push(d.recipients.map((r) => r.rcpt))
        return d.recipients.map((r) => decide(r.rcpt, r.attempt))
      })
  })
  return { adapter, calls }
}

const table = (routes: ReadonlyArray<Router.RouteOptions>, options?: Router.TableOptions) => {
  const compiled = Router.compile(routes, options)
  if (Result.isFailure(compiled)) throw compiled.failure
  return compiled.success
}

const tags = (outcomes: ReadonlyArray<DA.RecipientOutcome>) => Object.fromEntries(outcomes.map((o) => [o.rcpt, o._tag]))

describe("Router", () => {
  it.effect("a quarantined message goes to the quarantine route, whatever its recipients; others route as usual", () =>
    Effect.gen(function*() {
      const inbox = recording("inbox")
      const held = recording("held")
      const { adapter } = yield* Router.make({
        adapters: { inbox: inbox.adapter, held: held.adapter },
        routes: [
          { name: "all", match: ["*"], adapter: "inbox" },
          { name: "quarantine", match: [], adapter: "held", quarantine: true }
        ]
      })
      const plain = delivery(["a@example.test", "b@example.test"])
      yield* adapter.deliver(plain)
      yield* adapter.deliver({ ...plain, envelope: { ...plain.envelope, quarantine: { rule: "dmarc", reason: "p=quarantine" } } })
      assert.deepStrictEqual(inbox.calls, [["a@example.test", "b@example.test"]])
      assert.deepStrictEqual(held.calls, [["a@example.test", "b@example.test"]])
      // Two routes taking quarantined mail are refused.
      const twice = Router.compile([
        { name: "q1", match: [], adapter: "a", quarantine: true },
        { name: "q2", match: [], adapter: "a", quarantine: true }
      ])
      assert.isTrue(Result.isFailure(twice))
    }))

  it("routeFor: exact address, +tag, *@domain, catch-all, case-insensitive; acknowledge per route", () => {
    const t = table([
      { name: "sales", match: ["sales@example.test"], adapter: "a", acknowledge: "sync" },
      { name: "vip-q3", match: ["sales+vip@example.test"], adapter: "a" },
      { name: "example", match: ["*@example.test"], adapter: "b" },
      { name: "other", match: ["@other.test"], adapter: "b" },
      { name: "rest", match: ["*"], adapter: "c" }
    ])
    const route = (rcpt: string) => Router.routeFor(t, rcpt)?.name
    assert.strictEqual(route("sales@example.test"), "sales")
    assert.strictEqual(route("sales+q3@example.test"), "sales", "a +tag address follows the untagged route")
    assert.strictEqual(route("Sales+Q3@EXAMPLE.test"), "sales")
    assert.strictEqual(route("sales+vip@example.test"), "vip-q3", "an exact tagged pattern wins over the untagged one")
    assert.strictEqual(route("bob@example.test"), "example")
    assert.strictEqual(route("bob+sales@example.test"), "example")
    assert.strictEqual(route("x@other.test"), "other")
    assert.strictEqual(route("x@sub.example.test"), "rest", "*@domain does not match subdomains")
    assert.strictEqual(route("postmaster"), "rest")
    assert.strictEqual(Router.acknowledgementFor(t, "sales+x@example.test"), "sync")
    assert.strictEqual(Router.acknowledgementFor(t, "bob@example.test"), "durable")

    const noTags = table([{ name: "sales", match: ["sales@example.test"], adapter: "a" }], { tagSeparator: false })
    assert.isUndefined(Router.routeFor(noTags, "sales+q3@example.test"))
    const dash = table([{ name: "sales", match: ["sales@example.test"], adapter: "a" }], { tagSeparator: "-" })
    assert.strictEqual(Router.routeFor(dash, "sales-q3@example.test")?.name, "sales")
    assert.isUndefined(Router.routeFor(dash, "x@nowhere.test"), "no catch-all: no route")
  })

  it.effect("refuses ambiguous or malformed configuration", () =>
    Effect.gen(function*() {
      const reasonOf = (routes: ReadonlyArray<Router.RouteOptions>) => {
        const r = Router.compile(routes)
        return Result.isFailure(r) ? r.failure.problem : "accepted"
      }
      assert.include(reasonOf([{ name: "a", match: ["*@x.test"], adapter: "a" }, { name: "b", match: ["*@X.test"], adapter: "a" }]), "already matched by route \"a\"")
      assert.include(reasonOf([{ name: "a", match: ["*"], adapter: "a" }, { name: "b", match: ["*"], adapter: "a" }]), "both catch-alls")
      assert.include(reasonOf([{ name: "a", match: ["a*b@x.test"], adapter: "a" }]), "bad pattern")
      assert.include(reasonOf([{ name: "a", match: [], adapter: "a" }, { name: "a", match: [], adapter: "a" }]), "two routes are named")
      assert.include(reasonOf([{ name: "a", match: [], adapter: "a", maxAttempts: 0 }]), "maxAttempts")
      assert.include(reasonOf([{ name: "a", match: [], adapter: "a", retry: { kind: "delays", delaysMs: [] } }]), "delaysMs")
      assert.include(reasonOf([{ name: "a", match: [], adapter: "a", concurrency: 0 }]), "concurrency")
      // The reason is data a tool can match on, not only text.
      const conflict = Router.compile([{ name: "a", match: ["*@x.test"], adapter: "a" }, { name: "b", match: ["*@X.test"], adapter: "a" }])
      assert.deepStrictEqual(Result.isFailure(conflict) ? conflict.failure.reason : undefined, { _tag: "Conflict", route: "b", pattern: "*@X.test", owner: "a" })
      const invalid = Router.compile([{ name: "a", match: [], adapter: "a", maxAttempts: 0 }])
      assert.strictEqual(Result.isFailure(invalid) ? invalid.failure.reason._tag : undefined, "InvalidRoute")

      const routes: ReadonlyArray<Router.RouteOptions> = [{ name: "a", match: ["*"], adapter: "missing" }]
      // As a configuration file gives them: adapter names are plain strings, checked when the router is built.
      const adapters: Readonly<Record<string, DA.DeliveryAdapter["Service"]>> = { present: recording("p").adapter }
      const error = yield* Router.make({ adapters, routes }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "RouterError")
      assert.include(error.message, "adapter \"missing\"")
      assert.deepStrictEqual(error.reason, { _tag: "UnknownAdapter", route: "a", adapter: "missing" })
    }))

  it.live("splits a message per route, runs the routes concurrently and merges per-recipient outcomes", () =>
    Effect.gen(function*() {
      // Route A waits until route B has started: this only succeeds if they run at the same time
      // (run one after the other, A would time out and its recipients would be retried).
      const bStarted = yield* Deferred.make<void>()
      const aCalls: Array<ReadonlyArray<string>> = []
      const a = DA.DeliveryAdapter.of({
        name: "a",
        deliver: (d) =>
          Effect.gen(function*() {
            aCalls.push(d.recipients.map((r) => r.rcpt))
            yield* Deferred.await(bStarted).pipe(Effect.timeout("1 second"), Effect.orDie)
            return d.recipients.map((r) => DA.ok(r.rcpt, "a ok"))
          })
      })
      const bCalls: Array<ReadonlyArray<string>> = []
      const b = DA.DeliveryAdapter.of({
        name: "b",
        deliver: (d) =>
          Effect.gen(function*() {
            bCalls.push(d.recipients.map((r) => r.rcpt))
            yield* Deferred.succeed(bStarted, undefined)
            return d.recipients.map((r) => DA.retry(r.rcpt, "451 4.2.0 busy"))
          })
      })
      const { adapter } = yield* Router.make({
        adapters: { a, b },
        routes: [{ name: "one", match: ["*@one.test"], adapter: "a" }, { name: "two", match: ["*@two.test"], adapter: "b" }]
      })
      const out = yield* adapter.deliver(delivery(["x@one.test", "y@two.test", "z@one.test"]))
      assert.deepStrictEqual(aCalls, [["x@one.test", "z@one.test"]])
      assert.deepStrictEqual(bCalls, [["y@two.test"]])
      assert.deepStrictEqual(tags(out), { "x@one.test": "Ok", "z@one.test": "Ok", "y@two.test": "Retry" })
      assert.deepStrictEqual(out.find((o) => o.rcpt === "y@two.test"), { _tag: "Retry", rcpt: "y@two.test", reason: "451 4.2.0 busy", at: undefined, maxAttempts: undefined, via: "b" })
    }))

  it.effect("the host app's decision comes first; undefined falls back to the table; unknown routes and unrouted recipients retry", () =>
    Effect.gen(function*() {
      const a = recording("a")
      const b = recording("b")
      const { adapter } = yield* Router.make({
        adapters: { a: a.adapter, b: b.adapter },
        routes: [{ name: "app", match: [], adapter: "a" }, { name: "table", match: ["*@example.test"], adapter: "b" }],
        decide: (rcpt) =>
          Effect.succeed(rcpt.startsWith("vip") ? "app" : rcpt.startsWith("typo") ? "nope" : undefined)
      })
      const out = yield* adapter.deliver(delivery(["vip@example.test", "bob@example.test", "typo@example.test", "x@elsewhere.test"]))
      assert.deepStrictEqual(a.calls, [["vip@example.test"]])
      assert.deepStrictEqual(b.calls, [["bob@example.test"]])
      assert.deepStrictEqual(tags(out), {
        "vip@example.test": "Ok",
        "bob@example.test": "Ok",
        "typo@example.test": "Retry",
        "x@elsewhere.test": "Retry"
      })
      const reasons = Object.fromEntries(out.map((o) => [o.rcpt, o._tag === "Ok" ? o.reply : o.reason]))
      assert.include(reasons["typo@example.test"], "route \"nope\", which does not exist")
      assert.include(reasons["x@elsewhere.test"], "no route for x@elsewhere.test")

      const strict = yield* Router.make({ adapters: { a: a.adapter }, routes: [{ name: "r", match: ["a@x.test"], adapter: "a" }], unrouted: "reject" })
      const rejected = yield* strict.adapter.deliver(delivery(["b@x.test"]))
      assert.deepStrictEqual(tags(rejected), { "b@x.test": "Reject" })
    }))

  it.effect("delivers off-site only where the recipient's route leads to an adapter that does (SMTP relay); with decide, where any does", () =>
    Effect.gen(function*() {
      const local = recording("local").adapter
      const upstream = SmtpRelayAdapter.make({ name: "upstream", host: "127.0.0.1", port: 1 })
      assert.isTrue(upstream.deliversOffSite?.("x@anywhere.test"))
      assert.isUndefined(local.deliversOffSite, "an adapter that says nothing delivers locally")
      const { adapter } = yield* Router.make({
        adapters: { local, upstream },
        routes: [{ name: "ours", match: ["*@example.test"], adapter: "local" }, { name: "partner", match: ["*@partner.test"], adapter: "upstream" }]
      })
      assert.isTrue(adapter.deliversOffSite?.("x@partner.test"))
      assert.isFalse(adapter.deliversOffSite?.("x@gmail.test"), "no route: nowhere to go")
      assert.isFalse(adapter.deliversOffSite?.("bob@example.test"))
      const decided = yield* Router.make({
        adapters: { local, upstream },
        routes: [{ name: "ours", match: ["*@example.test"], adapter: "local" }, { name: "out", match: [], adapter: "upstream" }],
        decide: () => Effect.succeed(undefined)
      })
      assert.isTrue(decided.adapter.deliversOffSite?.("x@gmail.test"), "the host app may choose the relay route")
      const localOnly = yield* Router.make({ adapters: { local }, routes: [{ name: "all", match: ["*"], adapter: "local" }], decide: () => Effect.succeed(undefined) })
      assert.isFalse(localOnly.adapter.deliversOffSite?.("x@gmail.test"))
    }))

  it.effect("a route's failure, defect or deadline stays on that route", () =>
    Effect.gen(function*() {
      const ok = recording("ok")
      const failing = DA.DeliveryAdapter.of({
        name: "failing",
        deliver: () => Effect.fail(new DA.DeliveryError({ reason: { _tag: "Rejected", reply: "endpoint gone" } }))
      })
      const dying = DA.DeliveryAdapter.of({ name: "dying", deliver: () => Effect.die(new Error("adapter bug")) })
      const slow = DA.DeliveryAdapter.of({ name: "slow", deliver: () => Effect.never })
      const { adapter } = yield* Router.make({
        adapters: { ok: ok.adapter, failing, dying, slow },
        routes: [
          { name: "ok", match: ["*@ok.test"], adapter: "ok" },
          { name: "failing", match: ["*@failing.test"], adapter: "failing" },
          { name: "dying", match: ["*@dying.test"], adapter: "dying" },
          { name: "slow", match: ["*@slow.test"], adapter: "slow", timeoutMs: 1_000 }
        ]
      })
      const fiber = yield* adapter.deliver(delivery(["a@ok.test", "b@failing.test", "c@dying.test", "d@slow.test"])).pipe(Effect.forkChild)
      yield* TestClock.adjust(1_000)
      const out = yield* Fiber.join(fiber)
      assert.deepStrictEqual(tags(out), { "a@ok.test": "Ok", "b@failing.test": "Reject", "c@dying.test": "Retry", "d@slow.test": "Retry" })
      const reasons = Object.fromEntries(out.map((o) => [o.rcpt, o._tag === "Ok" ? o.reply : o.reason]))
      assert.strictEqual(reasons["b@failing.test"], "endpoint gone")
      assert.include(reasons["c@dying.test"], "adapter bug")
      assert.include(reasons["d@slow.test"], "route \"slow\" timed out after 1000 ms")
    }))

  it.effect("retry schedules: a list of delays (last repeats) or exponential with a cap; maxAttempts rejects; an adapter's own `at` wins", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual([1, 2, 3, 4].map((n) => Router.nominalDelay({ kind: "delays", delaysMs: [1_000, 5_000, 60_000] }, n)), [1_000, 5_000, 60_000, 60_000])
      assert.deepStrictEqual(
        [1, 2, 3, 4, 5].map((n) => Router.nominalDelay({ kind: "exponential", baseMs: 1_000, maxMs: 5_000 }, n)),
        [1_000, 2_000, 4_000, 5_000, 5_000]
      )
      assert.deepStrictEqual(
        [1, 2, 3].map((n) => Router.nominalDelay({ kind: "exponential", baseMs: 100, maxMs: 100_000, factor: 10 }, n)),
        [100, 1_000, 10_000]
      )

      let at: number | undefined
      const flaky = recording("flaky", (rcpt) => DA.retry(rcpt, "451 later", at))
      const { adapter } = yield* Router.make({
        adapters: { flaky: flaky.adapter },
        routes: [{ name: "r", match: ["*"], adapter: "flaky", retry: { kind: "exponential", baseMs: 1_000, maxMs: 3_000 }, maxAttempts: 4 }]
      })
      yield* TestClock.setTime(10_000)
      const outcome = (attempt: number) => Effect.map(adapter.deliver(delivery([["u@x.test", attempt]])), (o) => o[0]!)
      // The route's limit travels with each retry, so the dispatcher's own limit cannot cut it short.
      const retried = (when: number): DA.RecipientOutcome => ({ _tag: "Retry", rcpt: "u@x.test", reason: "451 later", at: when, maxAttempts: 4, via: "flaky" })
      assert.deepStrictEqual(yield* outcome(1), retried(11_000))
      assert.deepStrictEqual(yield* outcome(2), retried(12_000))
      assert.deepStrictEqual(yield* outcome(3), retried(13_000))
      assert.deepStrictEqual(yield* outcome(4), { _tag: "Reject", rcpt: "u@x.test", reason: "gave up after 4 attempts: 451 later", via: "flaky" })
      at = 99_000
      assert.deepStrictEqual(yield* outcome(1), retried(99_000), "Retry-After style `at` is kept")

      // A route without a policy leaves the retry (and its timing) to the dispatcher.
      const plain = yield* Router.make({ adapters: { flaky: flaky.adapter }, routes: [{ name: "r", match: ["*"], adapter: "flaky" }] })
      at = undefined
      assert.deepStrictEqual((yield* plain.adapter.deliver(delivery([["u@x.test", 40]])))[0], { _tag: "Retry", rcpt: "u@x.test", reason: "451 later", at: undefined, maxAttempts: undefined, via: "flaky" })
    }))

  it.effect("through the dispatcher: one recipient delivered, the other retried on its route's schedule, then rejected at its maxAttempts", () =>
    Effect.gen(function*() {
      const good = recording("good")
      const bad = recording("bad", (rcpt) => DA.retry(rcpt, "451 4.3.0 try later"))
      const routerLayer = Router.layer({
        adapters: { good: good.adapter, bad: bad.adapter },
        routes: [
          { name: "fast", match: ["*@good.test"], adapter: "good" },
          { name: "patient", match: ["*@bad.test"], adapter: "bad", retry: { kind: "delays", delaysMs: [1_000, 5_000] }, maxAttempts: 3 }
        ]
      })
      // The dispatcher's own backoff (60 s) and limit (10) are far off: what we see is the route's.
      const ctx = yield* Layer.build(
        Dispatcher.layer({ workers: 1, maxAttempts: 10, backoff: { baseMs: 60_000, maxMs: 60_000, jitter: 0 }, idlePollMs: 60_000, sweepIntervalMs: 60_000 }).pipe(
          Layer.provideMerge(Layer.mergeAll(MemoryQueue.layer(), Telemetry.layer(), routerLayer))
        )
      )
      const q = Context.get(ctx, MailQueue)
      const qAdmin = Context.get(ctx, QueueAdmin)
      assert.strictEqual(Context.get(ctx, Router.Routes).routeFor("u@bad.test")?.name, "patient")
      const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe
      const next = (s: PubSub.Subscription<Telemetry.TelemetryEvent>) => Telemetry.awaitEvent(s, Telemetry.is("DeliveryResult"))
      const msg = message(["ok@good.test", "u@bad.test"], 0)
      yield* q.commit(msg)

      const first = [yield* next(sub), yield* next(sub)]
      assert.deepStrictEqual(Object.fromEntries(first.map((e) => [e.rcpt, e.outcome])), { "ok@good.test": "delivered", "u@bad.test": "retry" })
      const retryAt = () => Effect.map(qAdmin.get(msg.id), (i) => Option.getOrThrow(i).recipients.find((r) => r.rcpt === "u@bad.test")!.nextAttemptAt)
      assert.strictEqual(yield* retryAt(), 1_000)

      yield* TestClock.adjust(999)
      assert.strictEqual(bad.calls.length, 1)
      yield* TestClock.adjust(1)
      assert.strictEqual((yield* next(sub)).outcome, "retry")
      assert.deepStrictEqual(bad.calls[1], ["u@bad.test"], "only the failing recipient is attempted again")
      assert.strictEqual(yield* retryAt(), 1_000 + 5_000)

      yield* TestClock.adjust(4_999)
      assert.strictEqual(bad.calls.length, 2)
      yield* TestClock.adjust(1)
      const last = yield* next(sub)
      assert.deepStrictEqual([last.rcpt, last.outcome, last.reason], ["u@bad.test", "dead", "gave up after 3 attempts: 451 4.3.0 try later"])
      assert.deepStrictEqual(good.calls, [["ok@good.test"]])
      const states = Object.fromEntries(Option.getOrThrow(yield* qAdmin.get(msg.id)).recipients.map((r) => [r.rcpt, r.state]))
      assert.deepStrictEqual(states, { "ok@good.test": "delivered", "u@bad.test": "dead" })
    }))

  it.effect("adapters given as Effects are built once, in the router layer's scope, and released with it", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const scoped = Effect.acquireRelease(
        Effect.sync(() => {
          log.push("built")
          return recording("scoped").adapter
        }),
        () => Effect.sync(() => log.push("released"))
      )
      const hook = WebhookAdapter.make({ url: "http://127.0.0.1:9/never-called" })
      const layer = Router.layer({
        adapters: { scoped, hook, lmtp: LmtpAdapter.make({ target: { path: "/nonexistent" } }) },
        routes: [{ name: "all", match: ["*"], adapter: "scoped" }, { name: "web", match: [], adapter: "hook" }, { name: "mail", match: [], adapter: "lmtp" }]
      })
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(layer, scope)
      const router = Context.get(ctx, DA.DeliveryAdapter)
      assert.strictEqual(router.name, "router")
      yield* router.deliver(delivery(["a@x.test"]))
      yield* router.deliver(delivery(["b@x.test"]))
      assert.deepStrictEqual(log, ["built"])
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(log, ["built", "released"])
    }))

  it.effect("a route's concurrency limit bounds its sub-deliveries in flight; other routes are not held back", () =>
    Effect.gen(function*() {
      const inflight = yield* Ref.make(0)
      const peak = yield* Ref.make(0)
      const done = yield* Ref.make(0)
      const slow = DA.DeliveryAdapter.of({
        name: "slow",
        deliver: (d) =>
          Effect.gen(function*() {
            const now = yield* Ref.updateAndGet(inflight, (n) => n + 1)
            yield* Ref.update(peak, (p) => Math.max(p, now))
            yield* Effect.sleep("1 second")
            yield* Ref.update(inflight, (n) => n - 1)
            yield* Ref.update(done, (n) => n + 1)
            return d.recipients.map((r) => DA.ok(r.rcpt))
          })
      })
      const fast = recording("fast")
      const { adapter } = yield* Router.make({
        adapters: { slow, fast: fast.adapter },
        routes: [{ name: "limited", match: ["*@slow.test"], adapter: "slow", concurrency: 2 }, { name: "free", match: ["*"], adapter: "fast" }]
      })
      const fibers = yield* Effect.forEach([1, 2, 3, 4, 5], (i) => adapter.deliver(delivery([`u${i}@slow.test`])).pipe(Effect.forkChild))
      const free = yield* adapter.deliver(delivery(["x@free.test"]))
      assert.deepStrictEqual(tags(free), { "x@free.test": "Ok" }, "the free route answers while the limited one is saturated")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Ref.get(inflight), 2)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Ref.get(done), 2)
      assert.strictEqual(yield* Ref.get(inflight), 2)
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.joinAll(fibers)
      assert.strictEqual(yield* Ref.get(done), 5)
      assert.strictEqual(yield* Ref.get(peak), 2)
    }))
})
