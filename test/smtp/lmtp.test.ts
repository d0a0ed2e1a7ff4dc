/**
 * LMTP server mode (RFC 2033) over real sockets: the LMTP greeting and LHLO, HELO/EHLO refused,
 * one reply per accepted recipient after the final dot (RFC 2033 4.2), in RCPT order, with the
 * queue's outcome for durable recipients and each sync-ack recipient's own adapter outcome in the
 * same transaction; `Received: ... with LMTP`; the message size limit per recipient; and a Unix
 * socket listener (mode 0660, replaced when stale, its clients local).
 */
import { spawnSync } from "node:child_process"
import { statSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as Router from "../../src/delivery/Router.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { Captured, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { awaitDeliveredId, eventually } from "./helpers.ts"

const lmtp = TestIncoming.layer({ domains: ["example.test", "other.test"], listener: { mode: "lmtp", maxSize: 10_000 } })

/** MAIL, the RCPTs (their replies), DATA and the body; then one reply per accepted RCPT. */
const lmtpTransaction = (c: SmtpClient.SmtpClient, to: ReadonlyArray<string>, body: string) =>
  Effect.gen(function*() {
    assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
    const rcpts = yield* Effect.forEach(to, (r) => c.command(`RCPT TO:<${r}>`))
    const accepted = rcpts.filter((r) => r.code === 250).length
    assert.strictEqual((yield* c.command("DATA")).code, 354)
    yield* c.write(`${body}.\r\n`)
    const replies: Array<SmtpClient.Reply> = []
    for (let i = 0; i < accepted; i++) replies.push(yield* c.read)
    return { rcpts, replies }
  })

describe("LMTP listener", () => {
  layer(lmtp, { excludeTestServices: true })((it) => {
    it.effect("greets as LMTP, answers LHLO with its extensions, refuses HELO and EHLO", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        assert.strictEqual(c.greeting.code, 220)
        assert.match(c.greeting.text, /^mx\.test LMTP /)
        const helo = yield* c.command("HELO client.test")
        const ehlo = yield* c.command("EHLO client.test")
        assert.deepStrictEqual([helo.code, ehlo.code], [500, 500])
        const lhlo = yield* c.command("LHLO client.test")
        assert.strictEqual(lhlo.code, 250)
        assert.include(lhlo.lines.join("\n"), "PIPELINING")
        assert.include(lhlo.lines.join("\n"), "ENHANCEDSTATUSCODES")
        // MAIL before LHLO is a sequence error on a fresh connection.
        const fresh = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        assert.strictEqual((yield* fresh.command("MAIL FROM:<a@sender.test>")).code, 503)
      }).pipe(Effect.scoped))

    it.effect("one reply per accepted recipient after DATA, in RCPT order; a refused RCPT gets none", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* c.command("LHLO client.test")
        const { rcpts, replies } = yield* lmtpTransaction(
          c,
          ["one@example.test", "someone@elsewhere.test", "two@example.test", "three@other.test"],
          "Subject: lmtp\r\n\r\nhello\r\n"
        )
        assert.deepStrictEqual(rcpts.map((r) => r.code), [250, 554, 250, 250])
        assert.lengthOf(replies, 3)
        const ids = replies.map((r) => /^2\.0\.0 queued as ([0-9A-Z]{16})$/.exec(r.text)?.[1])
        assert.isTrue(replies.every((r) => r.code === 250), JSON.stringify(replies))
        // One durable message for the three: the same queue id in every reply.
        assert.strictEqual(new Set(ids).size, 1)
        const msg = yield* awaitDeliveredId(ids[0]!)
        assert.deepStrictEqual(msg.envelope.rcptTo, ["one@example.test", "two@example.test", "three@other.test"])
        assert.match(msg.text, /^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test \(Incoming\) with LMTP id /)
        // The session goes on: a second transaction on the same connection.
        const again = yield* lmtpTransaction(c, ["one@example.test"], "Subject: again\r\n\r\nx\r\n")
        assert.lengthOf(again.replies, 1)
        assert.strictEqual(again.replies[0]!.code, 250)
      }).pipe(Effect.scoped))

    it.effect("a message over max_size: 552 5.3.4 for each recipient", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* c.command("LHLO client.test")
        const before = (yield* Captured.use((cap) => cap.messages)).length
        const { replies } = yield* lmtpTransaction(c, ["one@example.test", "two@example.test"], `Subject: big\r\n\r\n${"x".repeat(70)}\r\n`.repeat(200))
        assert.deepStrictEqual(replies.map((r) => `${r.code} ${r.text.slice(0, 5)}`), ["552 5.3.4", "552 5.3.4"])
        assert.strictEqual((yield* Captured.use((cap) => cap.messages)).length, before)
      }).pipe(Effect.scoped))
  })

  it.live("sync-ack recipients share the transaction with queued ones; each gets its own outcome", () =>
    Effect.gen(function*() {
      const deliveries: Array<ReadonlyArray<string>> = []
      const app = DA.DeliveryAdapter.of({
        name: "app",
        deliver: (d) =>
          Effect.sync(() => (deliveries.push(d.recipients.map((r) => r.rcpt)), d.recipients.map(({ rcpt }) =>
            rcpt.startsWith("ok@") || rcpt.startsWith("queued")
              ? DA.ok(rcpt, "stored")
              : rcpt.startsWith("busy@")
              ? DA.retry(rcpt, "451 4.2.1 mailbox busy, try later")
              : DA.reject(rcpt, "550 5.1.1 no such user here")
          )))
      })
      const routes = Router.layer({
        adapters: { app },
        routes: [
          { name: "api", match: ["*@sync.test"], adapter: "app", acknowledge: "sync" },
          { name: "batch", match: ["*"], adapter: "app" }
        ]
      })
      const ctx = yield* Layer.build(
        TestIncoming.layerWith({ domains: ["sync.test", "queued.test"], listener: { mode: "lmtp" } }).pipe(Layer.provide(routes))
      )
      const c = yield* SmtpClient.connect({ port: Context.get(ctx, Listeners).all[0]!.port })
      yield* c.command("LHLO client.test")
      const { rcpts, replies } = yield* lmtpTransaction(
        c,
        ["ok@sync.test", "queued1@queued.test", "busy@sync.test", "nobody@sync.test", "queued2@queued.test"],
        "Subject: mixed\r\n\r\nbody\r\n"
      )
      // No 452 4.5.3 here: LMTP replies per recipient.
      assert.deepStrictEqual(rcpts.map((r) => r.code), [250, 250, 250, 250, 250])
      assert.deepStrictEqual(replies.map((r) => `${r.code} ${r.text.replace(/[0-9A-Z]{16}$/, "ID")}`), [
        "250 2.0.0 delivered as ID",
        "250 2.0.0 queued as ID",
        "451 4.2.1 mailbox busy, try later",
        "550 5.1.1 no such user here",
        "250 2.0.0 queued as ID"
      ])
      // Each sync recipient was delivered alone; the durable two were queued together and delivered.
      assert.isTrue(yield* eventually(Effect.sync(() => deliveries.length === 4), 10_000), JSON.stringify(deliveries))
      assert.deepStrictEqual(
        deliveries.map((d) => d.join(",")).toSorted(),
        ["busy@sync.test", "nobody@sync.test", "ok@sync.test", "queued1@queued.test,queued2@queued.test"]
      )
    }).pipe(Effect.scoped))

  it.live("on a Unix socket: mode 0660, a stale socket file replaced, clients are local", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-lmtp-sock-")
      const path = join(dir, "lmtp.sock")
      // A socket file left behind by a process that is gone (killed: nothing removed the file).
      spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`])
      assert.isTrue(statSync(path).isSocket())
      const ctx = yield* Layer.build(TestIncoming.layer({ listener: { mode: "lmtp", path, port: 0 } }))
      assert.strictEqual(statSync(path).mode & 0o777, 0o660)
      const c = yield* SmtpClient.connect({ port: 0, path })
      assert.match(c.greeting.text, /LMTP/)
      yield* c.command("LHLO local.test")
      const { replies } = yield* lmtpTransaction(c, ["user@example.test"], "Subject: unix\r\n\r\nx\r\n")
      const id = /queued as ([0-9A-Z]{16})$/.exec(replies[0]!.text)![1]!
      const msg = yield* awaitDeliveredId(id).pipe(Effect.provideContext(ctx))
      assert.match(msg.text, /^Received: from local\.test \(\[127\.0\.0\.1\]\)/)
    }).pipe(Effect.scoped))
})
