/**
 * The `dnsbl` rule against an in-memory zone (ZoneDns): IPv4 and IPv6 query names (RFC 5782),
 * the exact refusal with the TXT reason, weights and threshold, allowlists, `codes`, error codes
 * (127.255.255.x: never a hit), timeouts and failures (fail open, within the deadline), the
 * test-entry checks that disable a zone listing everything or nothing, one lookup per session,
 * and the skips for our own users.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { type Dns, DnsError } from "../../src/dns/Dns.ts"
import * as ZoneDns from "../../src/dns/ZoneDns.ts"
import type { RcptContext } from "../../src/policy/Policy.ts"
import * as Dnsbl from "../../src/policy/rules/spam/Dnsbl.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"

/** RFC 5782 test entries of `zone`: 127.0.0.2 listed (with a TXT), 127.0.0.1 not. */
const testEntries = (zone: string): ZoneDns.Zone => ({
  [`2.0.0.127.${zone}`]: { A: ["127.0.0.2"], TXT: [`test entry of ${zone}`] }
})

const zone: ZoneDns.Zone = {
  ...testEntries("bl.test"),
  ...testEntries("heavy.test"),
  ...testEntries("light.test"),
  ...testEntries("wl.test"),
  ...testEntries("codes.test"),
  "99.2.0.192.bl.test": { A: ["127.0.0.2"], TXT: ["Listed in bl.test, see https://bl.test/q?ip=192.0.2.99"] },
  "98.2.0.192.bl.test": { A: ["127.0.0.4"] },
  "98.2.0.192.light.test": { A: ["127.0.0.2"] },
  "97.2.0.192.light.test": { A: ["127.0.0.2"] },
  "96.2.0.192.bl.test": { A: ["127.0.0.2"] },
  "96.2.0.192.wl.test": { A: ["127.0.10.3"] },
  "95.2.0.192.bl.test": { A: ["127.255.255.254"] },
  "94.2.0.192.bl.test": { fail: "Timeout" },
  "93.2.0.192.bl.test": { A: ["198.51.100.7"] },
  "92.2.0.192.codes.test": { A: ["127.0.0.10"] },
  "91.2.0.192.codes.test": { A: ["127.0.0.3"] },
  "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test": { A: ["127.0.0.2"] },
  // Misbehaving zones, for the test-entry checks.
  ...testEntries("all.test"),
  "1.0.0.127.all.test": { A: ["127.0.0.2"] },
  "quota.test": { A: ["127.0.0.1"] },
  "2.0.0.127.quota.test": { A: ["127.255.255.254"] },
  "1.0.0.127.quota.test": { A: ["127.255.255.254"] },
  "2.0.0.127.down.test": { fail: "Timeout" }
}

const rcpt = (clientAddress: string, more: Partial<RcptContext> = {}): RcptContext => ({
  listener: "mx",
  sessionId: `s-${clientAddress}-${Math.random()}`,
  clientAddress,
  secure: false,
  helo: "client.test",
  user: undefined,
  mailFrom: "a@sender.test",
  declaredSize: undefined,
  rcptTo: "u@example.test",
  recipients: [],
  ...more
})

const build = (options: Dnsbl.DnsblOptions, dns: Dns["Service"] = ZoneDns.make(zone).dns) => Dnsbl.make(dns, options)

const decide = (d: Dnsbl.Dnsbl, ctx: RcptContext) => d.rule.onRcptTo!(ctx)

describe("dnsbl", () => {
  it("query names: reversed octets, IPv6 reversed nibbles, v4-mapped as IPv4", () => {
    assert.strictEqual(Dnsbl.queryName("192.0.2.99", "bl.test"), "99.2.0.192.bl.test")
    assert.strictEqual(
      Dnsbl.queryName("2001:db8::1", "bl.test"),
      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
    )
    assert.strictEqual(Dnsbl.queryName("::ffff:192.0.2.99", "bl.test"), "99.2.0.192.bl.test")
    assert.isUndefined(Dnsbl.queryName("not-an-ip", "bl.test"))
  })

  it.effect("a listed client is refused with 554 5.7.1 naming the zone, the TXT reason appended", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: ["bl.test"] })
      const v = yield* decide(d, rcpt("192.0.2.99"))
      assert.strictEqual(v._tag, "Reject")
      assert.strictEqual(
        SmtpReply.format(Verdict.replyOf(v)!),
        "554 5.7.1 Service unavailable; client [192.0.2.99] blocked using bl.test; Listed in bl.test, see https://bl.test/q?ip=192.0.2.99"
      )
      // No TXT record: the reply without a reason.
      const bare = yield* decide(d, rcpt("192.0.2.98"))
      assert.strictEqual(SmtpReply.format(Verdict.replyOf(bare)!), "554 5.7.1 Service unavailable; client [192.0.2.98] blocked using bl.test")
      // IPv6.
      const v6 = yield* decide(d, rcpt("2001:db8::1"))
      assert.strictEqual(v6._tag, "Reject")
      assert.include(Verdict.replyOf(v6)!.text, "client [2001:db8::1] blocked using bl.test")
      // Not listed.
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.1")))._tag, "Continue")
    }))

  it.effect("a zone's own reply, with {ip}, {zone} and {reason}", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: [{ zone: "bl.test", reply: "Go away {ip} ({zone}: {reason})" }] })
      const v = yield* decide(d, rcpt("192.0.2.99"))
      assert.strictEqual(Verdict.replyOf(v)!.text, "Go away 192.0.2.99 (bl.test: Listed in bl.test, see https://bl.test/q?ip=192.0.2.99)")
      assert.strictEqual(Verdict.replyOf(v)!.code, 554)
    }))

  it.effect("weights add up to the threshold; the reply names the heaviest listing", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: [{ zone: "light.test", weight: 0.5 }, { zone: "bl.test", weight: 0.7 }], threshold: 1 })
      // Listed by light.test only: 0.5 < 1.
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.97")))._tag, "Continue")
      // Listed by both: 1.2 ≥ 1.
      const both = yield* decide(d, rcpt("192.0.2.98"))
      assert.strictEqual(both._tag, "Reject")
      assert.include(Verdict.replyOf(both)!.text, "blocked using bl.test")
      const found = yield* d.lookup("192.0.2.98")
      assert.closeTo(found.score, 1.2, 1e-9)
    }))

  it.effect("an allowlist (DNSWL) listing wins over blocklists", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: ["bl.test"], allowZones: ["wl.test"] })
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.96")))._tag, "Continue")
      assert.strictEqual((yield* d.lookup("192.0.2.96")).allowedBy, "wl.test")
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.99")))._tag, "Reject")
    }))

  it.effect("codes: only the given answers count", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: [{ zone: "codes.test", codes: ["127.0.0.2", "127.0.0.3"] }] })
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.92")))._tag, "Continue")
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.91")))._tag, "Reject")
    }))

  it.effect("127.255.255.x and answers outside 127/8 are errors, never a hit; a timeout fails open", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: ["bl.test"] })
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.95")))._tag, "Continue")
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.93")))._tag, "Continue")
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.94")))._tag, "Continue")
      assert.deepStrictEqual(Dnsbl.classify(["127.255.255.254"]), { _tag: "Error", codes: ["127.255.255.254"] })
      assert.deepStrictEqual(Dnsbl.classify(["127.0.0.2"]), { _tag: "Listed", codes: ["127.0.0.2"] })
      // The zone is still enabled: one bad answer is skipped, not a reason to stop asking.
      assert.isTrue(d.status().every((s) => s.enabled))
    }))

  it.effect("a zone that never answers is given up at the deadline (TestClock): Continue, not a 4xx", () =>
    Effect.gen(function*() {
      const hanging: Dns["Service"] = { resolve: () => Effect.never }
      const d = yield* build({ zones: ["bl.test"], timeout: "3 seconds", testEntries: false }, hanging)
      const fiber = yield* Effect.forkChild(decide(d, rcpt("192.0.2.99")))
      yield* TestClock.adjust("2 seconds")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* Fiber.join(fiber))._tag, "Continue")
    }))

  it.effect("test entries: zones listing everything, nothing, or answering error codes are disabled; unreachable ones kept", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: ["bl.test", "all.test", "nothing.test", "quota.test", "down.test"] })
      const status = Object.fromEntries(d.status().map((s) => [s.zone, s]))
      assert.isTrue(status["bl.test"]!.enabled)
      assert.isFalse(status["all.test"]!.enabled)
      assert.match(status["all.test"]!.problem!, /lists everything/)
      assert.isFalse(status["nothing.test"]!.enabled)
      assert.match(status["nothing.test"]!.problem!, /lists nothing/)
      assert.isFalse(status["quota.test"]!.enabled)
      assert.match(status["quota.test"]!.problem!, /127\.255\.255\.254.*error code/)
      assert.isTrue(status["down.test"]!.enabled, "a zone we could not check is left as it was")
      // A disabled zone is not asked: all.test would list this client.
      const v = yield* decide(d, rcpt("192.0.2.1"))
      assert.strictEqual(v._tag, "Continue")
    }))

  it.effect("test entries are checked again every test_interval: a zone that recovers is enabled", () =>
    Effect.gen(function*() {
      let broken = true
      const good = ZoneDns.make(zone).dns
      const dns: Dns["Service"] = {
        resolve: (name, type) =>
          broken && name.endsWith("bl.test")
            ? Effect.fail(new DnsError({ name, type, reason: { _tag: "NotFound" } }))
            : good.resolve(name, type)
      }
      const d = yield* build({ zones: ["bl.test"], testInterval: "10 minutes" }, dns)
      assert.isFalse(d.status()[0]!.enabled)
      broken = false
      yield* TestClock.adjust("10 minutes")
      assert.isTrue(d.status()[0]!.enabled)
    }))

  it.effect("one lookup per session, whatever the number of recipients; forgotten at close", () =>
    Effect.gen(function*() {
      const z = ZoneDns.make(zone)
      const d = yield* build({ zones: ["bl.test"], testEntries: false }, z.dns)
      const ctx = rcpt("192.0.2.1")
      for (const to of ["a@example.test", "b@example.test", "c@example.test"]) yield* decide(d, { ...ctx, rcptTo: to })
      assert.strictEqual(z.questions().filter((q) => q.name === "1.2.0.192.bl.test").length, 1)
      yield* d.rule.onClose!(ctx)
      yield* decide(d, ctx)
      assert.strictEqual(z.questions().filter((q) => q.name === "1.2.0.192.bl.test").length, 2)
    }))

  it.effect("authenticated sessions and trusted networks are skipped unless configured", () =>
    Effect.gen(function*() {
      const z = ZoneDns.make(zone)
      const d = yield* build({ zones: ["bl.test"], testEntries: false }, z.dns)
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.99", { user: "alice" })))._tag, "Continue")
      assert.strictEqual((yield* decide(d, rcpt("192.0.2.99", { trusted: true })))._tag, "Continue")
      assert.strictEqual(z.questions().length, 0)
      const strict = yield* build({ zones: ["bl.test"], testEntries: false, checkAuthenticated: true, checkTrusted: true }, z.dns)
      assert.strictEqual((yield* decide(strict, rcpt("192.0.2.99", { user: "alice" })))._tag, "Reject")
      assert.strictEqual((yield* decide(strict, rcpt("192.0.2.99", { trusted: true })))._tag, "Reject")
    }))

  it.effect("stage = connect: the hook is onConnect", () =>
    Effect.gen(function*() {
      const d = yield* build({ zones: ["bl.test"], stage: "connect" })
      assert.isUndefined(d.rule.onRcptTo)
      const v = yield* d.rule.onConnect!({ listener: "mx", sessionId: "c1", clientAddress: "192.0.2.99", secure: false })
      assert.strictEqual(v._tag, "Reject")
    }))
})
