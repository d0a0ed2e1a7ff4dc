/**
 * Email authentication end to end, over real sockets and a real DNS server (dnsmasq on a free
 * loopback port): a message DKIM-signed by nodemailer's signer and sent with an SPF-aligned MAIL
 * FROM is stored with spf=pass, dkim=pass and dmarc=pass (typed on the delivery, and in the
 * Authentication-Results header on top); a forged From of a p=reject domain is refused with 550
 * and not stored; a body changed after signing (mailauth's signer) gives dkim=fail; a
 * p=quarantine failure is accepted and marked. Then the standalone server, configured from a
 * file, and a DKIM-signed 50 MiB message with the checks on: dkim=pass, RSS grows by less than 32 MiB.
 */
import { readFileSync, statSync } from "node:fs"
import { Readable } from "node:stream"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, PubSub } from "effect"
import { dkimSign } from "mailauth"
import nodemailer, { type SendMailOptions, type Transporter } from "nodemailer"
import * as NodeDns from "../../src/dns/NodeDns.ts"
import * as AuthRules from "../../src/policy/rules/auth/AuthRules.ts"
import * as Checks from "../../src/policy/rules/auth/Checks.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { message, rsaKey, sign } from "../support/dkim.ts"
import * as Dnsmasq from "../support/dnsmasq.ts"
import { bodyChunks, procKb, resetPeak, streamBody } from "../support/largeMessage.ts"
import { serve, waitForMaildir, writeStandaloneConfig } from "../support/server.ts"

const key = rsaKey()

const records: Dnsmasq.Records = {
  TXT: {
    "sender.test": ["v=spf1 ip4:127.0.0.1 -all"],
    "_dmarc.sender.test": ["v=DMARC1; p=reject"],
    "sel._domainkey.sender.test": [key.record],
    "bank.test": ["v=spf1 ip4:192.0.2.1 -all"],
    "_dmarc.bank.test": ["v=DMARC1; p=reject"],
    "shady.test": ["v=spf1 ?all"],
    "quarantine.test": ["v=spf1 ip4:192.0.2.1 -all"],
    "_dmarc.quarantine.test": ["v=DMARC1; p=quarantine"]
  },
  A: { "client.test": "127.0.0.1" },
  PTR: { "1.0.0.127.in-addr.arpa": "client.test" }
}

const transport = (port: number, dkim?: { domainName: string; keySelector: string; privateKey: string }) =>
  nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true, name: "client.test", ...(dkim === undefined ? {} : { dkim }) })

/** Sends; resolves with the SMTP code of the final reply (250, or the refusal's). */
const sendMail = (t: Transporter, mail: SendMailOptions) =>
  Effect.promise(() =>
    t.sendMail(mail).then(
      (info: { response?: unknown }) => ({ code: 250, response: String(info.response) }),
      (e: { responseCode?: number; response?: string }) => ({ code: e.responseCode ?? 0, response: String(e.response) })
    )
  )

const resultsOf = (m: CapturingAdapter.CapturedMessage) =>
  Object.fromEntries((m.envelope.authentication?.results ?? []).map((r) => [r.method, r.result]))

describe.skipIf(!Dnsmasq.available)("email authentication end to end (dnsmasq)", () => {
  it.live("signed and aligned: pass ×3; forged p=reject From: 550, not stored; changed body: dkim=fail; p=quarantine: marked", () =>
    Effect.gen(function*() {
      const server = yield* Dnsmasq.start(records)
      const dns = yield* NodeDns.make({ servers: [server.server], timeoutMs: 1_000, tries: 2 })
      const checks = yield* Checks.make(dns, { hostname: "mx.test" })
      const rules = [AuthRules.spf(checks), AuthRules.dkim(checks), AuthRules.dmarc(checks), AuthRules.iprev(checks)]
      const ctx = yield* Layer.build(TestIncoming.layer({ policies: { rules } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const captured = Context.get(ctx, CapturingAdapter.Captured)
      const events = yield* Context.get(ctx, Telemetry.Telemetry).subscribe

      // 1. Signed by nodemailer's DKIM signer, MAIL FROM in the same domain.
      const signer = transport(port, { domainName: "sender.test", keySelector: "sel", privateKey: key.privateKey })
      const good = yield* sendMail(signer, {
        from: "alice@sender.test",
        to: "u@example.test",
        subject: "signed",
        text: "hello from a signed message",
        envelope: { from: "bounce@sender.test", to: ["u@example.test"] }
      })
      assert.strictEqual(good.code, 250, good.response)
      const [stored] = yield* captured.awaitDelivered(1)
      assert.deepStrictEqual(resultsOf(stored!), { spf: "pass", dkim: "pass", dmarc: "pass", iprev: "pass" })
      assert.match(stored!.text, /^Authentication-Results: mx\.test;\r\n\tspf=none smtp\.helo=client\.test;\r\n\tspf=pass smtp\.mailfrom=bounce@sender\.test;\r\n\tdkim=pass header\.d=sender\.test header\.s=sel header\.a=rsa-sha256 header\.b=\S+;\r\n\tdmarc=pass header\.from=sender\.test policy\.dmarc=reject;\r\n\tiprev=pass reason=client\.test policy\.iprev=127\.0\.0\.1\r\nReceived: from client\.test/)

      // 2. A forged From of a p=reject domain, from a host its SPF does not list: 550 at end of DATA.
      const forged = yield* sendMail(transport(port), {
        from: "ceo@bank.test",
        to: "u@example.test",
        subject: "urgent wire transfer",
        text: "pay now",
        envelope: { from: "x@shady.test", to: ["u@example.test"] }
      })
      assert.strictEqual(forged.code, 550, forged.response)
      assert.match(forged.response, /5\.7\.1 .*DMARC policy of bank\.test/)

      // 3. Signed by mailauth's signer, then the body changed: dkim=fail (SPF still aligns: delivered).
      const signed = yield* Effect.promise(() => sign(message("alice@sender.test", "Pay 10 EUR\r\n"), "sender.test", "sel", key))
      const changed = yield* sendMail(transport(port), {
        envelope: { from: "bounce@sender.test", to: ["u@example.test"] },
        raw: signed.replace("Pay 10 EUR", "Pay 9999 EUR")
      })
      assert.strictEqual(changed.code, 250, changed.response)

      // 4. p=quarantine and failing: accepted, marked for the routes.
      const quarantined = yield* sendMail(transport(port), {
        from: "news@quarantine.test",
        to: "u@example.test",
        subject: "q",
        text: "q",
        envelope: { from: "x@shady.test", to: ["u@example.test"] }
      })
      assert.strictEqual(quarantined.code, 250, quarantined.response)

      const all = yield* captured.awaitDelivered(3)
      assert.strictEqual(all.length, 3, "the forged message was not stored")
      assert.isFalse(all.some((m) => m.text.includes("urgent wire transfer")))
      const tampered = all.find((m) => m.text.includes("Pay 9999 EUR"))!
      assert.strictEqual(resultsOf(tampered).dkim, "fail")
      assert.match(tampered.text, /dkim=fail reason="body hash did not verify"/)
      const marked = all.find((m) => m.text.includes("news@quarantine.test"))!
      assert.deepStrictEqual(marked.envelope.quarantine?.rule, "dmarc")
      assert.strictEqual(resultsOf(marked).dmarc, "fail")
      const seen = yield* PubSub.takeAll(events)
      assert.strictEqual(seen.filter((e) => e._tag === "MessageQueued").length, 3, "nothing of the refused transaction reached the queue")
      const refusal = seen.find((e) => e._tag === "PolicyVerdict" && e.rule === "dmarc" && e.verdict === "Reject")
      assert.isDefined(refusal, "the refusal is a PolicyVerdict event")
      const passed = seen.find((e) => e._tag === "PolicyVerdict" && e.rule === "dkim" && e.results?.[0]?.result === "pass")
      assert.isDefined(passed, "PolicyVerdict events carry the typed results")
    }), { timeout: 60_000 })

  it.live("the standalone server from a config file: [dns] and [[policies]] spf/dkim/dmarc; a DKIM-signed 50 MiB message passes with RSS growth < 32 MiB", () =>
    Effect.gen(function*() {
      const server = yield* Dnsmasq.start(records)
      const dir = yield* TestIncoming.tempDir()
      const { config, maildir } = writeStandaloneConfig(dir, {
        dnsServer: server.server,
        listener: `max_size = "60MB"`,
        sections: [`[[policies]]\nrule = "spf"`, `[[policies]]\nrule = "dkim"`, `[[policies]]\nrule = "dmarc"`]
      })
      const incoming = yield* serve(["--config", config])
      const pid = incoming.proc.pid!
      const forged = yield* SmtpClient.send({
        port: incoming.port,
        from: "x@shady.test",
        to: ["u@example.test"],
        data: "From: ceo@bank.test\r\nSubject: wire\r\n\r\npay\r\n"
      })
      assert.strictEqual(forged.code, 550)
      const warm = yield* SmtpClient.send({ port: incoming.port, from: "a@sender.test", to: ["u@example.test"], data: "From: a@sender.test\r\nSubject: warm\r\n\r\nhi\r\n" })
      assert.strictEqual(warm.code, 250)
      const [first] = yield* waitForMaildir(maildir, "u@example.test", (files) => files.length >= 1)
      assert.match(readFileSync(first!, "utf8"), /^Authentication-Results: mx\.test;\r\n\tspf=\w+ smtp\.helo=[^\r]+;\r\n\tspf=pass smtp\.mailfrom=a@sender\.test;\r\n\tdkim=none reason="message not signed";\r\n\tdmarc=pass header\.from=sender\.test/)
      resetPeak(pid)
      const before = procKb(pid, "VmRSS")

      const MiB = 1024 * 1024
      const client = yield* SmtpClient.connect({ port: incoming.port, timeoutMs: 60_000 })
      yield* client.command("EHLO client.test")
      assert.strictEqual((yield* client.command("MAIL FROM:<a@sender.test> SIZE=52428800")).code, 250)
      assert.strictEqual((yield* client.command("RCPT TO:<u@example.test>")).code, 250)
      assert.strictEqual((yield* client.command("DATA")).code, 354)
      // Signed by mailauth's signer over the very bytes streamed below (it reads them as a stream).
      const head = "From: a@sender.test\r\nSubject: big\r\n\r\n"
      const { signatures } = yield* Effect.promise(() =>
        dkimSign(Readable.from((function*() {
          yield Buffer.from(head)
          yield* bodyChunks(50 * MiB)
        })()), { canonicalization: "relaxed/relaxed", signatureData: [{ signingDomain: "sender.test", selector: "sel", privateKey: key.privateKey }] } as never)
      )
      yield* client.write(signatures + head)
      yield* streamBody(client, 50 * MiB)
      const reply = yield* client.read
      assert.strictEqual(reply.code, 250, reply.lines.join(" / "))
      const isBig = (f: string) => statSync(f).size > 50 * MiB
      const big = (yield* waitForMaildir(maildir, "u@example.test", (files) => files.some(isBig))).find(isBig)
      assert.isDefined(big, "the 50 MiB message was not delivered")
      const top = readFileSync(big!).subarray(0, 600).toString()
      assert.match(top, /^Authentication-Results: mx\.test;[\s\S]*dkim=pass header\.d=sender\.test[\s\S]*dmarc=pass/)
      const peak = procKb(pid, "VmHWM")
      const growthMiB = (peak - before) / 1024
      console.log(`50 MiB message with spf+dkim+dmarc: server RSS ${(before / 1024).toFixed(1)} MiB before, peak ${(peak / 1024).toFixed(1)} MiB, growth ${growthMiB.toFixed(1)} MiB`)
      assert.isBelow(growthMiB, 32)
    }), { timeout: 180_000 })
})

if (!Dnsmasq.available) {
  describe("email authentication end to end (dnsmasq)", () => {
    it.skip(Dnsmasq.skipMessage, () => undefined)
  })
}
