/**
 * The milter rule against a real rspamd (Debian `rspamd`): its proxy worker in milter mode on a
 * loopback port, scanning itself. Through Incoming over SMTP, the GTUBE test message is refused
 * at end of DATA with rspamd's own reply (554 5.7.1) and not stored; a normal message is stored
 * with the headers rspamd adds. Skipped, saying so, where rspamd is not installed. rspamd takes
 * 15 s to over two minutes to start on a busy machine (it compiles its TLD list and regular
 * expressions), hence the long bounds.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Connection from "../../../src/policy/milter/Connection.ts"
import * as Milter from "../../../src/policy/rules/Milter.ts"
import { Listeners } from "../../../src/smtp/Listener.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../../src/testing/index.ts"
import * as Milters from "../../support/milters.ts"

if (!Milters.hasRspamd) console.warn(Milters.rspamdSkip)

const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

const message = (subject: string, body: string) =>
  `From: Alice <alice@sender.test>\r\nTo: u@example.test\r\nSubject: ${subject}\r\n` +
  `Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@sender.test>\r\n\r\n${body}\r\n`

describe.skipIf(!Milters.hasRspamd)("milter: rspamd proxy in milter mode (real)", () => {
  it.live("GTUBE is refused with rspamd's reply and not stored; a normal message gets rspamd's headers", () =>
    Effect.gen(function*() {
      const rspamd = yield* Milters.rspamd()
      const address = Connection.parseAddress(rspamd.address)
      assert.ok(typeof address !== "string")
      const rule = yield* Milter.make({ name: "rspamd", address, hostname: "mx.test", timeoutMs: 20_000 })
      const ctx = yield* Layer.build(TestIncoming.layer({ policies: { rules: [rule], timeoutMs: 30_000 } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const captured = Context.get(ctx, CapturingAdapter.Captured)

      const spam = yield* SmtpClient.send({ port, from: "alice@sender.test", to: ["u@example.test"], data: message("spam", gtube) })
      assert.strictEqual(spam.code, 554, spam.text)
      assert.match(spam.text, /^5\.7\.1 /)
      assert.match(spam.text, /gtube/i)

      const ham = yield* SmtpClient.send({
        port,
        from: "alice@sender.test",
        to: ["u@example.test"],
        data: message("hello", "Hello Bob,\r\n\r\nthe meeting is at ten tomorrow, in the usual room.\r\n\r\nAlice")
      })
      assert.strictEqual(ham.code, 250, ham.text)
      const [stored] = yield* captured.awaitDelivered(1)
      assert.strictEqual((yield* captured.messages).length, 1, "the GTUBE message was not stored")
      assert.include(stored!.text, "Subject: hello")
      // rspamd's milter headers (X-Spamd-Result, X-Rspamd-Server, ...) and its spam flag.
      assert.match(stored!.text, /^X-Spamd-Result: default: False \[/m, stored!.text.slice(0, 2000))
      assert.match(stored!.text, /^X-Rspamd-(Server|Queue-Id|Action): /m)
    }).pipe(Effect.scoped), { timeout: 330_000 })
})
