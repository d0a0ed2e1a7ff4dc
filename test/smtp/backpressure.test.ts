/**
 * Backpressure: when the queue holds `maxDepth` undelivered messages, new transactions are
 * refused at MAIL with 452 4.3.1 (the sender retries later, nothing is half-accepted), and mail is
 * accepted again once deliveries bring the depth down.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Layer } from "effect"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { Captured, SmtpClient, TestIncoming } from "../../src/testing/index.ts"

describe("backpressure", () => {
  it.live("refuses new transactions with 452 4.3.1 while the queue is at max_depth", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(TestIncoming.layer({ queue: { kind: "memory", maxDepth: 2 } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const captured = Context.get(ctx, Captured)
      const queue = Context.get(ctx, MailQueue)
      const release = yield* Deferred.make<void>()
      // Deliveries hang until released, so accepted messages pile up in the queue.
      yield* captured.setDecision(() => Deferred.await(release))

      const send = (n: number) => SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: `Subject: ${n}\r\n\r\nx\r\n` })
      assert.strictEqual((yield* send(1)).code, 250)
      assert.strictEqual((yield* send(2)).code, 250)
      assert.strictEqual(yield* queue.depth, 2)

      const refused = yield* send(3)
      assert.strictEqual(refused.code, 452)
      assert.match(refused.text, /^4\.3\.1 /)
      assert.strictEqual(yield* queue.depth, 2, "the refused transaction left nothing in the queue")

      yield* Deferred.succeed(release, undefined)
      yield* captured.awaitDelivered(2)
      for (let i = 0; i < 50 && (yield* queue.depth) > 0; i++) yield* Effect.sleep("20 millis")
      assert.strictEqual((yield* send(4)).code, 250)
    }))
})
