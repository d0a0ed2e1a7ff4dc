/**
 * Sync-ack routes: the adapter runs before the reply to DATA and its outcome is the reply the
 * client sees (ok → 250, retry → 451, reject → 550 with the adapter's reason); nothing is queued.
 * A sync recipient is alone in its transaction; durable routes still queue as before.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Result } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as Router from "../../src/delivery/Router.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"

const app = DA.DeliveryAdapter.of({
  name: "app",
  deliver: (d) =>
    Effect.succeed(d.recipients.map(({ rcpt }) =>
      rcpt.startsWith("ok@") || rcpt.startsWith("later-ok@")
        ? DA.ok(rcpt, "stored")
        : rcpt.startsWith("busy@")
        ? DA.retry(rcpt, "451 4.2.1 mailbox busy, try later")
        : DA.reject(rcpt, "550 5.1.1 no such user here")
    ))
})

const routerLayer = Router.layer({
  adapters: { app },
  routes: [
    { name: "api", match: ["*@sync.test"], adapter: "app", acknowledge: "sync" },
    { name: "batch", match: ["*"], adapter: "app" }
  ]
})

describe("sync-ack routes", () => {
  it.live("the client sees the adapter's 250 / 451 / 550 directly and nothing is queued", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({ domains: ["sync.test", "queued.test"] }).pipe(Layer.provide(routerLayer))
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const queueAdmin = Context.get(ctx, QueueAdmin)
      const send = (to: string) => SmtpClient.send({ port, from: "a@remote.test", to: [to], data: "Subject: s\r\n\r\nbody\r\n" })

      const ok = yield* send("ok@sync.test")
      assert.strictEqual(ok.code, 250)
      assert.match(ok.text, /^2\.0\.0 delivered as [0-9A-Z]{16}$/)

      const busy = yield* send("busy@sync.test")
      assert.deepStrictEqual([busy.code, busy.text], [451, "4.2.1 mailbox busy, try later"])

      const gone = yield* send("nobody@sync.test")
      assert.deepStrictEqual([gone.code, gone.text], [550, "5.1.1 no such user here"])
      assert.strictEqual((yield* queueAdmin.stats).messages, 0, "a sync-acknowledged message is never queued")

      // A durable route still answers after the commit and delivers later.
      const queued = yield* send("later-ok@queued.test")
      assert.strictEqual(queued.code, 250)
      assert.match(queued.text, /^2\.0\.0 queued as /)
    }))

  it.live("a sync recipient is alone in its transaction: another RCPT gets 452 4.5.3", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({ domains: ["sync.test", "queued.test"] }).pipe(Layer.provide(routerLayer))
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      assert.strictEqual((yield* c.command("MAIL FROM:<a@remote.test>")).code, 250)
      assert.strictEqual((yield* c.command("RCPT TO:<ok@sync.test>")).code, 250)
      const second = yield* c.command("RCPT TO:<later-ok@queued.test>")
      assert.deepStrictEqual([second.code, second.text], [452, "4.5.3 Send this recipient in a separate transaction"])
      const third = yield* c.command("RCPT TO:<ok2@sync.test>")
      assert.strictEqual(third.code, 452)
      assert.strictEqual((yield* c.command("DATA")).code, 354)
      yield* c.write("Subject: one\r\n\r\nx\r\n.\r\n")
      const reply = yield* c.read
      assert.strictEqual(reply.code, 250)
      assert.match(reply.text, /delivered as/)

      // Durable recipients may share a transaction as before.
      assert.strictEqual((yield* c.command("MAIL FROM:<a@remote.test>")).code, 250)
      assert.strictEqual((yield* c.command("RCPT TO:<x@queued.test>")).code, 250)
      assert.strictEqual((yield* c.command("RCPT TO:<y@queued.test>")).code, 250)
    }))

  it.live("an adapter that fails as a whole answers with its DeliveryError's reply: Rejected 5xx, Refused 4xx", () =>
    Effect.gen(function*() {
      const failing = DA.DeliveryAdapter.of({
        name: "failing",
        deliver: (d) =>
          Effect.fail(
            new DA.DeliveryError({
              reason: d.recipients[0]!.rcpt.startsWith("gone@")
                ? { _tag: "Rejected", reply: "550 5.1.1 mailbox gone" }
                : { _tag: "Refused", detail: "connection refused" }
            })
          )
      })
      const routes = [{ name: "api", match: ["*@sync.test"], adapter: "failing" as const, acknowledge: "sync" as const }]
      const table = Result.getOrThrow(Router.compile(routes))
      // Through a Router (which turns the error into outcomes), and a bare adapter beside a route table.
      const setups = [
        Router.layer({ adapters: { failing }, routes }),
        Layer.mergeAll(Layer.succeed(DA.DeliveryAdapter, failing), Layer.succeed(Router.Routes, table))
      ]
      for (const delivery of setups) {
        const ctx = yield* Layer.build(TestIncoming.layerWith({ domains: ["sync.test"] }).pipe(Layer.provide(delivery)))
        const port = Context.get(ctx, Listeners).all[0]!.port
        const send = (to: string) => SmtpClient.send({ port, from: "a@remote.test", to: [to], data: "Subject: s\r\n\r\nbody\r\n" })
        const gone = yield* send("gone@sync.test")
        assert.deepStrictEqual([gone.code, gone.text], [550, "5.1.1 mailbox gone"])
        const down = yield* send("down@sync.test")
        assert.strictEqual(down.code, 451, "a delivery that could not be made is never a 5xx")
        assert.match(down.text, /^4\.\d+\.\d+ /)
        assert.strictEqual((yield* Context.get(ctx, QueueAdmin).stats).messages, 0)
      }
    }))
})
