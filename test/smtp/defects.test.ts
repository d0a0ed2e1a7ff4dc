/**
 * Guarantee 4, our bug is never a 5xx: a defect (a thrown exception) in the queue during DATA
 * or in the MAIL hook reaches the client as 451 4.3.0, the connection stays usable and the
 * server keeps serving.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { Listeners } from "../../src/smtp/Listener.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { memoryWith } from "../support/queues.ts"

describe("defects become 4xx", () => {
  it.live("a defect in commit answers 451 4.3.0 and the next transaction works", () =>
    Effect.gen(function*() {
      let calls = 0
      const buggy = memoryWith((q) => ({ commit: (m) => (++calls === 1 ? Effect.die(new TypeError("bug in commit")) : q.commit(m)) }))
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({ queue: { kind: "custom", layer: buggy } }).pipe(Layer.provideMerge(CapturingAdapter.layer))
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      for (const expected of [451, 250]) {
        assert.strictEqual((yield* c.command("MAIL FROM:<a@remote.test>")).code, 250)
        assert.strictEqual((yield* c.command("RCPT TO:<u@example.test>")).code, 250)
        assert.strictEqual((yield* c.command("DATA")).code, 354)
        yield* c.write("Subject: x\r\n\r\nbody\r\n.\r\n")
        const reply = yield* c.read
        assert.strictEqual(reply.code, expected, reply.lines.join(" / "))
        if (expected === 451) assert.match(reply.text, /^4\.3\.0 /)
      }
    }))

  it.live("a defect in the MAIL hook (the queue's depth check) answers 451 4.3.0, not 5xx", () =>
    Effect.gen(function*() {
      // Armed right before MAIL, so the dispatcher's own depth reads at start-up don't trip it.
      let armed = false
      const buggy = memoryWith((q) => ({
          depthUnsafe: () => {
            if (!armed) return q.depthUnsafe()
            armed = false
            throw new RangeError("bug in depth")
          }
        }))
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({ queue: { kind: "custom", layer: buggy } }).pipe(Layer.provideMerge(CapturingAdapter.layer))
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      armed = true
      const mail = yield* c.command("MAIL FROM:<a@remote.test>")
      assert.strictEqual(mail.code, 451)
      assert.match(mail.text, /^4\.3\.0 /)
      assert.strictEqual((yield* c.command("MAIL FROM:<a@remote.test>")).code, 250, "the connection is still served")
    }))
})
