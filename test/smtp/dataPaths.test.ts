/**
 * The two DATA paths give the same outcomes, over real sockets. With tracing off (as
 * `incoming serve` runs unless `[tracing]` is configured) a plain transaction takes the direct
 * path, answered from callbacks (smtp/internal/directData.ts); with tracing on, the general path
 * of fibers. Each case runs on both: the 250 and its events, a body over the size cap, a commit
 * that fails, hangs past the hook deadline or dies, a client gone in the middle of DATA or while
 * its commit hangs (nothing left in the spool, the memory budget given back), and a drain that
 * waits for the DATA in flight.
 */
import { readdirSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, PubSub, References, Scope } from "effect"
import { MailQueueError } from "../../src/queue/MailQueueError.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { Spool } from "../../src/spool/Spool.ts"
import { Telemetry, type TelemetryEvent } from "../../src/telemetry/Telemetry.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { memoryWith } from "../support/queues.ts"
import { awaitDeliveredId, eventually, queuedId, simpleBody, transaction } from "./helpers.ts"

type Options = Parameters<typeof TestIncoming.layer>[0]

const paths = [["direct (tracing off)", false], ["general (tracing on)", true]] as const

/** A server of its own, closed with the test's scope; its services for the test to look at. */
const server = (traced: boolean, options: Options = {}) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(TestIncoming.layer(options).pipe(Layer.provide(Layer.succeed(References.TracerEnabled, traced))))
    const sub = yield* Context.get(ctx, Telemetry).subscribe
    const events: Array<TelemetryEvent> = []
    const spool = Context.get(ctx, Spool)
    return {
      ctx,
      port: Context.get(ctx, Listeners).all[0]!.port,
      spool,
      spoolFiles: () => readdirSync(spool.dir).filter((f) => f.endsWith(".spool")),
      /** Every event published since the server started. */
      events: Effect.map(PubSub.takeUpTo(sub, 10_000), (taken) => {
        events.push(...taken)
        return events as ReadonlyArray<TelemetryEvent>
      })
    }
  })

const greeted = (port: number) => Effect.tap(SmtpClient.connect({ port }), (c) => c.command("EHLO client.test"))
const send = (c: SmtpClient.SmtpClient, body: string) => transaction(c, { from: "a@sender.test", to: ["user@example.test"], body })
const reply = (r: SmtpClient.Reply) => `${r.code} ${r.text.split(" ")[0]}`
const ofTag = <T extends TelemetryEvent["_tag"]>(events: ReadonlyArray<TelemetryEvent>, tag: T) =>
  events.filter((e): e is Extract<TelemetryEvent, { _tag: T }> => e._tag === tag)

/** A memory queue whose commits fail, hang or die as `mode` says; `commits` counts the runs. */
const faultyQueue = (mode: { current: "fail" | "hang" | "die"; commits?: number }) =>
  memoryWith(() => ({
    commit: () =>
      Effect.suspend(() => {
        mode.commits = (mode.commits ?? 0) + 1
        return mode.current === "fail"
          ? Effect.fail(new MailQueueError({ reason: { _tag: "StorageFailed", detail: "disk on fire" } }))
          : mode.current === "hang"
          ? Effect.never
          : Effect.die(new Error("a bug"))
      })
  }))

describe.each(paths)("DATA, %s path", (_, traced) => {
  it.live("250 queued as <id>: MessageQueued and SessionAccepted with that id, delivered with its Received header", () =>
    Effect.gen(function*() {
      const s = yield* server(traced)
      const c = yield* greeted(s.port)
      const id = queuedId(yield* send(c, simpleBody("plain")))
      const delivered = yield* awaitDeliveredId(id).pipe(Effect.provide(s.ctx))
      assert.match(delivered.text, new RegExp(`^Received: from client\\.test .* id ${id}`, "s"))
      const events = yield* s.events
      assert.deepStrictEqual(ofTag(events, "MessageQueued").map((e) => e.id), [id])
      assert.deepStrictEqual(ofTag(events, "SessionAccepted").map((e) => e.id), [id])
      assert.isTrue(yield* eventually(Effect.map(s.spool.memoryInUse, (n) => n === 0)), "the spool's memory given back")
    }).pipe(Effect.scoped))

  it.live("a body over maxSize: 552 5.3.4, SessionRejected spool_SizeExceeded, nothing queued; the next transaction is served", () =>
    Effect.gen(function*() {
      const s = yield* server(traced, { listener: { maxSize: 2_000 } })
      const c = yield* greeted(s.port)
      assert.strictEqual(reply(yield* send(c, simpleBody("big", "z".repeat(3_000)))), "552 5.3.4")
      const id = queuedId(yield* send(c, simpleBody("small")))
      const events = yield* s.events
      assert.deepStrictEqual(ofTag(events, "SessionRejected").map((e) => [e.reason, e.stage, e.code]), [["spool_SizeExceeded", "data", 552]])
      assert.deepStrictEqual(ofTag(events, "MessageQueued").map((e) => e.id), [id])
    }).pipe(Effect.scoped))

  it.live("a commit that fails, hangs past hookTimeoutMs or dies: 451 4.3.0 / 451 4.4.2 / 451 4.3.0, with their events", () =>
    Effect.gen(function*() {
      const mode: { current: "fail" | "hang" | "die" } = { current: "fail" }
      const s = yield* server(traced, { queue: { kind: "custom", layer: faultyQueue(mode) }, listener: { hookTimeoutMs: 300 } })
      const c = yield* greeted(s.port)
      const seen: Array<string> = []
      for (const m of ["fail", "hang", "die"] as const) {
        mode.current = m
        seen.push(reply(yield* send(c, simpleBody(m))))
      }
      assert.deepStrictEqual(seen, ["451 4.3.0", "451 4.4.2", "451 4.3.0"])
      assert.isTrue(yield* eventually(Effect.map(s.events, (e) => ofTag(e, "EnqueueError").length === 3)))
      const events = yield* s.events
      assert.deepStrictEqual(ofTag(events, "EnqueueError").map((e) => e.reason), ["StorageFailed", "timeout", "defect"])
      assert.deepStrictEqual(ofTag(events, "SessionRejected").map((e) => e.reason), ["queue_StorageFailed", "commit_timeout"])
      assert.isTrue(yield* eventually(Effect.map(s.spool.memoryInUse, (n) => n === 0)), "every body released")
    }).pipe(Effect.scoped))

  it.live("a client gone in the middle of DATA, or while its commit hangs: no spool file, the memory given back", () =>
    Effect.gen(function*() {
      const mode: { current: "fail" | "hang" | "die"; commits?: number } = { current: "hang" }
      // A small threshold so the first body is in a spool file when the client goes.
      const s = yield* server(traced, {
        queue: { kind: "custom", layer: faultyQueue(mode) },
        spool: { inMemoryThreshold: 1_024 },
        listener: { hookTimeoutMs: 60_000 }
      })
      yield* Effect.scoped(Effect.gen(function*() {
        const c = yield* greeted(s.port)
        assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
        assert.strictEqual((yield* c.command("RCPT TO:<user@example.test>")).code, 250)
        assert.strictEqual((yield* c.command("DATA")).code, 354)
        yield* c.write(`Subject: reset\r\n\r\n${"y".repeat(76)}\r\n`.repeat(200))
        assert.isTrue(yield* eventually(Effect.sync(() => s.spoolFiles().length === 1)), "the body spilled to disk")
        c.socket.resetAndDestroy()
        yield* c.closed
      }))
      assert.isTrue(yield* eventually(Effect.sync(() => s.spoolFiles().length === 0)), `left: ${s.spoolFiles().join(", ")}`)

      yield* Effect.scoped(Effect.gen(function*() {
        const c = yield* greeted(s.port)
        const pending = yield* Effect.forkChild(send(c, simpleBody("hangs")))
        assert.isTrue(yield* eventually(Effect.sync(() => mode.commits === 1)), "the commit runs")
        assert.isAbove(yield* s.spool.memoryInUse, 0, "the body is held while the commit hangs")
        c.socket.resetAndDestroy()
        yield* Fiber.await(pending)
      }))
      assert.isTrue(yield* eventually(Effect.map(s.spool.memoryInUse, (n) => n === 0)), "the memory given back")
      assert.isTrue(yield* eventually(Effect.map(s.events, (e) => ofTag(e, "EnqueueError").some((x) => x.reason === "interrupted"))))
      assert.deepStrictEqual(ofTag(yield* s.events, "MessageQueued"), [])
    }).pipe(Effect.scoped))

  it.live("the drain waits for the DATA in flight: it gets its 250, then the server closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(
        TestIncoming.layer({ drainTimeoutMs: 10_000 }).pipe(Layer.provide(Layer.succeed(References.TracerEnabled, traced))),
        scope
      )
      const listeners = Context.get(ctx, Listeners)
      const c = yield* greeted(listeners.all[0]!.port)
      assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
      assert.strictEqual((yield* c.command("RCPT TO:<user@example.test>")).code, 250)
      assert.strictEqual((yield* c.command("DATA")).code, 354)
      yield* c.write("Subject: in flight\r\n\r\nhalf")
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      assert.isTrue(yield* eventually(listeners.draining), "draining")
      yield* c.write(" and the rest\r\n.\r\n")
      queuedId(yield* c.read)
      yield* Fiber.join(closing)
      yield* c.closed
    }).pipe(Effect.scoped))
})
