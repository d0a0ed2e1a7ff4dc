/**
 * Outbound delivery through `incoming serve`, configured the way the outbound issue (#18) says:
 * `[adapters.internet] type = "mx"` with `port`, `helo` and a `dkim` key, a catch-all route to it
 * after the local-domain route, `[delivery] bounces = true` and `[dns] servers` pointing at a real
 * DNS server (dnsmasq on loopback, `--mx-host`/`--host-record`/`--txt-record`). dest.test's MX is
 * an smtp-server on 127.0.0.2 that takes bob@, refuses gone@ with 550 and busy@ once with 451.
 *
 * A trusted client's message from alice@us.test reaches dest.test's MX with a DKIM-Signature of
 * d=us.test that mailauth, asking the same DNS server for the key, verifies (dkim=pass); busy@ is
 * retried and then accepted; gone@ produces a bounce in alice's Maildir with Final-Recipient,
 * Action: failed and a 5.x.x Status, from the null sender.
 */
import { chmodSync, readFileSync, writeFileSync } from "node:fs"
import { Resolver } from "node:dns/promises"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { dkimVerify } from "mailauth"
import PostalMime from "postal-mime"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as DkimKeys from "../support/dkim.ts"
import * as Dnsmasq from "../support/dnsmasq.ts"
import { runCli, serve, waitForMaildir } from "../support/server.ts"
import * as SmtpPeers from "../support/smtpPeers.ts"

if (!Dnsmasq.available) console.warn(Dnsmasq.skipMessage)

/** mailauth's resolver option, answered by the test's dnsmasq (the receiving side's DNS). */
const resolverOf = (server: string) => {
  const r = new Resolver({ timeout: 2_000, tries: 2 })
  r.setServers([server])
  return (async (name: string, type: string) => {
    if (type === "TXT") return r.resolveTxt(name)
    if (type === "MX") return r.resolveMx(name)
    if (type === "A") return r.resolve4(name)
    if (type === "AAAA") return r.resolve6(name)
    throw Object.assign(new Error(`unsupported ${type}`), { code: "ENOTFOUND" })
  }) as never
}

const waitUntil = (what: string, ok: () => boolean, timeoutMs = 20_000) =>
  Effect.gen(function*() {
    for (let waited = 0; !ok(); waited += 50) {
      if (waited >= timeoutMs) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("50 millis")
    }
  })

describe.skipIf(!Dnsmasq.available)("outbound MX delivery through incoming serve (dnsmasq, loopback MX)", () => {
  it.live("DKIM-signed mail reaches dest.test's MX (dkim=pass); 4xx is retried then accepted; a 5xx recipient bounces to the local sender", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-outbound-mx-")
      const key = DkimKeys.rsaKey(2048)
      const keyFile = join(dir, "dkim.pem")
      writeFileSync(keyFile, key.privateKey)
      chmodSync(keyFile, 0o600)

      const mx = yield* SmtpPeers.start("127.0.0.2", 0)
      const dns = yield* Dnsmasq.start({
        MX: { "dest.test": [{ exchange: "mx.dest.test", priority: 10 }] },
        A: { "mx.dest.test": "127.0.0.2" },
        TXT: { "out._domainkey.us.test": [key.record] }
      })

      writeFileSync(join(dir, "incoming.toml"), [
        `hostname = "mx.us.test"`,
        `domains = ["us.test"]`,
        `data_dir = "data"`,
        `[[listeners]]\nhost = "127.0.0.1"\nport = 0`,
        `[relay]\ntrusted_networks = ["127.0.0.1/32"]`,
        `[dns]\nservers = ["${dns.server}"]\ntimeout = "1s"`,
        `[delivery]\nbounces = true\nbackoff = { base = "200ms", max = "500ms" }`,
        `[adapters.mailboxes]\ntype = "maildir"\nroot = "mail"`,
        `[adapters.internet]\ntype = "mx"\nport = ${mx.port}\nhelo = "out.us.test"\ntls = "disabled"\n` +
        `dkim = { domain = "us.test", selector = "out", private_key = "dkim.pem" }`,
        `[[routes]]\nmatch = ["*@us.test"]\nadapter = "mailboxes"`,
        `[[routes]]\nmatch = ["*"]\nadapter = "internet"`
      ].join("\n\n"))

      const checked = yield* runCli(["check-config", "--config", "incoming.toml"], { cwd: dir })
      assert.strictEqual(checked.code, 0, checked.stderr)
      assert.strictEqual(checked.stderr, `${join(dir, "incoming.toml")}: valid\n`)

      const server = yield* serve(["--config", "incoming.toml"], dir)
      const c = yield* SmtpClient.connect({ port: server.port })
      yield* c.command("EHLO client.us.test")
      assert.strictEqual((yield* c.command("MAIL FROM:<alice@us.test>")).code, 250)
      for (const rcpt of ["bob@dest.test", "gone@dest.test", "busy@dest.test"]) {
        const reply = yield* c.command(`RCPT TO:<${rcpt}>`)
        assert.strictEqual(reply.code, 250, `${rcpt}: ${reply.text}`)
      }
      assert.strictEqual((yield* c.command("DATA")).code, 354)
      yield* c.write(
        "From: Alice <alice@us.test>\r\nTo: bob@dest.test\r\nSubject: outbound through serve\r\n" +
          "Date: Fri, 04 Dec 2026 22:00:00 +0000\r\nMessage-ID: <outbound-1@us.test>\r\n\r\nHello Bob,\r\nsigned on the way out.\r\n.\r\n"
      )
      const queued = yield* c.read
      assert.strictEqual(queued.code, 250, queued.text)
      yield* c.command("QUIT")

      // First transaction: bob@ accepted, gone@ 550, busy@ 451; the retry carries busy@ alone.
      yield* waitUntil("bob@ and busy@ at dest.test's MX", () => mx.seen.flatMap((s) => s.to).includes("busy@dest.test"))
      assert.deepStrictEqual(mx.seen.map((s) => [...s.to]), [["bob@dest.test"], ["busy@dest.test"]])
      assert.strictEqual(mx.seen[0]!.from, "alice@us.test")
      assert.strictEqual(mx.seen[0]!.helo, "out.us.test")

      // The receiving side checks the signature with mailauth, asking the same DNS for the key.
      for (const seen of mx.seen) {
        assert.match(seen.body, /^DKIM-Signature: [^]*\bd=us\.test;[^]*\bs=out;/)
        const verified = yield* Effect.promise(() => dkimVerify(Buffer.from(seen.body), { resolver: resolverOf(dns.server) }))
        const result = verified.results[0]!
        assert.strictEqual(result.status.result, "pass", JSON.stringify(result.status))
        assert.strictEqual(result.signingDomain, "us.test")
      }

      // The bounce for gone@: in alice's Maildir, an RFC 3464 report (queued from the null sender).
      const maildir = join(dir, "mail")
      const [bounceFile] = yield* waitForMaildir(maildir, "alice@us.test", (f) => f.length >= 1)
      assert.isDefined(bounceFile, "a bounce reached the local sender")
      const raw = readFileSync(bounceFile!)
      const text = raw.toString("utf8")
      assert.match(text, /^Auto-Submitted: auto-replied\r?$/m)
      assert.match(text, /^Content-Type: multipart\/report; report-type=delivery-status;/m)
      assert.match(text, /^Reporting-MTA: dns; mx\.us\.test\r?$/m)
      assert.match(text, /^Final-Recipient: rfc822; gone@dest\.test\r?$/m)
      assert.match(text, /^Action: failed\r?$/m)
      assert.match(text, /^Status: 5\.1\.1\r?$/m)
      assert.match(text, /^Remote-MTA: dns; mx\.dest\.test\r?$/m)
      assert.match(text, /^Diagnostic-Code: smtp; 550 5\.1\.1 no such user/m)
      assert.notMatch(text, /Final-Recipient: rfc822; (bob|busy)@dest\.test/)
      const parsed = yield* Effect.promise(() => PostalMime.parse(raw))
      assert.strictEqual(parsed.from?.address, "MAILER-DAEMON@mx.us.test")
      assert.isTrue(parsed.attachments.some((a) => a.mimeType === "message/delivery-status"))
      const headers = parsed.attachments.find((a) => a.mimeType === "text/rfc822-headers")
      assert.include(Buffer.from(headers!.content as ArrayBuffer).toString(), "Subject: outbound through serve")

      yield* server.waitFor(/bounce \w+ queued to <alice@us\.test> for gone@dest\.test/)
      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
      assert.notInclude(server.output(), "\"level\":\"ERROR\"")
    }), { timeout: 90_000 })
})
