/**
 * The Dns service: NodeDns against a real DNS server (dnsmasq on loopback) for every record
 * type and failure kind, the cache's TTL, negative caching, size cap and in-flight sharing on
 * the TestClock, the in-memory zone, the node:dns-shaped adapter mailauth uses, and the guard
 * that fails any test reaching the real DNS.
 */
import { createSocket } from "node:dgram"
import dns from "node:dns"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Dns from "../../src/dns/Dns.ts"
import * as DnsCache from "../../src/dns/DnsCache.ts"
import * as NodeCompat from "../../src/dns/NodeCompat.ts"
import * as NodeDns from "../../src/dns/NodeDns.ts"
import * as ZoneDns from "../../src/dns/ZoneDns.ts"
import * as Dnsmasq from "../support/dnsmasq.ts"
import { takeViolations } from "../support/dnsGuard.ts"

const longTxt = `v=DKIM1; k=rsa; p=${"A".repeat(400)}`

const records: Dnsmasq.Records = {
  A: { "host.example.test": "192.0.2.1" },
  AAAA: { "six.example.test": "2001:db8::1" },
  TXT: { "example.test": ["v=spf1 ip4:192.0.2.1 -all"], "long.example.test": [longTxt] },
  MX: { "example.test": [{ exchange: "mx1.example.test", priority: 10 }, { exchange: "mx2.example.test", priority: 20 }] },
  PTR: { "1.2.0.192.in-addr.arpa": "host.example.test" }
}

const failureOf = <A>(exit: Exit.Exit<A, Dns.DnsError>): Dns.DnsErrorReason["_tag"] | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const f = exit.cause.reasons.find((r) => r._tag === "Fail")
  return f?._tag === "Fail" ? f.error.reason._tag : undefined
}

describe.skipIf(!Dnsmasq.available)("NodeDns against dnsmasq", () => {
  it.live("answers A, AAAA, MX, TXT (long records joined per string) and PTR", () =>
    Effect.gen(function*() {
      const server = yield* Dnsmasq.start(records)
      const dns = yield* NodeDns.make({ servers: [server.server], timeoutMs: 1_000, tries: 1 })
      assert.deepStrictEqual(yield* dns.resolve("host.example.test", "A"), ["192.0.2.1"])
      assert.deepStrictEqual(yield* dns.resolve("six.example.test", "AAAA"), ["2001:db8::1"])
      const mx = yield* dns.resolve("example.test", "MX")
      assert.deepStrictEqual([...mx].sort((a, b) => a.priority - b.priority), [
        { exchange: "mx1.example.test", priority: 10 },
        { exchange: "mx2.example.test", priority: 20 }
      ])
      assert.deepStrictEqual(yield* dns.resolve("example.test", "TXT"), [["v=spf1 ip4:192.0.2.1 -all"]])
      const long = yield* dns.resolve("long.example.test", "TXT")
      assert.strictEqual(long[0]!.join(""), longTxt)
      assert.isAbove(long[0]!.length, 1, "a record over 255 bytes comes as several strings")
      assert.deepStrictEqual(yield* Dns.reverse("192.0.2.1").pipe(Effect.provideService(Dns.Dns, dns)), ["host.example.test"])
    }))

  it.live("NotFound (NXDOMAIN), NoData, ServerFailure (REFUSED) and Timeout are told apart", () =>
    Effect.gen(function*() {
      const server = yield* Dnsmasq.start(records)
      const dns = yield* NodeDns.make({ servers: [server.server], timeoutMs: 1_000, tries: 1 })
      assert.strictEqual(failureOf(yield* Effect.exit(dns.resolve("nope.example.test", "A"))), "NotFound")
      assert.strictEqual(failureOf(yield* Effect.exit(dns.resolve("host.example.test", "TXT"))), "NoData")
      // Outside the zone it serves, a dnsmasq without upstreams refuses.
      assert.strictEqual(failureOf(yield* Effect.exit(dns.resolve("example.com", "A"))), "ServerFailure")
      // A server that never answers: a UDP socket that reads and says nothing.
      const silent = createSocket("udp4")
      yield* Effect.promise(() => new Promise<void>((r) => silent.bind(0, "127.0.0.1", () => r())))
      yield* Effect.addFinalizer(() => Effect.sync(() => silent.close()))
      const mute = yield* NodeDns.make({ servers: [`127.0.0.1:${silent.address().port}`], timeoutMs: 200, tries: 1 })
      const timedOut = yield* Effect.exit(mute.resolve("host.example.test", "A"))
      assert.strictEqual(failureOf(timedOut), "Timeout")
      if (Exit.isFailure(timedOut)) {
        const e = timedOut.cause.reasons.find((r) => r._tag === "Fail")
        assert.isTrue(e?._tag === "Fail" && e.error.retryable && e.error.code === "ETIMEOUT")
      }
    }))

  it.live("the second question is answered from the cache, not the server", () =>
    Effect.gen(function*() {
      const server = yield* Dnsmasq.start(records)
      const dns = yield* NodeDns.make({ servers: [server.server], timeoutMs: 1_000, tries: 1 })
      assert.deepStrictEqual(yield* dns.resolve("host.example.test", "A"), ["192.0.2.1"])
      // With the server gone, only the cache can still answer.
      yield* Effect.sync(() => process.kill(server.pid, "SIGKILL"))
      yield* Effect.sleep("100 millis")
      assert.deepStrictEqual(yield* dns.resolve("HOST.example.test.", "A"), ["192.0.2.1"])
      // Not cached: asked again, and the server is gone (refused or timed out: trouble, not an answer).
      const uncached = yield* Effect.exit(dns.resolve("example.test", "TXT"))
      assert.include(["ServerFailure", "Timeout"], failureOf(uncached))
    }))
})

if (!Dnsmasq.available) {
  describe("NodeDns against dnsmasq", () => {
    it.skip(Dnsmasq.skipMessage, () => undefined)
  })
}

describe("DnsCache", () => {
  /** An upstream that counts its queries and answers from a script. */
  const counting = (answer: (name: string) => Effect.Effect<DnsCache.Answer<"A">, Dns.DnsError>) => {
    let queries = 0
    const upstream: DnsCache.Upstream = ((name: string) => {
      queries++
      return answer(name)
    }) as DnsCache.Upstream
    return { upstream, count: () => queries }
  }
  const notFound = (name: string) => new Dns.DnsError({ name, type: "A", reason: { _tag: "NotFound" } })

  it.effect("keeps an answer for its TTL, capped by maxTtlMs; unknown TTLs for unknownTtlMs", () =>
    Effect.gen(function*() {
      const up = counting(() => Effect.succeed({ records: ["192.0.2.1"], ttl: 30 }))
      const dns = DnsCache.make(up.upstream, { maxTtlMs: 20_000 })
      yield* dns.resolve("a.test", "A")
      yield* TestClock.adjust("19 seconds")
      yield* dns.resolve("a.test", "A")
      assert.strictEqual(up.count(), 1)
      yield* TestClock.adjust("2 seconds")
      yield* dns.resolve("a.test", "A")
      assert.strictEqual(up.count(), 2, "the 30 s TTL was capped at 20 s")
      const unknown = counting(() => Effect.succeed({ records: ["192.0.2.1"], ttl: undefined }))
      const other = DnsCache.make(unknown.upstream, { unknownTtlMs: 5_000 })
      yield* other.resolve("a.test", "A")
      yield* TestClock.adjust("4 seconds")
      yield* other.resolve("a.test", "A")
      assert.strictEqual(unknown.count(), 1)
      yield* TestClock.adjust("2 seconds")
      yield* other.resolve("a.test", "A")
      assert.strictEqual(unknown.count(), 2)
    }))

  it.effect("NotFound is kept for negativeTtlMs; timeouts are never kept", () =>
    Effect.gen(function*() {
      const up = counting((name) => Effect.fail(name === "gone.test" ? notFound(name) : new Dns.DnsError({ name, type: "A", reason: { _tag: "Timeout" } })))
      const dns = DnsCache.make(up.upstream, { negativeTtlMs: 10_000 })
      yield* Effect.exit(dns.resolve("gone.test", "A"))
      yield* Effect.exit(dns.resolve("gone.test", "A"))
      assert.strictEqual(up.count(), 1)
      yield* TestClock.adjust("11 seconds")
      assert.strictEqual(failureOf(yield* Effect.exit(dns.resolve("gone.test", "A"))), "NotFound")
      assert.strictEqual(up.count(), 2)
      yield* Effect.exit(dns.resolve("slow.test", "A"))
      yield* Effect.exit(dns.resolve("slow.test", "A"))
      assert.strictEqual(up.count(), 4)
    }))

  it.effect("the least recently used entry goes when the cap is reached", () =>
    Effect.gen(function*() {
      const up = counting(() => Effect.succeed({ records: ["192.0.2.1"], ttl: 300 }))
      const dns = DnsCache.make(up.upstream, { maxEntries: 2 })
      yield* dns.resolve("a.test", "A")
      yield* dns.resolve("b.test", "A")
      yield* dns.resolve("a.test", "A") // a is now the most recent
      yield* dns.resolve("c.test", "A") // evicts b
      assert.strictEqual(up.count(), 3)
      yield* dns.resolve("a.test", "A")
      assert.strictEqual(up.count(), 3)
      yield* dns.resolve("b.test", "A")
      assert.strictEqual(up.count(), 4)
    }))

  it.effect("questions asked while one is in flight wait for it", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const up = counting(() => Effect.as(Deferred.await(gate), { records: ["192.0.2.7"], ttl: 60 }))
      const dns = DnsCache.make(up.upstream)
      const fibers = yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(dns.resolve("a.test", "A"), { startImmediately: true }))
      yield* Deferred.succeed(gate, undefined)
      for (const f of fibers) assert.deepStrictEqual(yield* Fiber.join(f), ["192.0.2.7"])
      assert.strictEqual(up.count(), 1)
    }))
})

describe("ZoneDns and the node:dns shape", () => {
  it.effect("answers from the zone; absent names are NotFound, other types NoData, and trouble as configured", () =>
    Effect.gen(function*() {
      const zone = ZoneDns.make({ "a.test": { A: ["192.0.2.1"], TXT: ["hello", ["two", "parts"]] }, "t.test": { fail: "Timeout" } })
      assert.deepStrictEqual(yield* zone.dns.resolve("A.TEST.", "A"), ["192.0.2.1"])
      assert.deepStrictEqual(yield* zone.dns.resolve("a.test", "TXT"), [["hello"], ["two", "parts"]])
      assert.strictEqual(failureOf(yield* Effect.exit(zone.dns.resolve("b.test", "A"))), "NotFound")
      assert.strictEqual(failureOf(yield* Effect.exit(zone.dns.resolve("a.test", "MX"))), "NoData")
      assert.strictEqual(failureOf(yield* Effect.exit(zone.dns.resolve("t.test", "A"))), "Timeout")
      assert.strictEqual(zone.questions().length, 5)
    }))

  it.effect("the promise resolver resolves like dns.promises.resolve and rejects with its codes", () =>
    Effect.gen(function*() {
      const zone = ZoneDns.make({ "a.test": { TXT: ["v=spf1 -all"] }, "t.test": { fail: "ServerFailure" } })
      const resolve = yield* NodeCompat.toPromiseResolver(zone.dns)
      assert.deepStrictEqual(yield* Effect.promise(() => resolve("a.test", "TXT")), [["v=spf1 -all"]])
      const code = (name: string, type: string) => Effect.promise(() => resolve(name, type).then(() => "resolved", (e: { code: string }) => e.code))
      assert.strictEqual(yield* code("b.test", "TXT"), "ENOTFOUND")
      assert.strictEqual(yield* code("a.test", "MX"), "ENODATA")
      assert.strictEqual(yield* code("t.test", "A"), "ESERVFAIL")
      assert.strictEqual(yield* code("a.test", "SPF"), "ENODATA")
    }))

  it("reverse names for IPv4, IPv6 and mapped addresses", () => {
    assert.strictEqual(Dns.reverseName("192.0.2.1"), "1.2.0.192.in-addr.arpa")
    assert.strictEqual(Dns.reverseName("::ffff:192.0.2.1"), "1.2.0.192.in-addr.arpa")
    assert.strictEqual(
      Dns.reverseName("2001:db8::1"),
      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    )
    assert.isUndefined(Dns.reverseName("not-an-ip"))
  })
})

describe("the test guard", () => {
  it("a query to the system's resolvers throws and is recorded", () => {
    assert.throws(() => dns.promises.resolveTxt("example.com"), /a test reached the real DNS/)
    const resolver = new dns.promises.Resolver()
    resolver.setServers(["192.0.2.53"])
    assert.throws(() => resolver.resolve4("example.com"), /real DNS/)
    assert.strictEqual(takeViolations().length, 2)
  })
})
