/**
 * The `rspamd` rule against the real rspamd (Debian `rspamd`, its normal worker on a free loopback
 * port with a config dir of its own, started with `rspamd -f -u root -g root -i` and stopped by
 * PID): `/ping` answers pong; the GTUBE test message is refused with 550 and not stored; a normal
 * message is stored with `X-Rspamd-Score` and `X-Rspamd-Action`. The round trip of a scan is printed.
 * rspamd compiles its rules at start (15 s idle, minutes under load): the bound is generous.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Rspamd from "../../src/policy/rules/spam/Rspamd.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as Milters from "../support/milters.ts"

const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

const mail = (subject: string, text: string) =>
  `From: alice@sender.test\r\nTo: u@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, "")}@sender.test>\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n\r\n${text}\r\n`

describe.skipIf(!Milters.hasRspamd)("rspamd end to end (real rspamd)", () => {
  it.live("GTUBE: 550 and nothing stored; a normal message stored with X-Rspamd-Score", () =>
    Effect.gen(function*() {
      const daemon = yield* Milters.rspamdHttp()
      const url = `http://127.0.0.1:${daemon.port}`
      const pong = yield* Effect.promise(() => fetch(`${url}/ping`).then((r) => r.text()))
      assert.strictEqual(pong.trim(), "pong")
      const rule = yield* Rspamd.make({ url, timeout: "20 seconds" })
      const ctx = yield* Layer.build(TestIncoming.layer({ policies: { rules: [rule], timeoutMs: 30_000 } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const captured = Context.get(ctx, CapturingAdapter.Captured)

      const spam = yield* SmtpClient.send({ port, from: "alice@sender.test", to: ["u@example.test"], data: mail("spam", gtube) })
      assert.strictEqual(spam.code, 550, spam.lines.join(" / "))
      assert.match(spam.text, /^5\.7\.1 /)

      const times: Array<number> = []
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now()
        const ham = yield* SmtpClient.send({ port, from: "alice@sender.test", to: ["u@example.test"], data: mail(`hello ${i}`, "Lunch at noon?") })
        times.push(performance.now() - t0)
        assert.strictEqual(ham.code, 250, ham.lines.join(" / "))
      }
      const stored = yield* captured.awaitDelivered(5)
      assert.strictEqual(stored.length, 5)
      assert.isFalse(stored.some((m) => m.text.includes("GTUBE")), "the GTUBE message was not stored")
      assert.match(stored[0]!.text, /^X-Rspamd-Score: -?\d+\.\d\d\r\nX-Rspamd-Action: no action\r\n/)
      assert.deepStrictEqual((stored[0]!.envelope.annotations?.["rspamd"] as { action: string }).action, "no action")
      times.sort((a, b) => a - b)
      console.log(`SMTP transaction with an rspamd scan (loopback, 5 messages): median ${times[2]!.toFixed(1)} ms, max ${times[4]!.toFixed(1)} ms`)
    }), { timeout: 300_000 })
})

if (!Milters.hasRspamd) {
  describe("rspamd end to end (real rspamd)", () => {
    it.skip(Milters.rspamdSkip, () => undefined)
  })
}
