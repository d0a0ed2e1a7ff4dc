/**
 * The MX adapter over real sockets and a real DNS server: dnsmasq on loopback answers MX and A
 * for `.test` domains whose MX hosts are smtp-server instances on 127.0.0.x, all on one port
 * (the adapter's `port`, as real MXes share 25). Covers preference order and fallback, implicit
 * and null MX, per-recipient replies, a connection dropped mid-DATA, STARTTLS with a self-signed
 * certificate, per-domain grouping, connection reuse, the per-domain limit, the pause of a
 * domain whose MXes refuse connections, SMTPUTF8/8BITMIME needs a peer cannot meet, the local
 * address connections come from, and DKIM keys chosen by the sender's domain.
 */
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, type Scope } from "effect"
import { dkimVerify } from "mailauth"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as DkimSigner from "../../src/delivery/dkim/DkimSigner.ts"
import * as MxAdapter from "../../src/delivery/MxAdapter.ts"
import { Dns } from "../../src/dns/Dns.ts"
import * as NodeDns from "../../src/dns/NodeDns.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { CapturingAdapter, TestIncoming } from "../../src/testing/index.ts"
import * as DkimKeys from "../support/dkim.ts"
import * as Dnsmasq from "../support/dnsmasq.ts"
import { envelope } from "../support/fixtures.ts"
import * as SmtpPeers from "../support/smtpPeers.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"

if (!Dnsmasq.available) console.warn(Dnsmasq.skipMessage)

const text = "From: sender@us.test\r\nSubject: outbound\r\n\r\n.starts with a dot\r\nbody\r\n"

let serial = 0
const delivery = (
  rcpts: ReadonlyArray<string>,
  options: { readonly from?: string; readonly body?: string; readonly smtpUtf8?: boolean; readonly priority?: number } = {}
): DA.Delivery => {
  const body = options.body ?? text
  return {
    id: `01MXTEST${String(++serial).padStart(8, "0")}`,
    envelope: {
      ...envelope(rcpts, options.from ?? "sender@us.test"),
      ...(options.smtpUtf8 ? { smtpUtf8: true } : {}),
      ...(options.priority !== undefined ? { priority: options.priority } : {})
    },
    receivedAt: 0,
    recipients: rcpts.map((rcpt) => ({ rcpt, attempt: 1 })),
    size: Buffer.byteLength(body) + 13,
    body: DA.bodyStream(() => BodyStream.fromParts("Received: x\r\n", [Buffer.from(body)]))
  }
}

const byRcpt = (outcomes: ReadonlyArray<DA.RecipientOutcome>) =>
  Object.fromEntries(outcomes.map((o) => [o.rcpt, `${o._tag}: ${o._tag === "Ok" ? o.reply ?? "" : o.reason}`]))
const tags = (outcomes: ReadonlyArray<DA.RecipientOutcome>) => Object.fromEntries(outcomes.map((o) => [o.rcpt, o._tag]))

/**
 * The test world: peers on 127.0.0.2.. sharing the port of the first one, and dnsmasq serving
 *   dest.test      MX 10 mx1.dest.test (127.0.0.2)
 *   backup.test    MX 10 down.backup.test (127.0.0.9, nobody listens), MX 20 mx2.backup.test (127.0.0.3)
 *   implicit.test  no MX, A 127.0.0.2
 *   null.test      MX 0 .
 *   dead.test      MX 10 down.dead.test (127.0.0.9)
 *   plain.test     MX 10 mx.plain.test (127.0.0.4: no 8BITMIME, no SMTPUTF8)
 *   tls.test       MX 10 mx.test (127.0.0.5: STARTTLS with a self-signed certificate for mx.test)
 *   prio.test      MX 10 mx.prio.test (127.0.0.6), quiet.test MX 10 mx.quiet.test (127.0.0.7): for
 *                  the Incoming servers a test starts there
 */
const world = (options: { readonly tlsCert?: { readonly cert: string; readonly key: string } } = {}) =>
  Effect.gen(function*() {
    const mx1 = yield* SmtpPeers.start("127.0.0.2", 0)
    const port = mx1.port
    const mx2 = yield* SmtpPeers.start("127.0.0.3", port)
    const plain = yield* SmtpPeers.start("127.0.0.4", port, { hide8BITMIME: true, hideSMTPUTF8: true })
    const tls = options.tlsCert === undefined
      ? undefined
      : yield* SmtpPeers.start("127.0.0.5", port, { key: readFileSync(options.tlsCert.key), cert: readFileSync(options.tlsCert.cert) })
    const dnsmasq = yield* Dnsmasq.start({
      MX: {
        "dest.test": [{ exchange: "mx1.dest.test", priority: 10 }],
        "backup.test": [{ exchange: "down.backup.test", priority: 10 }, { exchange: "mx2.backup.test", priority: 20 }],
        "null.test": [{ exchange: ".", priority: 0 }],
        "dead.test": [{ exchange: "down.dead.test", priority: 10 }],
        "plain.test": [{ exchange: "mx.plain.test", priority: 10 }],
        "tls.test": [{ exchange: "mx.test", priority: 10 }],
        "prio.test": [{ exchange: "mx.prio.test", priority: 10 }],
        "quiet.test": [{ exchange: "mx.quiet.test", priority: 10 }]
      },
      A: {
        "mx1.dest.test": "127.0.0.2",
        "down.backup.test": "127.0.0.9",
        "mx2.backup.test": "127.0.0.3",
        "implicit.test": "127.0.0.2",
        "down.dead.test": "127.0.0.9",
        "mx.plain.test": "127.0.0.4",
        "mx.test": "127.0.0.5",
        "mx.prio.test": "127.0.0.6",
        "mx.quiet.test": "127.0.0.7"
      }
    })
    const dns = yield* NodeDns.make({ servers: [dnsmasq.server], timeoutMs: 2_000, tries: 2 })
    const adapter = (options: MxAdapter.MxOptions = {}): Effect.Effect<DA.DeliveryAdapter["Service"], never, Scope.Scope> =>
      MxAdapter.make({ port, heloName: "out.us.test", connectTimeoutMs: 5_000, ...options }).pipe(Effect.provideService(Dns, dns))
    return { mx1, mx2, plain, tls, port, adapter }
  })

describe.skipIf(!Dnsmasq.available)("MxAdapter against dnsmasq and loopback MXes", () => {
  it.live("delivers to the domain's MX: one transaction per domain with all its recipients", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const mx = yield* w.adapter()
      const out = yield* mx.deliver(delivery(["a@dest.test", "b@dest.test", "c@implicit.test"]))
      assert.deepStrictEqual(tags(out), { "a@dest.test": "Ok", "b@dest.test": "Ok", "c@implicit.test": "Ok" })
      assert.match(byRcpt(out)["a@dest.test"]!, /^Ok: 127\.0\.0\.2:\d+ said: 250 2\.0\.0 queued as PEER1$/)
      // dest.test and implicit.test (no MX: its A record) are the same host: two transactions.
      const seen = w.mx1.seen.map((s) => [...s.to].sort().join(",")).sort()
      assert.deepStrictEqual(seen, ["a@dest.test,b@dest.test", "c@implicit.test"])
      assert.strictEqual(w.mx1.seen[0]!.from, "sender@us.test")
      assert.strictEqual(w.mx1.seen[0]!.helo, "out.us.test")
      assert.strictEqual(w.mx1.seen[0]!.body, `Received: x\r\n${text}`)
    }))

  it.live("the first MX refuses connections: the next by preference takes the mail", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const mx = yield* w.adapter()
      const out = yield* mx.deliver(delivery(["a@backup.test"]))
      assert.deepStrictEqual(tags(out), { "a@backup.test": "Ok" })
      assert.match(byRcpt(out)["a@backup.test"]!, /^Ok: 127\.0\.0\.3:/)
      assert.strictEqual(w.mx2.seen.length, 1)
    }))

  it.live("per-recipient replies: 5xx for one of two is rejected with the reply, 4xx retried and then accepted", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const mx = yield* w.adapter()
      const out = yield* mx.deliver(delivery(["ok@dest.test", "gone@dest.test", "busy@dest.test"]))
      assert.deepStrictEqual(tags(out), { "ok@dest.test": "Ok", "gone@dest.test": "Reject", "busy@dest.test": "Retry" })
      assert.match(byRcpt(out)["gone@dest.test"]!, /^Reject: 550 5\.1\.1 no such user/)
      assert.match(byRcpt(out)["busy@dest.test"]!, /^Retry: 451 4\.2\.1 mailbox busy/)
      // The 4xx recipient's next attempt: the peer accepts it this time (it is no longer "busy").
      const later = yield* mx.deliver(delivery(["busy@dest.test"]))
      assert.deepStrictEqual(tags(later), { "busy@dest.test": "Ok" })
      const refusedAtDot = yield* mx.deliver(delivery(["datafail5@dest.test", "ok2@dest.test"]))
      assert.deepStrictEqual(tags(refusedAtDot), { "datafail5@dest.test": "Reject", "ok2@dest.test": "Reject" })
      const laterAtDot = yield* mx.deliver(delivery(["datafail4@dest.test"]))
      assert.deepStrictEqual(tags(laterAtDot), { "datafail4@dest.test": "Retry" })
    }))

  it.live("a connection dropped mid-DATA retries, and the next message gets a fresh connection", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const mx = yield* w.adapter()
      const out = yield* mx.deliver(delivery(["drop@dest.test"]))
      assert.deepStrictEqual(tags(out), { "drop@dest.test": "Retry" })
      assert.strictEqual(w.mx1.seen.length, 0)
      const next = yield* mx.deliver(delivery(["ok@dest.test"]))
      assert.deepStrictEqual(tags(next), { "ok@dest.test": "Ok" })
    }))

  it.live("null MX and a domain that does not exist are permanent; an unreachable domain is retried, then paused", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const mx = yield* w.adapter({ pauseAfterFailures: 2, pauseMs: 60_000, connectTimeoutMs: 2_000 })
      const out = yield* mx.deliver(delivery(["a@null.test", "b@nowhere.test"]))
      assert.deepStrictEqual(tags(out), { "a@null.test": "Reject", "b@nowhere.test": "Reject" })
      assert.match(byRcpt(out)["a@null.test"]!, /^Reject: 556 5\.1\.10 /)
      assert.match(byRcpt(out)["b@nowhere.test"]!, /^Reject: 550 5\.1\.2 /)

      const first = yield* mx.deliver(delivery(["a@dead.test"]))
      assert.match(byRcpt(first)["a@dead.test"]!, /^Retry: 451 4\.4\.1 no MX host of dead\.test took a connection: down\.dead\.test \[127\.0\.0\.9\]: .*ECONNREFUSED/)
      const second = yield* mx.deliver(delivery(["a@dead.test"]))
      assert.strictEqual(second[0]!._tag, "Retry")
      // Paused: no connection is tried, the retry waits for the end of the pause.
      const third = yield* mx.deliver(delivery(["a@dead.test"]))
      const paused = third[0]!
      assert.strictEqual(paused._tag, "Retry")
      assert.include(byRcpt(third)["a@dead.test"], "paused")
      assert.isTrue(paused._tag === "Retry" && paused.at !== undefined && paused.at > Date.now() + 30_000)
      // Other domains are not affected.
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["a@dest.test"]))), { "a@dest.test": "Ok" })
    }))

  it.live("connections are reused across messages (RSET) up to the cap", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const mx = yield* w.adapter({ maxMessagesPerConnection: 3 })
      for (let i = 0; i < 5; i++) assert.deepStrictEqual(tags(yield* mx.deliver(delivery([`r${i}@dest.test`]))), { [`r${i}@dest.test`]: "Ok" })
      assert.strictEqual(w.mx1.seen.length, 5)
      assert.strictEqual(w.mx1.connections(), 2, "3 messages on the first connection, 2 on the second")
      const fresh = yield* w.adapter({ idleTimeoutMs: 0 })
      for (let i = 0; i < 3; i++) yield* fresh.deliver(delivery([`s${i}@dest.test`]))
      assert.strictEqual(w.mx1.connections(), 5, "without reuse, one connection per message")
    }))

  it.live("at most maxConnectionsPerDomain transactions to a domain at once", () =>
    Effect.gen(function*() {
      const slow = yield* SmtpPeers.start("127.0.0.6", 0, { dataDelayMs: 150 })
      const dnsmasq = yield* Dnsmasq.start({ MX: { "slow.test": [{ exchange: "mx.slow.test", priority: 5 }] }, A: { "mx.slow.test": "127.0.0.6" } })
      const dns = yield* NodeDns.make({ servers: [dnsmasq.server], timeoutMs: 2_000, tries: 2 })
      const limited = yield* MxAdapter.make({ port: slow.port, maxConnectionsPerDomain: 2 }).pipe(Effect.provideService(Dns, dns))
      const outs = yield* Effect.forEach(Array.from({ length: 6 }, (_, i) => i), (i) => limited.deliver(delivery([`r${i}@slow.test`])), {
        concurrency: "unbounded"
      })
      assert.isTrue(outs.flat().every((o) => o._tag === "Ok"))
      assert.strictEqual(slow.seen.length, 6)
      assert.strictEqual(slow.maxConcurrentData(), 2)
      assert.isAtMost(slow.connections(), 2)
    }))

  it.live("a message that needs SMTPUTF8 or 8BITMIME fails for good at a peer without it; ASCII mail goes", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const mx = yield* w.adapter()
      const utf8Address = yield* mx.deliver(delivery(["jürgen@plain.test"], { smtpUtf8: true }))
      assert.match(byRcpt(utf8Address)["jürgen@plain.test"]!, /^Reject: 550 5\.6\.7 .*SMTPUTF8/)
      const utf8Header = yield* mx.deliver(delivery(["a@plain.test"], { smtpUtf8: true, body: "Subject: grüße\r\n\r\nhi\r\n" }))
      assert.match(byRcpt(utf8Header)["a@plain.test"]!, /^Reject: 550 5\.6\.7 /)
      const eightBit = yield* mx.deliver(delivery(["b@plain.test"], { body: "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ngrüße\r\n" }))
      assert.match(byRcpt(eightBit)["b@plain.test"]!, /^Reject: 554 5\.6\.3 /)
      assert.strictEqual(w.plain.seen.length, 0, "nothing was sent downgraded")
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["c@plain.test"]))), { "c@plain.test": "Ok" })
      // A peer with both extensions takes the same messages.
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["jürgen@dest.test"], { smtpUtf8: true }))), { "jürgen@dest.test": "Ok" })
      assert.deepStrictEqual(w.plain.seen.map((s) => s.to), [["c@plain.test"]])
    }))

  it.live.skipIf(!hasOpenssl)("STARTTLS with a self-signed certificate: opportunistic delivers, required (verified) retries", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const cert = selfSignedCert(dir)
      const w = yield* world({ tlsCert: cert })
      const opportunistic = yield* w.adapter()
      assert.deepStrictEqual(tags(yield* opportunistic.deliver(delivery(["a@tls.test"]))), { "a@tls.test": "Ok" })
      assert.isTrue(w.tls!.seen[0]!.secure, "the session was upgraded")

      const required = yield* w.adapter({ tls: "required" })
      const untrusted = yield* required.deliver(delivery(["b@tls.test"]))
      assert.strictEqual(untrusted[0]!._tag, "Retry")
      assert.match(byRcpt(untrusted)["b@tls.test"]!, /certificate/i)
      // Plain-text MX with TLS required: retried, nothing sent in the clear.
      const plain = yield* required.deliver(delivery(["c@dest.test"]))
      assert.strictEqual(plain[0]!._tag, "Retry")
      assert.strictEqual(w.mx1.seen.length, 0)

      // Verified against the certificate's name (the MX host name, mx.test) with its CA trusted.
      const trusted = yield* w.adapter({ tls: "required", tlsCa: readFileSync(cert.cert) })
      assert.deepStrictEqual(tags(yield* trusted.deliver(delivery(["d@tls.test"]))), { "d@tls.test": "Ok" })
      assert.strictEqual(w.tls!.seen.length, 2)
    }))
})

describe.skipIf(!Dnsmasq.available)("MxAdapter local_address", () => {
  it.live("connections to the MX come from the configured local address", () =>
    Effect.gen(function*() {
      const w = yield* world()
      // Without it the kernel picks the source (127.0.0.1 towards 127.0.0.x on loopback).
      const plain = yield* w.adapter()
      assert.deepStrictEqual(tags(yield* plain.deliver(delivery(["a@dest.test"]))), { "a@dest.test": "Ok" })
      assert.strictEqual(w.mx1.seen.at(-1)!.remote, "127.0.0.1")
      const bound = yield* w.adapter({ localAddress: "127.0.0.8" })
      assert.deepStrictEqual(tags(yield* bound.deliver(delivery(["b@dest.test", "c@backup.test"]))), { "b@dest.test": "Ok", "c@backup.test": "Ok" })
      assert.deepStrictEqual([w.mx1.seen.at(-1)!.to, w.mx1.seen.at(-1)!.remote], [["b@dest.test"], "127.0.0.8"])
      // The fallback MX of backup.test (after the one refusing connections) too.
      assert.deepStrictEqual([w.mx2.seen.at(-1)!.to, w.mx2.seen.at(-1)!.remote], [["c@backup.test"], "127.0.0.8"])
    }))

  it.live("an address this host does not have: retried, not bounced", () =>
    Effect.gen(function*() {
      const w = yield* world()
      // 192.0.2.1 (TEST-NET-1) is nobody's: bind() fails with EADDRNOTAVAIL.
      const mx = yield* w.adapter({ localAddress: "192.0.2.1" })
      const out = yield* mx.deliver(delivery(["d@dest.test"]))
      assert.strictEqual(out[0]!._tag, "Retry")
      assert.match(byRcpt(out)["d@dest.test"]!, /451 4\.4\.1 no MX host of dest\.test took a connection/)
      assert.strictEqual(w.mx1.seen.length, 0)
    }))
})

describe.skipIf(!Dnsmasq.available)("MxAdapter and MT-PRIORITY (RFC 6710)", () => {
  it.live("passed on to a next hop that offers it, and only then", () =>
    Effect.gen(function*() {
      const w = yield* world()
      // Incoming as the next hop: it offers MT-PRIORITY to trusted clients and records the level it
      // got (envelope.priority); an untrusted client is not offered it, and a level sent anyway
      // is recorded as the annotation mt-priority-ignored.
      const nextHop = (host: string, domain: string, trusted: boolean) =>
        Effect.gen(function*() {
          const ctx = yield* Layer.build(TestIncoming.layer({
            domains: [domain],
            listener: { host, port: w.port },
            relay: { trustedNetworks: trusted ? ["127.0.0.0/8"] : [] }
          }))
          return yield* Effect.provide(CapturingAdapter.Captured, ctx)
        })
      const offers = yield* nextHop("127.0.0.6", "prio.test", true)
      const quiet = yield* nextHop("127.0.0.7", "quiet.test", false)
      const mx = yield* w.adapter()
      for (const [i, priority] of [9, -4, 0].entries()) {
        assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["u@prio.test"], { priority }))), { "u@prio.test": "Ok" })
        assert.strictEqual((yield* offers.awaitDelivered(i + 1))[i]!.envelope.priority, priority)
      }
      // No level of our own: none sent.
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["u@prio.test"]))), { "u@prio.test": "Ok" })
      assert.isUndefined((yield* offers.awaitDelivered(4))[3]!.envelope.priority)
      // A next hop that does not offer it gets no parameter (it would record one it ignored).
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["u@quiet.test"], { priority: 9 }))), { "u@quiet.test": "Ok" })
      const [got] = yield* quiet.awaitDelivered(1)
      assert.isUndefined(got!.envelope.priority)
      assert.isUndefined(got!.envelope.annotations?.["mt-priority-ignored"])
      // Nor does a plain smtp-server peer.
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["p@dest.test"], { priority: 9 }))), { "p@dest.test": "Ok" })
    }), { timeout: 60_000 })
})

describe.skipIf(!Dnsmasq.available)("MxAdapter DKIM signing", () => {
  it.live("the MX receives a DKIM-Signature with d= our domain that mailauth verifies (rsa and ed25519)", () =>
    Effect.gen(function*() {
      const w = yield* world()
      for (const key of [DkimKeys.rsaKey(1024), DkimKeys.ed25519Key()]) {
        const sign = DkimSigner.make({ key: { domain: "us.test", selector: "out", privateKey: key.privateKey } })
        const mx = yield* w.adapter({ prepare: sign })
        assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["signed@dest.test"]))), { "signed@dest.test": "Ok" })
        const received = w.mx1.seen.at(-1)!.body
        assert.match(received, /^DKIM-Signature: [^]*d=us\.test;[^]*\r\nReceived: x\r\n/)
        const result = yield* Effect.promise(() =>
          dkimVerify(Buffer.from(received), {
            resolver: (async (name: string, type: string) => {
              if (name === "out._domainkey.us.test" && type === "TXT") return [[...DkimKeys.txtStrings(key.record)]]
              throw Object.assign(new Error("not found"), { code: "ENOTFOUND" })
            }) as never
          })
        )
        assert.strictEqual(result.results[0]?.status.result, "pass", key.algorithm)
      }
    }))

  it.live("dkim_by_domain: the envelope sender's domain picks the key; other senders get the default key", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const keys = { us: DkimKeys.rsaKey(1024), other: DkimKeys.ed25519Key(), third: DkimKeys.rsaKey(1024) }
      const sign = DkimSigner.make({
        key: { domain: "us.test", selector: "out", privateKey: keys.us.privateKey },
        byDomain: {
          "Other.test": { domain: "other.test", selector: "s2", privateKey: keys.other.privateKey },
          "third.test": { domain: "signer.test", selector: "s3", privateKey: keys.third.privateKey }
        }
      })
      const records: Record<string, string> = {
        "out._domainkey.us.test": keys.us.record,
        "s2._domainkey.other.test": keys.other.record,
        "s3._domainkey.signer.test": keys.third.record
      }
      const mx = yield* w.adapter({ prepare: sign })
      const cases = [
        ["a@us.test", "us.test", "out"],
        ["b@OTHER.TEST", "other.test", "s2"],
        ["c@third.test", "signer.test", "s3"],
        ["d@elsewhere.test", "us.test", "out"]
      ] as const
      for (const [from, d, selector] of cases) {
        assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["signed@dest.test"], { from }))), { "signed@dest.test": "Ok" })
        const received = w.mx1.seen.at(-1)!.body
        assert.strictEqual((received.match(/^DKIM-Signature:/gm) ?? []).length, 1, from)
        const verified = yield* Effect.promise(() =>
          dkimVerify(Buffer.from(received), {
            resolver: (async (name: string, type: string) => {
              const record = records[name]
              if (record !== undefined && type === "TXT") return [[...DkimKeys.txtStrings(record)]]
              throw Object.assign(new Error("not found"), { code: "ENOTFOUND" })
            }) as never
          })
        )
        const result = verified.results[0]!
        assert.deepStrictEqual([result.status.result, result.signingDomain, result.selector], ["pass", d, selector], from)
      }
    }))

  it.live("without a default key, a sender outside dkim_by_domain goes unsigned", () =>
    Effect.gen(function*() {
      const w = yield* world()
      const key = DkimKeys.ed25519Key()
      const mx = yield* w.adapter({ prepare: DkimSigner.make({ byDomain: { "us.test": { domain: "us.test", selector: "s", privateKey: key.privateKey } } }) })
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["u@dest.test"], { from: "x@elsewhere.test" }))), { "u@dest.test": "Ok" })
      assert.notMatch(w.mx1.seen.at(-1)!.body, /^DKIM-Signature:/m)
      assert.deepStrictEqual(tags(yield* mx.deliver(delivery(["u@dest.test"], { from: "x@us.test" }))), { "u@dest.test": "Ok" })
      assert.match(w.mx1.seen.at(-1)!.body, /^DKIM-Signature: [^]*d=us\.test;/)
    }))
})
