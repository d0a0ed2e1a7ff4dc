/**
 * Message priority at acceptance: the RFC 6710 grammar and levels (protocol/Priority.ts), and
 * over a real socket how a session sets `Envelope.priority` — `MT-PRIORITY` advertised to and
 * honoured from trusted clients only (ignored and recorded from others, 501 5.5.4 when
 * malformed), the listener's level, `[[priorities]]` patterns and route levels, the highest winning.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result, type Scope } from "effect"
import * as Router from "../../src/delivery/Router.ts"
import * as Priorities from "../../src/policy/Priorities.ts"
import * as Priority from "../../src/protocol/Priority.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"

describe("Priority levels and MT-PRIORITY grammar", () => {
  it("parses the RFC 6710 priority-value and nothing else", () => {
    for (const [text, level] of [["0", 0], ["9", 9], ["-9", -9], ["+3", 3], ["-1", -1]] as const) {
      assert.deepStrictEqual(Priority.parseParameter(text), Result.succeed(level))
    }
    for (const bad of ["10", "-0", "00", "+0", "", "a", "1.5", " 1"]) assert.isTrue(Result.isFailure(Priority.parseParameter(bad)), bad)
    assert.isTrue(Result.isFailure(Priority.parseParameter(true)))
  })

  it("reads configured names and integers", () => {
    assert.deepStrictEqual(Priority.fromSetting("critical"), Result.succeed(9))
    assert.deepStrictEqual(Priority.fromSetting("LOW"), Result.succeed(-5))
    assert.deepStrictEqual(Priority.fromSetting(-2), Result.succeed(-2))
    assert.deepStrictEqual(Priority.fromSetting("7"), Result.succeed(7))
    assert.isTrue(Result.isFailure(Priority.fromSetting("urgent")))
    assert.isTrue(Result.isFailure(Priority.fromSetting(12)))
    assert.strictEqual(Priority.format(5), "high")
    assert.strictEqual(Priority.format(3), "+3")
  })

  it("ages low priority to normal after the maximum wait, and leaves the others", () => {
    assert.strictEqual(Priority.effective(-5, 1_000, 1_000 + 59_999, 60_000), -5)
    assert.strictEqual(Priority.effective(-5, 1_000, 1_000 + 60_000, 60_000), 0)
    assert.strictEqual(Priority.effective(5, 0, 10_000_000, 60_000), 5)
    assert.strictEqual(Priority.effective(-9, 0, 10_000_000, 0), -9)
    assert.strictEqual(Priority.highest([undefined, -3, 2, undefined]), 2)
    assert.strictEqual(Priority.highest([]), 0)
  })

  it("matches sender and recipient patterns, highest wins", () => {
    const p = Result.getOrThrow(Priorities.make([
      { sender: ["*@bank.example"], priority: "high" },
      { recipient: ["alerts-*@ops.example"], priority: "critical" },
      { sender: ["news@*"], priority: -5 }
    ]))
    assert.strictEqual(p.of("Teller@Bank.Example", ["x@y.test"]), 5)
    assert.strictEqual(p.of("teller@bank.example", ["a@b.test", "alerts-db@ops.example"]), 9)
    assert.strictEqual(p.of("news@shop.test", ["a@b.test"]), -5)
    assert.strictEqual(p.of("someone@else.test", ["a@b.test"]), undefined)
    assert.isTrue(Result.isFailure(Priorities.make([{ priority: "high" }])))
    assert.isTrue(Result.isFailure(Priorities.make([{ sender: ["*"], priority: 11 }])))
  })
})

/** One transaction over a real socket; the envelope the adapter got. */
const sendAndCapture = (mail: string, rcpt = "u@example.test") =>
  Effect.gen(function*() {
    const port = (yield* Listeners).all[0]!.port
    const captured = yield* CapturingAdapter.Captured
    const before = (yield* captured.messages).length
    const c = yield* SmtpClient.connect({ port })
    const ehlo = yield* c.command("EHLO client.test")
    const mailReply = yield* c.command(mail)
    if (mailReply.code !== 250) {
      yield* c.command("QUIT")
      return { ehlo, mailReply, envelope: undefined }
    }
    assert.strictEqual((yield* c.command(`RCPT TO:<${rcpt}>`)).code, 250)
    assert.strictEqual((yield* c.command("DATA")).code, 354)
    yield* c.write("Subject: p\r\n\r\nbody\r\n.\r\n")
    assert.strictEqual((yield* c.read).code, 250)
    yield* c.command("QUIT")
    const delivered = yield* captured.awaitDelivered(before + 1)
    return { ehlo, mailReply, envelope: delivered[before]!.envelope }
  })

describe("Priority at acceptance (real socket)", () => {
  it.live("trusted client: MT-PRIORITY advertised and honoured; malformed is 501 5.5.4", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(TestIncoming.layer({ relay: { trustedNetworks: ["127.0.0.0/8"] } }))
      const run = <A, E>(e: Effect.Effect<A, E, Listeners | CapturingAdapter.Captured | Scope.Scope>) => Effect.provide(e, ctx)
      const high = yield* run(sendAndCapture("MAIL FROM:<a@remote.test> MT-PRIORITY=7"))
      assert.include(high.ehlo.text, "MT-PRIORITY MIXER")
      assert.strictEqual(high.envelope?.priority, 7)
      const low = yield* run(sendAndCapture("MAIL FROM:<a@remote.test> MT-PRIORITY=-4"))
      assert.strictEqual(low.envelope?.priority, -4)
      const none = yield* run(sendAndCapture("MAIL FROM:<a@remote.test>"))
      assert.isUndefined(none.envelope?.priority)
      for (const bad of ["10", "-0", "x"]) {
        const refused = yield* run(sendAndCapture(`MAIL FROM:<a@remote.test> MT-PRIORITY=${bad}`))
        assert.strictEqual(refused.mailReply.code, 501)
        assert.include(refused.mailReply.text, "5.5.4")
      }
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("untrusted client: not advertised; a sent value is ignored and recorded", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(TestIncoming.layer())
      const r = yield* sendAndCapture("MAIL FROM:<a@remote.test> MT-PRIORITY=9").pipe(Effect.provide(ctx))
      assert.notInclude(r.ehlo.text, "MT-PRIORITY")
      assert.strictEqual(r.mailReply.code, 250)
      assert.isUndefined(r.envelope?.priority)
      assert.deepStrictEqual(r.envelope?.annotations, { "mt-priority-ignored": 9 })
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("listener level, patterns and routes: the highest applicable wins", () =>
    Effect.gen(function*() {
      const routed = Layer.unwrap(Effect.gen(function*() {
        const capture = yield* CapturingAdapter.make
        const router = Router.layer({
          adapters: { capture: capture.adapter },
          routes: [
            { name: "urgent", match: ["pager@example.test"], adapter: "capture", priority: 8 },
            { name: "rest", match: ["*"], adapter: "capture" }
          ],
          priority: (envelope) => Effect.succeed(envelope.mailFrom === "vip@remote.test" ? 6 : undefined)
        })
        return Layer.merge(router, Layer.succeed(CapturingAdapter.Captured, capture.captured))
      }))
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({
          listener: { priority: -2 },
          priorities: [{ sender: ["*@bank.test"], priority: "high" }]
        }).pipe(Layer.provideMerge(routed))
      )
      const run = <A, E>(e: Effect.Effect<A, E, Listeners | CapturingAdapter.Captured | Scope.Scope>) => Effect.provide(e, ctx)
      assert.strictEqual((yield* run(sendAndCapture("MAIL FROM:<a@remote.test>"))).envelope?.priority, -2)
      assert.strictEqual((yield* run(sendAndCapture("MAIL FROM:<teller@bank.test>"))).envelope?.priority, 5)
      assert.strictEqual((yield* run(sendAndCapture("MAIL FROM:<vip@remote.test>"))).envelope?.priority, 6)
      assert.strictEqual((yield* run(sendAndCapture("MAIL FROM:<teller@bank.test>", "pager@example.test"))).envelope?.priority, 8)
    }).pipe(Effect.scoped), { timeout: 60_000 })
})
