/**
 * The README's host app (examples/host-app.ts) really works: its layer serves mail, delivers
 * to its Effect, and its per-recipient rejection dead-letters a message.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option } from "effect"
import { Server } from "../../examples/host-app.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"

describe("host app example", () => {
  it.live("serves, delivers to its Effect, and dead-letters what it rejects", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      // The example keeps the default ./var/incoming data dir: run it from a temp dir, then go back.
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          const cwd = process.cwd()
          process.chdir(dir)
          return cwd
        }),
        (cwd) => Effect.sync(() => process.chdir(cwd))
      )
      const ctx = yield* Layer.build(Server(0))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe
      const queueAdmin = Context.get(ctx, QueueAdmin)

      const ok = yield* SmtpClient.send({ port, from: "a@friend.test", to: ["bob@example.com"], data: "Subject: hi\r\n\r\nhi\r\n" })
      assert.strictEqual(ok.code, 250)
      const first = yield* Telemetry.awaitEvent(sub, Telemetry.is("DeliveryResult"))
      assert.deepStrictEqual([first.rcpt, first.outcome], ["bob@example.com", "delivered"])

      const spam = yield* SmtpClient.send({ port, from: "x@spam.test", to: ["bob@example.com"], data: "Subject: buy\r\n\r\nnow\r\n" })
      assert.strictEqual(spam.code, 250)
      const id = /queued as (\w+)/.exec(spam.text)![1]!
      const second = yield* Telemetry.awaitEvent(sub, Telemetry.is("DeliveryResult"))
      assert.deepStrictEqual([second.id, second.outcome, second.reason], [id, "dead", "550 5.7.1 not wanted"])
      assert.strictEqual(Option.getOrThrow(yield* queueAdmin.get(id)).state, "dead")
    }))
})
