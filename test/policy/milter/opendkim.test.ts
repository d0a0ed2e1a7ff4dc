/**
 * The milter rule against a real OpenDKIM (Debian `opendkim`) on loopback, in signing mode with
 * a key of the test's: mail from the signing domain, sent through Incoming over SMTP, is stored
 * with a `DKIM-Signature` that mailauth verifies against the key's record (simple/simple, so
 * every header byte — folding included — must reach the filter and the store as sent); two
 * transactions on one SMTP connection use one milter connection; mail from another domain is
 * not signed. (That the connection is reused is shown against the scripted filter, milter.test.ts.)
 * Skipped, saying so, where OpenDKIM is not installed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { dkimVerify } from "mailauth"
import * as Milter from "../../../src/policy/rules/Milter.ts"
import * as Connection from "../../../src/policy/milter/Connection.ts"
import { Listeners } from "../../../src/smtp/Listener.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../../src/testing/index.ts"
import { rsaKey } from "../../support/dkim.ts"
import * as Milters from "../../support/milters.ts"

if (!Milters.hasOpenDkim) console.warn(Milters.openDkimSkip)

const key = rsaKey()

const resolver = async (name: string, type: string) => {
  if (type === "TXT" && name === "sel._domainkey.sender.test") return [[key.record]]
  throw Object.assign(new Error(`no ${type} ${name}`), { code: "ENOTFOUND" })
}

const message = (from: string, subject: string) =>
  `From: Alice <${from}>\r\nTo: u@example.test\r\nSubject: ${subject}\r\n  folded on a second line\r\n` +
  `Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@sender.test>\r\n\r\n` +
  `Hello,\r\n\r\nthis body is signed.\r\n`

const verify = (raw: Buffer) =>
  Effect.promise(() => dkimVerify(raw, { resolver: resolver as never })).pipe(
    Effect.map((r) => (r.results ?? []).map((s) => `${s.signingDomain}:${s.status.result}`))
  )

describe.skipIf(!Milters.hasOpenDkim)("milter: OpenDKIM (real)", () => {
  it.live("signs mail from its domain; the signature verifies; two transactions on one SMTP connection", () =>
    Effect.gen(function*() {
      const dkim = yield* Milters.openDkim({ domain: "sender.test", selector: "sel", privateKey: key.privateKey })
      const address = Connection.parseAddress(dkim.address)
      assert.ok(typeof address !== "string")
      const rule = yield* Milter.make({ name: "opendkim", address, hostname: "mx.test", timeoutMs: 10_000 })
      const ctx = yield* Layer.build(TestIncoming.layer({ policies: { rules: [rule] } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const captured = Context.get(ctx, CapturingAdapter.Captured)

      // Two messages on one SMTP connection, then one from a domain OpenDKIM does not sign.
      const c = yield* SmtpClient.connect({ port })
      assert.strictEqual((yield* c.command("EHLO client.test")).code, 250)
      for (const subject of ["first", "second"]) {
        assert.strictEqual((yield* c.command("MAIL FROM:<alice@sender.test>")).code, 250)
        assert.strictEqual((yield* c.command("RCPT TO:<u@example.test>")).code, 250)
        assert.strictEqual((yield* c.command("DATA")).code, 354)
        yield* c.write(`${SmtpClient.dotStuff(message("alice@sender.test", subject))}.\r\n`)
        const reply = yield* c.read
        assert.strictEqual(reply.code, 250, reply.text)
      }
      yield* c.command("QUIT")
      const other = yield* SmtpClient.send({ port, from: "bob@other.test", to: ["u@example.test"], data: message("bob@other.test", "other") })
      assert.strictEqual(other.code, 250, other.text)

      const messages = yield* captured.awaitDelivered(3)
      const bySubject = (s: string) => messages.find((m) => m.text.includes(`Subject: ${s}`))!
      for (const s of ["first", "second"]) {
        const m = bySubject(s)
        assert.match(m.text, /^DKIM-Signature: v=1; a=rsa-sha256; c=simple\/simple; d=sender\.test; s=sel;/m)
        // Our trace header stays on top, the signature right under it.
        assert.match(m.text, /^Received: [^]*?\r\nDKIM-Signature: /)
        assert.deepStrictEqual(yield* verify(m.raw), ["sender.test:pass"], m.text)
      }
      assert.notMatch(bySubject("other").text, /DKIM-Signature/)
    }).pipe(Effect.scoped), { timeout: 60_000 })
})
