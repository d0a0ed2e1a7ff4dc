/**
 * MTA-STS (RFC 8461) on the way out, over real sockets: dnsmasq on loopback serves the MX
 * records, the `_mta-sts` TXT records (`v=STSv1; id=1`) and `mta-sts.<domain>` → 127.0.0.1; one
 * loopback HTTPS server with a self-signed certificate the adapter trusts (its `tls_ca`) serves
 * every domain's policy on a port of its own (`mta_sts_port`); smtp-server instances on
 * 127.0.0.x are the MX hosts, some with STARTTLS and a trusted certificate, one without STARTTLS.
 *
 *   enforce.test  MX mx.good.test (STARTTLS, valid)       enforce, mx *.good.test   → delivered over TLS
 *   wrongmx.test  MX mx.other.test (STARTTLS, valid)      enforce, mx mx.good.test  → not tried, retried
 *   notls.test    MX mx.plain.test (no STARTTLS)          enforce, mx mx.plain.test → retried
 *   badname.test  MX mx.badname.test (mx.good.test cert)  enforce, mx *.badname.test → retried
 *   testing.test  MX mx.plain.test                        testing, mx mx.good.test  → delivered (reported)
 *   broken.test   MX mx.plain.test                        policy host answers 404   → delivered (no policy, §5)
 *   nosts.test    MX mx.plain.test                        no TXT record             → delivered
 *
 * Then the same through `incoming serve` with `mta_sts = true` in the file.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as MxAdapter from "../../src/delivery/MxAdapter.ts"
import { Dns } from "../../src/dns/Dns.ts"
import * as NodeDns from "../../src/dns/NodeDns.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl } from "../smtp/helpers.ts"
import * as Dnsmasq from "../support/dnsmasq.ts"
import { envelope } from "../support/fixtures.ts"
import * as Fixtures from "../support/mtaSts.ts"
import { serve } from "../support/server.ts"
import * as SmtpPeers from "../support/smtpPeers.ts"

const ready = Dnsmasq.available && hasOpenssl
if (!Dnsmasq.available) console.warn(Dnsmasq.skipMessage)
if (!hasOpenssl) console.warn("openssl is not installed: the MTA-STS tests (they need certificates) are skipped")

const text = "From: sender@us.test\r\nSubject: mta-sts\r\n\r\nhello\r\n"
let serial = 0
const delivery = (rcpts: ReadonlyArray<string>): DA.Delivery => ({
  id: `01STSTEST${String(++serial).padStart(7, "0")}`,
  envelope: envelope(rcpts, "sender@us.test"),
  receivedAt: 0,
  recipients: rcpts.map((rcpt) => ({ rcpt, attempt: 1 })),
  size: Buffer.byteLength(text),
  body: DA.bodyStream(() => BodyStream.fromParts("", [Buffer.from(text)]))
})

const domains = ["enforce.test", "wrongmx.test", "notls.test", "badname.test", "testing.test", "broken.test"]

const world = Effect.gen(function*() {
  const dir = yield* TestIncoming.tempDir("incoming-mta-sts-e2e-")
  const policyCert = Fixtures.certificate(dir, "policy-hosts", domains.map((d) => `mta-sts.${d}`))
  const goodCert = Fixtures.certificate(dir, "mx-good", ["mx.good.test"])
  const otherCert = Fixtures.certificate(dir, "mx-other", ["mx.other.test"])
  const policies = yield* Fixtures.serve(policyCert)
  policies.answers.set("mta-sts.enforce.test", Fixtures.policy("enforce", ["*.good.test"]))
  policies.answers.set("mta-sts.wrongmx.test", Fixtures.policy("enforce", ["mx.good.test"]))
  policies.answers.set("mta-sts.notls.test", Fixtures.policy("enforce", ["mx.plain.test"]))
  policies.answers.set("mta-sts.badname.test", Fixtures.policy("enforce", ["*.badname.test"]))
  policies.answers.set("mta-sts.testing.test", Fixtures.policy("testing", ["mx.good.test"]))
  // broken.test: no answer, so the policy host says 404.

  const good = yield* SmtpPeers.start("127.0.0.2", 0, { key: goodCert.key, cert: goodCert.cert })
  const port = good.port
  const plain = yield* SmtpPeers.start("127.0.0.3", port)
  const other = yield* SmtpPeers.start("127.0.0.4", port, { key: otherCert.key, cert: otherCert.cert })
  // Presents mx.good.test's (trusted) certificate under the name mx.badname.test.
  const badname = yield* SmtpPeers.start("127.0.0.5", port, { key: goodCert.key, cert: goodCert.cert })
  const mx = (host: string) => [{ exchange: host, priority: 10 }]
  const dnsmasq = yield* Dnsmasq.start({
    MX: {
      "enforce.test": mx("mx.good.test"),
      "wrongmx.test": mx("mx.other.test"),
      "notls.test": mx("mx.plain.test"),
      "badname.test": mx("mx.badname.test"),
      "testing.test": mx("mx.plain.test"),
      "broken.test": mx("mx.plain.test"),
      "nosts.test": mx("mx.plain.test")
    },
    A: {
      "mx.good.test": "127.0.0.2",
      "mx.plain.test": "127.0.0.3",
      "mx.other.test": "127.0.0.4",
      "mx.badname.test": "127.0.0.5",
      ...Object.fromEntries(domains.map((d) => [`mta-sts.${d}`, "127.0.0.1"]))
    },
    TXT: Object.fromEntries(domains.map((d) => [`_mta-sts.${d}`, ["v=STSv1; id=1"]]))
  })
  // One PEM file with every certificate the tests trust, as an operator's tls_ca would be.
  const caFile = join(dir, "trusted.pem")
  writeFileSync(caFile, [policyCert.cert, goodCert.cert, otherCert.cert].join(""))
  return { dir, caFile, port, policies, good, plain, other, badname, dnsmasq, trusted: [policyCert.cert, goodCert.cert, otherCert.cert] }
})

const outcome = (outcomes: ReadonlyArray<DA.RecipientOutcome>) => {
  const o = outcomes[0]!
  return o._tag === "Ok" ? "Ok" : `${o._tag}: ${o.reason}`
}

describe.skipIf(!ready)("MTA-STS through the MX adapter (dnsmasq, loopback HTTPS policy host, loopback MXes)", () => {
  it.live("enforce delivers only to listed MXes over verified TLS (else retried); testing and a missing policy deliver", () =>
    Effect.gen(function*() {
      const w = yield* world
      const dns = yield* NodeDns.make({ servers: [w.dnsmasq.server], timeoutMs: 2_000, tries: 2 })
      const adapter = yield* MxAdapter.make({
        port: w.port,
        heloName: "out.us.test",
        connectTimeoutMs: 10_000,
        tlsCa: w.trusted,
        mtaSts: { port: w.policies.port }
      }).pipe(Effect.provideService(Dns, dns))
      // What the adapter logs (testing mode reports by log line and metric).
      const logs: Array<string> = []
      const collect = Logger.layer([Logger.make(({ message }) => {
        logs.push(Array.isArray(message) ? message.join(" ") : String(message))
      })])
      const send = (rcpt: string) => Effect.map(adapter.deliver(delivery([rcpt])), outcome).pipe(Effect.provide(collect))

      // enforce + listed MX + valid certificate: delivered, over TLS.
      assert.strictEqual(yield* send("a@enforce.test"), "Ok")
      assert.deepStrictEqual(w.good.seen.map((s) => [s.to[0], s.secure]), [["a@enforce.test", true]])

      // enforce + an MX the policy does not list: not even tried, retried (4xx).
      const wrong = yield* send("b@wrongmx.test")
      assert.match(wrong, /^Retry: 451 4\.7\.5 no MX host of wrongmx\.test is allowed by its MTA-STS policy \(enforce, mx: mx\.good\.test\)/)
      assert.strictEqual(w.other.connections(), 0)

      // enforce + an MX without STARTTLS: retried, nothing sent in the clear.
      const notls = yield* send("c@notls.test")
      assert.match(notls, /^Retry: 451 4\.7\.5 no MX host of notls\.test offered STARTTLS with a valid certificate/)
      // enforce + a trusted certificate for another name: retried.
      const badname = yield* send("d@badname.test")
      assert.match(badname, /^Retry: 451 4\.7\.5 no MX host of badname\.test offered STARTTLS with a valid certificate[^]*mx\.badname\.test/)
      assert.strictEqual(w.badname.seen.length, 0)

      // testing: delivered as usual although the MX is unlisted and has no STARTTLS; both reported.
      assert.strictEqual(yield* send("e@testing.test"), "Ok")
      assert.isTrue(logs.some((l) => /MTA-STS \(testing, id 1\) of testing\.test does not list MX mx\.plain\.test .*delivering anyway/.test(l)), logs.join("\n"))
      assert.isTrue(logs.some((l) => /MTA-STS \(testing\) of testing\.test: mx\.plain\.test \[127\.0\.0\.3\] would be refused under enforce: no STARTTLS/.test(l)), logs.join("\n"))
      // The policy host fails (404) and nothing is cached: delivered as without MTA-STS (§5).
      assert.strictEqual(yield* send("f@broken.test"), "Ok")
      // No policy at all.
      assert.strictEqual(yield* send("g@nosts.test"), "Ok")
      assert.deepStrictEqual(w.plain.seen.map((s) => [s.to[0], s.secure]), [["e@testing.test", false], ["f@broken.test", false], ["g@nosts.test", false]])

      // Each policy was fetched once, from the well-known path; none for the domain without a record.
      for (const d of domains) assert.strictEqual(w.policies.requests(`mta-sts.${d}`), 1, d)
      assert.isTrue(w.policies.paths.every((p) => p === "/.well-known/mta-sts.txt"))

      // Cached: a second message to the enforced domain fetches nothing and goes the same way.
      assert.strictEqual(yield* send("h@enforce.test"), "Ok")
      assert.strictEqual(w.policies.requests("mta-sts.enforce.test"), 1)
      assert.match(yield* send("i@wrongmx.test"), /^Retry: 451 4\.7\.5/)
    }), { timeout: 90_000 })

  it.live("incoming serve with mta_sts = true: the enforced domain gets its mail over TLS, the unlisted MX gets none", () =>
    Effect.gen(function*() {
      const w = yield* world
      writeFileSync(join(w.dir, "incoming.toml"), [
        `hostname = "mx.us.test"`,
        `domains = ["us.test"]`,
        `data_dir = "data"`,
        `[[listeners]]\nhost = "127.0.0.1"\nport = 0`,
        `[relay]\ntrusted_networks = ["127.0.0.1/32"]`,
        `[dns]\nservers = ["${w.dnsmasq.server}"]\ntimeout = "1s"`,
        `[delivery]\nbackoff = { base = "500ms", max = "1s" }`,
        `[adapters.local]\ntype = "maildir"\nroot = "mail"`,
        `[adapters.internet]\ntype = "mx"\nport = ${w.port}\nhelo = "out.us.test"\ntls_ca = "trusted.pem"\nmta_sts = true\nmta_sts_port = ${w.policies.port}`,
        `[[routes]]\nmatch = ["*@us.test"]\nadapter = "local"`,
        `[[routes]]\nmatch = ["*"]\nadapter = "internet"`
      ].join("\n\n"))
      const server = yield* serve(["--config", "incoming.toml"], w.dir)
      yield* SmtpClient.send({
        port: server.port,
        from: "alice@us.test",
        to: ["bob@enforce.test", "carol@wrongmx.test"],
        data: "From: alice@us.test\r\nSubject: through serve\r\n\r\nhello\r\n"
      })
      const refusals = () => server.output().split("\n").filter((l) => /does not list MX mx\.other\.test/.test(l)).length
      // bob@ delivered over TLS; carol@ refused, then refused again on retry (the backoff is short).
      for (let waited = 0; !w.good.seen.some((s) => s.to.includes("bob@enforce.test")) || refusals() < 2; waited += 100) {
        if (waited > 60_000) return yield* Effect.die(new Error(`no delivery to mx.good.test and two refusals:\n${server.output()}`))
        yield* Effect.sleep("100 millis")
      }
      assert.isTrue(w.good.seen[0]!.secure)
      assert.strictEqual(w.other.connections(), 0, "mx.other.test, not in the policy, hears nothing")
      // The policy was fetched once for both attempts (cached).
      assert.strictEqual(w.policies.requests("mta-sts.wrongmx.test"), 1)
      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
    }), { timeout: 120_000 })
})
