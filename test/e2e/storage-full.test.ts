/**
 * Full storage seen through SMTP: the SQLite queue's database is capped (`maxPageCount`), so
 * commits start failing with SQLITE_FULL. DATA then gets 452 4.3.1, no partial message is kept
 * (the queue holds exactly the messages that got 250), and once space returns (messages removed)
 * the same server accepts mail again.
 */
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as SqliteQueue from "../../src/queue/SqliteQueue.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import { Captured, CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"

describe("storage full", () => {
  it.live("DATA gets 452 4.3.1 when the queue's storage is full, nothing partial stays, and mail flows again once space returns", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const queueLayer = SqliteQueue.layer({ dataDir: join(dir, "queue"), maxPageCount: 80 })
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({ queue: { kind: "custom", layer: queueLayer } }).pipe(Layer.provideMerge(CapturingAdapter.layer))
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const queueAdmin = Context.get(ctx, QueueAdmin)
      // Deliveries keep failing, so every accepted message stays in the queue and fills it.
      yield* Context.get(ctx, Captured).setDecision((d) => Effect.succeed(DA.all(d, (r) => DA.retry(r, "451 not now", Date.now() + 3_600_000))))

      const body = `Subject: filler\r\n\r\n${`${"x".repeat(78)}\r\n`.repeat(250)}` // ~20 KiB, stored inline
      const accepted: Array<string> = []
      let refused: SmtpClient.Reply | undefined
      for (let i = 0; i < 100 && refused === undefined; i++) {
        const reply = yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: body })
        if (reply.code === 250) accepted.push(/queued as (\w+)/.exec(reply.text)![1]!)
        else refused = reply
      }
      assert.isDefined(refused, "the queue never filled up")
      assert.strictEqual(refused!.code, 452)
      assert.match(refused!.text, /^4\.3\.1 /)
      assert.isAbove(accepted.length, 0)

      // Nothing half-written: the queue holds exactly what got a 250.
      const listed = (yield* queueAdmin.list({ state: "all" })).map((m) => m.id).toSorted()
      assert.deepStrictEqual(listed, accepted.toSorted())

      // Still full: another attempt is refused the same way, and the server keeps answering.
      assert.strictEqual((yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: body })).code, 452)

      // Space returns when the operator removes mail; the same server accepts again.
      for (const id of accepted.slice(0, 3)) assert.isTrue(yield* queueAdmin.remove(id))
      const again = yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: body })
      assert.strictEqual(again.code, 250, again.lines.join(" / "))
    }), { timeout: 60_000 })
})
