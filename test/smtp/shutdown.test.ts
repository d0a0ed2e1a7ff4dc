/**
 * The shutdown reply, over real sockets: while a drain waits for a DATA transaction in flight, a
 * command on another (idle) session is answered `421 4.3.2` — not smtp-server's own
 * `421 4.4.2 Server shutting down` — the transaction in flight still gets its 250, and an idle
 * session that says nothing gets the same `421 4.3.2` when the drain ends. The README's table
 * documents that reply.
 */
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Scope } from "effect"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"

const shutdownLine = SmtpReply.format(SmtpReply.shuttingDown)

describe("shutdown reply", () => {
  it.live("a command during the drain and an idle session both get 421 4.3.2; the DATA in flight completes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(TestIncoming.layer({ drainTimeoutMs: 10_000 }), scope)
      const listeners = Context.get(ctx, Listeners)
      const port = listeners.all[0]!.port

      const busy = yield* SmtpClient.connect({ port })
      assert.strictEqual((yield* busy.command("EHLO busy.test")).code, 250)
      assert.strictEqual((yield* busy.command("MAIL FROM:<a@remote.test>")).code, 250)
      assert.strictEqual((yield* busy.command("RCPT TO:<u@example.test>")).code, 250)
      assert.strictEqual((yield* busy.command("DATA")).code, 354)
      yield* busy.write("Subject: in flight\r\n\r\nhalf")
      const talker = yield* SmtpClient.connect({ port })
      assert.strictEqual((yield* talker.command("EHLO talker.test")).code, 250)
      const silent = yield* SmtpClient.connect({ port })
      assert.strictEqual((yield* silent.command("EHLO silent.test")).code, 250)

      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      for (let i = 0; i < 500 && !(yield* listeners.draining); i++) yield* Effect.sleep("10 millis")
      assert.isTrue(yield* listeners.draining)

      const refused = yield* talker.command("NOOP")
      assert.strictEqual(`${refused.code} ${refused.text}`, shutdownLine)

      yield* busy.write(" and the rest\r\n.\r\n")
      const done = yield* busy.read
      assert.strictEqual(done.code, 250, done.text)

      yield* Fiber.join(closing)
      yield* silent.closed
      assert.include(silent.transcript(), `S: ${shutdownLine}`)
      assert.notInclude(talker.transcript().join("\n"), "4.4.2")
    }))

  it("the README documents the reply that is sent", () => {
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8")
    const { code, enhanced } = SmtpReply.shuttingDown
    const row = readme.split("\n").find((line) => line.startsWith("| shutting down"))
    assert.isDefined(row, "no 'shutting down' row in the README's protocol table")
    assert.isTrue(row!.endsWith(`| ${code} ${enhanced} |`), row)
  })
})
