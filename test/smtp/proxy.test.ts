/**
 * PROXY protocol v1/v2 on a listener, over real sockets: the header's client stands for the peer
 * in `Received:`, the per-IP connection limit, the relay decision and the policies' context;
 * LOCAL keeps the real peer; headers in one piece and a byte at a time; implicit TLS after the
 * header; a trusted peer without a header, with a malformed one or a slow one is closed without
 * a word; an untrusted peer's header is refused; and a bounded fuzz run of mutated headers
 * leaves the listener serving.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import type * as Policy from "../../src/policy/Policy.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import * as P from "../support/proxyHeader.ts"
import { awaitDeliveredId, hasOpenssl, queuedId, raw, selfSignedCert, simpleBody, transaction } from "./helpers.ts"

/** Client addresses the policy rules saw at connect and at MAIL (what DNS-based checks use). */
const seen: Array<string> = []
const recorder: Policy.Rule = {
  name: "record-client",
  onConnect: (ctx) => Effect.sync(() => (seen.push(`connect ${ctx.clientAddress}`), Verdict.Continue)),
  onMailFrom: (ctx) => Effect.sync(() => (seen.push(`mail ${ctx.clientAddress}`), Verdict.Continue))
}

const proxied = TestIncoming.layer({
  listener: { proxyProtocol: { trusted: ["127.0.0.0/8"], timeoutMs: 1_000 }, maxConnectionsPerIp: 1 },
  relay: { trustedNetworks: ["192.0.2.0/24"] },
  policies: { rules: [recorder] }
})

const deliver = (preamble: Uint8Array | ReadonlyArray<Uint8Array>, subject: string, tls = false) =>
  Effect.scoped(Effect.gen(function*() {
    const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port, preamble, tls })
    assert.strictEqual(c.greeting.code, 220)
    yield* c.command("EHLO client.test")
    const reply = yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: simpleBody(subject) })
    return yield* awaitDeliveredId(queuedId(reply))
  }))

const bytes = (b: Buffer): ReadonlyArray<Uint8Array> => [...b].map((x) => Uint8Array.of(x))

/** A raw connection that sends `data` and waits for the server to close it; returns what it said. */
const closedAfter = (data: Uint8Array | undefined, withinMs: number) =>
  Effect.scoped(Effect.gen(function*() {
    const r = yield* raw({ port: yield* TestIncoming.port })
    if (data !== undefined) r.socket.write(data)
    const started = Date.now()
    yield* r.closed.pipe(Effect.timeoutOrElse({ duration: withinMs, orElse: () => Effect.die(new Error(`still open after ${withinMs} ms: ${JSON.stringify(r.received())}`)) }))
    return { said: r.received(), ms: Date.now() - started }
  }))

describe("PROXY protocol from a trusted peer", () => {
  layer(proxied, { excludeTestServices: true })((it) => {
    it.effect("v1 in one piece: the header's client is in Received: and in the policies' context", () =>
      Effect.gen(function*() {
        seen.length = 0
        const msg = yield* deliver(P.v1("192.0.2.7", "198.51.100.1", 40000, 25), "v1")
        assert.match(msg.text, /^Received: from client\.test \(\[192\.0\.2\.7\]\)/)
        assert.notInclude(msg.text.split("\r\n\r\n")[0]!, "127.0.0.1")
        assert.deepStrictEqual(seen, ["connect 192.0.2.7", "mail 192.0.2.7"])
      }))

    it.effect("v2 TCP6 a byte at a time, with TLVs", () =>
      Effect.gen(function*() {
        const header = P.v2({
          family: "tcp6",
          source: "2001:db8:0:0:0:0:0:9",
          destination: "2001:db8::1",
          sport: 5000,
          dport: 25,
          tlvs: [P.tlv(0x02, "mx.example.test"), P.ssl({ client: 1, verify: 0, version: "TLSv1.3" })]
        })
        const msg = yield* deliver(bytes(header), "v2 bytewise")
        assert.match(msg.text, /^Received: from client\.test \(\[IPv6:2001:db8::9\]\)/)
      }))

    it.effect("v2 LOCAL (a health check) keeps the real peer", () =>
      Effect.gen(function*() {
        const msg = yield* deliver(P.v2({ command: "LOCAL", family: "unspec" }), "local")
        assert.match(msg.text, /^Received: from client\.test \(\[127\.0\.0\.1\]\)/)
      }))

    it.effect("the per-IP connection limit counts the header's client, not the proxy", () =>
      Effect.scoped(Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const first = yield* SmtpClient.connect({ port, preamble: P.v1("192.0.2.50", "10.0.0.1", 1, 25) })
        assert.strictEqual(first.greeting.code, 220)
        // Same client behind the same proxy: over max_connections_per_ip = 1.
        const second = yield* SmtpClient.connect({ port, preamble: P.v1("192.0.2.50", "10.0.0.1", 2, 25) })
        assert.strictEqual(second.greeting.code, 421)
        // Another client through the same proxy connection address: its own count.
        const third = yield* SmtpClient.connect({ port, preamble: P.v2({ source: "192.0.2.51", destination: "10.0.0.1" }) })
        assert.strictEqual(third.greeting.code, 220)
      })))

    it.effect("relay rules judge the header's client: trusted 192.0.2.0/24 may relay, 203.0.113.5 may not", () =>
      Effect.scoped(Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const outside = "someone@elsewhere.test"
        const trusted = yield* SmtpClient.connect({ port, preamble: P.v1("192.0.2.9", "10.0.0.1", 1, 25) })
        yield* trusted.command("EHLO t.test")
        yield* trusted.command("MAIL FROM:<a@sender.test>")
        // The capturing adapter takes off-site recipients: a client allowed to relay gets 250.
        const allowed = yield* trusted.command(`RCPT TO:<${outside}>`)
        assert.strictEqual(allowed.code, 250)
        const stranger = yield* SmtpClient.connect({ port, preamble: P.v1("203.0.113.5", "10.0.0.1", 1, 25) })
        yield* stranger.command("EHLO s.test")
        yield* stranger.command("MAIL FROM:<a@sender.test>")
        const denied = yield* stranger.command(`RCPT TO:<${outside}>`)
        assert.strictEqual(denied.code, 554)
      })))

    it.effect("no header (the client speaks SMTP first): closed without a reply", () =>
      Effect.gen(function*() {
        const r = yield* closedAfter(Buffer.from("EHLO client.test\r\n"), 5_000)
        assert.strictEqual(r.said, "")
      }))

    it.effect("a malformed header is closed without a reply", () =>
      Effect.gen(function*() {
        assert.strictEqual((yield* closedAfter(Buffer.from("PROXY TCP4 192.0.2.1 nonsense 1 2\r\nEHLO x\r\n"), 5_000)).said, "")
        assert.strictEqual((yield* closedAfter(P.v2({ tlvs: [Buffer.from([0x02, 0x00, 0x09])] }), 5_000)).said, "")
      }))

    it.effect("a slow header (half of it, then silence) is closed after the timeout", () =>
      Effect.gen(function*() {
        const r = yield* closedAfter(P.v2({ source: "192.0.2.1" }).subarray(0, 20), 15_000)
        assert.strictEqual(r.said, "")
        // timeout = 1 s: not before it.
        assert.isAtLeast(r.ms, 900)
      }))

    it.effect("a peer that hangs up in the middle of the header takes nothing down", () =>
      Effect.gen(function*() {
        yield* Effect.scoped(Effect.gen(function*() {
          const r = yield* raw({ port: yield* TestIncoming.port })
          r.socket.end(Buffer.from("PROXY TCP4 192"))
          yield* r.closed
        }))
        const msg = yield* deliver(P.v1("192.0.2.8", "10.0.0.1", 1, 25), "after hang-up")
        assert.include(msg.text, "[192.0.2.8]")
      }))

    it.effect("fuzz (bounded): 60 mutated headers over real sockets, each closed or greeted; then a good one works", () =>
      Effect.gen(function*() {
        let seed = 5321
        const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
        const seeds = [P.v1("192.0.2.60", "10.0.0.1", 1, 25), P.v2({ source: "192.0.2.61", tlvs: [P.tlv(2, "a.test")] })]
        let greeted = 0
        let closed = 0
        for (let n = 0; n < 60; n++) {
          const input = Buffer.from(seeds[n % 2]!)
          input[Math.floor(random() * input.length)] = Math.floor(random() * 256)
          const outcome = yield* Effect.scoped(Effect.gen(function*() {
            const r = yield* raw({ port: yield* TestIncoming.port })
            r.socket.write(input)
            const first = yield* Effect.raceFirst(
              Effect.map(r.closed, () => "closed" as const),
              Effect.map(r.waitFor(/\r\n/, 10_000), () => "replied" as const)
            )
            if (first === "replied") {
              // Greeted: the mutation left a valid header (a different address or port).
              assert.match(r.received(), /^220 /)
            } else {
              assert.strictEqual(r.received(), "")
            }
            return first
          }))
          if (outcome === "replied") greeted++
          else closed++
        }
        assert.strictEqual(greeted + closed, 60)
        assert.isAbove(closed, 0)
        const msg = yield* deliver(P.v1("192.0.2.62", "10.0.0.1", 1, 25), "after fuzz")
        assert.include(msg.text, "[192.0.2.62]")
      }), { timeout: 120_000 })
  })
})

describe("PROXY protocol from a peer that is not trusted", () => {
  layer(TestIncoming.layer({ listener: { proxyProtocol: { trusted: ["10.0.0.0/8"], timeoutMs: 1_000 } } }), { excludeTestServices: true })((it) => {
    it.effect("its PROXY line is refused (550 5.7.1) and its address never used", () =>
      Effect.gen(function*() {
        const msg = yield* Effect.scoped(Effect.gen(function*() {
          const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
          const refused = yield* c.command("PROXY TCP4 192.0.2.7 10.0.0.1 1 25")
          assert.deepStrictEqual([refused.code, refused.text], [550, "5.7.1 PROXY header not accepted from this address"])
          yield* c.command("EHLO client.test")
          const reply = yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: simpleBody("untrusted") })
          return yield* awaitDeliveredId(queuedId(reply))
        }))
        assert.match(msg.text, /^Received: from client\.test \(\[127\.0\.0\.1\]\)/)
      }))

    it.effect("its v2 header is read as SMTP lines: the QUIT the spec put in the signature ends the session", () =>
      Effect.gen(function*() {
        const r = yield* closedAfter(P.v2({ source: "192.0.2.7" }), 10_000)
        // "\r\n\r\n\0\r\nQUIT\n": three unrecognized lines, then QUIT; the address is never used.
        assert.match(r.said, /^220 [^\r]*\r\n(500 5\.5\.2 [^\r]*\r\n){3}221 2\.0\.0 Bye\r\n$/)
      }))
  })
})

describe.skipIf(!hasOpenssl)("PROXY protocol then implicit TLS", () => {
  const withTls = Layer.unwrap(Effect.gen(function*() {
    const dir = yield* TestIncoming.tempDir("incoming-proxy-tls-")
    const { cert, key } = selfSignedCert(dir)
    return TestIncoming.layer({
      listener: { tls: { mode: "implicit", cert, key }, proxyProtocol: { trusted: ["127.0.0.1"], timeoutMs: 5_000 } }
    })
  }))
  layer(withTls, { excludeTestServices: true })((it) => {
    it.effect("the handshake starts after the header; Received: has the header's client and ESMTPS", () =>
      Effect.gen(function*() {
        const msg = yield* deliver(P.v2({ source: "198.51.100.23", destination: "10.0.0.1", sport: 1, dport: 465 }), "tls", true)
        assert.match(msg.text, /^Received: from client\.test \(\[198\.51\.100\.23\]\)\r\n\tby mx\.test \(Incoming\) with ESMTPS id /)
      }))
  })
})
