/**
 * The `spamd` rule against the real SpamAssassin daemon (Debian `spamd`, started on a free
 * loopback port and stopped by PID), through the standalone server from a config file: the GTUBE
 * message is refused with 550 5.7.1 and not stored; a normal message is stored with
 * `X-Spam-Score` and `X-Spam-Status` (the rules that hit, from SYMBOLS). With spamd stopped the
 * next message is deferred (on_error = "tempfail"), never refused. The round trip is printed.
 */
import { readFileSync, writeFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { maildirFiles, serve, waitForMaildir, writeStandaloneConfig } from "../support/server.ts"
import * as Spamd from "../support/spamd.ts"

const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

const mail = (subject: string, text: string) =>
  `From: alice@sender.test\r\nTo: u@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, "")}@sender.test>\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n\r\n${text}\r\n`

describe.skipIf(!Spamd.hasSpamd)("spamd end to end (real SpamAssassin)", () => {
  it.live("GTUBE: 550 and nothing stored; a normal message stored with X-Spam-Score; spamd gone: 451", () =>
    Effect.gen(function*() {
      // Its own scope, to stop it mid-test; also closed with the test's, should an assertion fail first.
      const daemonScope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(daemonScope, Exit.void))
      const daemon = yield* Spamd.start().pipe(Scope.provide(daemonScope))
      const dir = yield* TestIncoming.tempDir()
      const { config, maildir } = writeStandaloneConfig(dir, {
        sections: [`[[policies]]\nrule = "spamd"\naddress = "127.0.0.1:${daemon.port}"\ntimeout = "50s"\non_error = "tempfail"`]
      })
      // A generous deadline (a top-level key, so first): SpamAssassin is slow on a loaded machine.
      writeFileSync(config, `policy_timeout = "60s"\n${readFileSync(config, "utf8")}`)
      const incoming = yield* serve(["--config", config])
      const send = (subject: string, text: string) =>
        SmtpClient.send({ port: incoming.port, from: "alice@sender.test", to: ["u@example.test"], data: mail(subject, text) })

      const spam = yield* send("spam", gtube)
      assert.strictEqual(spam.code, 550, spam.lines.join(" / "))
      assert.match(spam.lines.join("\n"), /^550 5\.7\.1 Message rejected as spam \(score 1000\.0, required 5\.0\)$/m)

      const t0 = performance.now()
      const ham = yield* send("lunch", "Lunch at noon?")
      const ms = performance.now() - t0
      assert.strictEqual(ham.code, 250, ham.lines.join(" / "))
      const files = yield* waitForMaildir(maildir, "u@example.test", (f) => f.length >= 1)
      assert.strictEqual(files.length, 1, "only the normal message is stored")
      const text = readFileSync(files[0]!, "utf8")
      assert.notInclude(text, "GTUBE-STANDARD")
      assert.match(text, /^X-Spam-Score: -?\d+\.\d\r\nX-Spam-Status: No, score=-?\d+\.\d required=5\.0 tests=[A-Z_,0-9]+\r\n/)
      console.log(`SMTP transaction with a spamd scan (loopback, SYMBOLS): ${ms.toFixed(1)} ms`)

      yield* Scope.close(daemonScope, Exit.void)
      const down = yield* send("down", "spamd is gone")
      assert.strictEqual(down.code, 451, down.lines.join(" / "))
      assert.match(down.lines.join("\n"), /^451 4\.7\.1 Spam filter unavailable/m)
      assert.strictEqual(maildirFiles(maildir, "u@example.test").length, 1)
    }), { timeout: 300_000 })
})

if (!Spamd.hasSpamd) {
  describe("spamd end to end (real SpamAssassin)", () => {
    it.skip(Spamd.spamdSkip, () => undefined)
  })
}
