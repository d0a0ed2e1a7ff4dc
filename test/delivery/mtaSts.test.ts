/**
 * MTA-STS policy discovery, fetch and cache (`mx/MtaSts.ts`) against a real HTTPS server on
 * loopback, with the TXT record and the policy host's address served by an in-memory zone the
 * test rewrites between lookups (a new `id`, a record removed). Covers the cache rules of RFC
 * 8461 §3.3/§5.1 — reuse while the id stands, refetch on a new id, the cached policy kept when
 * a refetch fails, expiry after max_age, no policy when nothing could be fetched — and the
 * strictness of the fetch: no redirects, text/plain only, a size cap, a verified certificate.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as MtaSts from "../../src/delivery/mx/MtaSts.ts"
import { Dns } from "../../src/dns/Dns.ts"
import * as ZoneDns from "../../src/dns/ZoneDns.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl } from "../smtp/helpers.ts"
import * as Fixtures from "../support/mtaSts.ts"

if (!hasOpenssl) console.warn("openssl is not installed: the MTA-STS fetch tests (they need certificates) are skipped")

/** A Dns over a zone the test can replace. */
const swappableZone = (initial: ZoneDns.Zone) => {
  let current = ZoneDns.make(initial)
  return {
    dns: Dns.of({ resolve: (name, type) => current.dns.resolve(name, type) }),
    set: (zone: ZoneDns.Zone) => {
      current = ZoneDns.make(zone)
    }
  }
}

const zoneFor = (domains: Readonly<Record<string, string | undefined>>): ZoneDns.Zone =>
  Object.fromEntries(Object.entries(domains).flatMap(([domain, id]) => [
    [`mta-sts.${domain}`, { A: ["127.0.0.1"] }],
    ...(id === undefined ? [] : [[`_mta-sts.${domain}`, { TXT: [`v=STSv1; id=${id}`] }]])
  ]))

const world = (options: Partial<MtaSts.MtaStsOptions> = {}, trust = true) =>
  Effect.gen(function*() {
    const dir = yield* TestIncoming.tempDir("incoming-mta-sts-")
    const names = ["a.test", "b.test", "c.test", "redirect.test", "html.test", "big.test", "junk.test"].map((d) => `mta-sts.${d}`)
    const cert = Fixtures.certificate(dir, "policy-hosts", names)
    const server = yield* Fixtures.serve(cert)
    const zone = swappableZone({})
    const sts = yield* MtaSts.make({ port: server.port, ...(trust ? { ca: [cert.cert] } : {}), timeoutMs: 5_000, ...options }).pipe(
      Effect.provideService(Dns, zone.dns)
    )
    return { server, zone, sts }
  })

describe.skipIf(!hasOpenssl)("MTA-STS policy cache (RFC 8461 §3.3, §5.1)", () => {
  it.live("fetched once per id; a new id is fetched again; a failed refetch keeps the cached policy; no record keeps it too", () =>
    Effect.gen(function*() {
      const { server, zone, sts } = yield* world()
      server.answers.set("mta-sts.a.test", Fixtures.policy("enforce", ["mx.a.test"]))
      zone.set(zoneFor({ "a.test": "1" }))
      const first = yield* sts.policyFor("a.test")
      assert.deepStrictEqual([first?.id, first?.policy], ["1", { mode: "enforce", mx: ["mx.a.test"], maxAgeSeconds: 86400 }])
      assert.deepStrictEqual(server.paths, ["/.well-known/mta-sts.txt"])
      assert.strictEqual((yield* sts.policyFor("a.test"))?.id, "1")
      assert.strictEqual(server.requests("mta-sts.a.test"), 1, "same id: the cached policy, no fetch")

      server.answers.set("mta-sts.a.test", Fixtures.policy("testing", ["*.a.test"]))
      zone.set(zoneFor({ "a.test": "2" }))
      const second = yield* sts.policyFor("a.test")
      assert.strictEqual(server.requests("mta-sts.a.test"), 2, "a new id is fetched")
      assert.deepStrictEqual([second?.id, second?.policy.mode, second?.policy.mx], ["2", "testing", ["*.a.test"]])

      // id 3 announced, but the policy host now fails: the cached policy (id 2) stays in force.
      server.answers.set("mta-sts.a.test", { status: 500, body: "oops" })
      zone.set(zoneFor({ "a.test": "3" }))
      assert.strictEqual((yield* sts.policyFor("a.test"))?.id, "2")
      assert.strictEqual(server.requests("mta-sts.a.test"), 3)
      // Not asked again at once (retryFailedMs), still the cached policy.
      assert.strictEqual((yield* sts.policyFor("a.test"))?.id, "2")
      assert.strictEqual(server.requests("mta-sts.a.test"), 3)

      // The TXT record gone (or DNS trouble): a live cached policy still applies (§3.3).
      zone.set(zoneFor({ "a.test": undefined }))
      assert.strictEqual((yield* sts.policyFor("a.test"))?.policy.mode, "testing")
    }))

  it.live("a policy expires after max_age: the same id is then fetched again", () =>
    Effect.gen(function*() {
      const { server, zone, sts } = yield* world()
      server.answers.set("mta-sts.b.test", Fixtures.policy("enforce", ["mx.b.test"], 1))
      zone.set(zoneFor({ "b.test": "7" }))
      assert.strictEqual((yield* sts.policyFor("b.test"))?.policy.maxAgeSeconds, 1)
      yield* Effect.sleep("1200 millis")
      assert.strictEqual((yield* sts.policyFor("b.test"))?.id, "7")
      assert.strictEqual(server.requests("mta-sts.b.test"), 2)
      // Expired and then unreachable: nothing cached is live, so no policy.
      server.answers.delete("mta-sts.b.test")
      zone.set(zoneFor({ "b.test": "8" }))
      yield* Effect.sleep("1200 millis")
      assert.isUndefined(yield* sts.policyFor("b.test"))
    }))

  it.live("nothing fetched and nothing cached: no policy (§5: deliver as without MTA-STS)", () =>
    Effect.gen(function*() {
      const { server, zone, sts } = yield* world({ retryFailedMs: 0 })
      zone.set(zoneFor({ "c.test": "1" }))
      // 404, a redirect, HTML, an oversized file, a file that is not a policy: each is no policy.
      server.answers.set("mta-sts.redirect.test", { status: 301, headers: { location: "https://elsewhere.test/" } })
      server.answers.set("mta-sts.html.test", { contentType: "text/html", body: Fixtures.policy("enforce", ["mx.html.test"]).body! })
      server.answers.set("mta-sts.big.test", { body: `${Fixtures.policy("enforce", ["mx.big.test"]).body!}${"x: y\r\n".repeat(20_000)}` })
      server.answers.set("mta-sts.junk.test", { body: "this is not a policy" })
      zone.set(zoneFor({ "c.test": "1", "redirect.test": "1", "html.test": "1", "big.test": "1", "junk.test": "1", "nohost.test": "1" }))
      for (const domain of ["c.test", "redirect.test", "html.test", "big.test", "junk.test"]) {
        assert.isUndefined(yield* sts.policyFor(domain), domain)
        assert.strictEqual(server.requests(`mta-sts.${domain}`), 1, domain)
      }
      // A record whose policy host has no address: no policy either.
      zone.set({ "_mta-sts.nohost.test": { TXT: ["v=STSv1; id=1"] } })
      assert.isUndefined(yield* sts.policyFor("nohost.test"))
    }))

  it.live("a burst of lookups for one domain fetches its policy once", () =>
    Effect.gen(function*() {
      const { server, zone, sts } = yield* world()
      server.answers.set("mta-sts.a.test", Fixtures.policy("enforce", ["mx.a.test"]))
      zone.set(zoneFor({ "a.test": "1" }))
      const found = yield* Effect.all(Array.from({ length: 8 }, () => sts.policyFor("a.test")), { concurrency: "unbounded" })
      assert.deepStrictEqual(found.map((k) => k?.id), Array(8).fill("1"))
      assert.strictEqual(server.requests("mta-sts.a.test"), 1)
    }))

  it.live("the fetch goes out from the adapter's local_address", () =>
    Effect.gen(function*() {
      const { server, zone, sts } = yield* world({ localAddress: "127.0.0.8" })
      server.answers.set("mta-sts.a.test", Fixtures.policy("testing", ["mx.a.test"]))
      zone.set(zoneFor({ "a.test": "1" }))
      assert.strictEqual((yield* sts.policyFor("a.test"))?.policy.mode, "testing")
      assert.deepStrictEqual(server.remotes, ["127.0.0.8"])
    }))

  it.live("the policy host's certificate must verify: an untrusted one is no policy", () =>
    Effect.gen(function*() {
      const { server, zone, sts } = yield* world({}, false)
      server.answers.set("mta-sts.a.test", Fixtures.policy("enforce", ["mx.a.test"]))
      zone.set(zoneFor({ "a.test": "1" }))
      assert.isUndefined(yield* sts.policyFor("a.test"))
      assert.strictEqual(server.requests("mta-sts.a.test"), 0, "no request goes out over an unverified connection")
    }))
})
