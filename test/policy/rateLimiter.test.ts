/**
 * RateLimiter driven by TestClock: the sliding window (count falls as events leave it), the
 * three dimensions, the background sweeper dropping idle keys, and the entry cap (least
 * recently used evicted, which fails open for that key).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import * as Policy from "../../src/policy/Policy.ts"
import * as RateLimiter from "../../src/policy/rules/RateLimiter.ts"

const ctx = (clientAddress: string, mailFrom = "s@example.org"): Policy.MailContext => ({
  listener: "mx",
  sessionId: "s",
  clientAddress,
  secure: false,
  helo: "c.example.org",
  user: undefined,
  mailFrom,
  declaredSize: undefined
})
const mail = (rule: Policy.Rule, c: Policy.MailContext) => Effect.map(Policy.run([rule], "mail", c), (d) => d.verdict._tag)

describe("RateLimiter", () => {
  it.effect("defaults: 5 per 60 s per IP, the 6th is deferred 450 4.7.1, and the window slides", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ dimensions: { sender: false } })
      for (let i = 0; i < 5; i++) {
        assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1")), "Continue")
        yield* TestClock.adjust("10 seconds")
      }
      // t = 50 s: five events in [0, 40] s
      const d = yield* Policy.run([limiter.rule], "mail", ctx("192.0.2.1"))
      assert.strictEqual(d.verdict._tag, "Defer")
      assert.deepStrictEqual(d.verdict._tag === "Defer" ? d.verdict.reply : undefined, RateLimiter.rateLimited)
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.2")), "Continue", "other IPs have their own window")
      // t = 60 s: the event at 0 s has left the window, one slot is free again (not all five)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1")), "Continue")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1")), "Defer")
      // after a whole quiet window the counter is reset
      yield* TestClock.adjust("61 seconds")
      for (let i = 0; i < 5; i++) assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1")), "Continue")
    }))

  it.effect("per sender and per recipient domain, with their own rates", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({
        rate: 100,
        dimensions: { ip: false, sender: { rate: 2 }, recipientDomain: { rate: 3, window: "10 seconds" } }
      })
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1", "Bulk@Example.org")), "Continue")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.2", "bulk@example.org")), "Continue")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.3", "bulk@example.org")), "Defer", "sender limit spans IPs")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.3", "")), "Continue", "null sender is not a sender")
      const rcpt = (rcptTo: string) =>
        Effect.map(Policy.run([limiter.rule], "rcpt", { ...ctx("192.0.2.9"), rcptTo, recipients: [] }), (d) => d.verdict._tag)
      for (const r of ["a@big.test", "b@big.test", "c@BIG.test"]) assert.strictEqual(yield* rcpt(r), "Continue")
      assert.strictEqual(yield* rcpt("d@big.test"), "Defer")
      assert.strictEqual(yield* rcpt("d@small.test"), "Continue")
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* rcpt("d@big.test"), "Continue")
    }))

  it.effect("the sweeper fiber removes idle keys once their window has passed", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ window: "60 seconds", sweepInterval: "30 seconds", dimensions: { sender: false } })
      yield* mail(limiter.rule, ctx("192.0.2.1"))
      yield* TestClock.adjust("20 seconds")
      yield* mail(limiter.rule, ctx("192.0.2.2"))
      assert.strictEqual(limiter.size("ip"), 2)
      yield* TestClock.adjust("40 seconds") // t = 60: sweep at 30 and 60; .1's event (t=0) is out at 60
      assert.strictEqual(limiter.size("ip"), 1)
      yield* TestClock.adjust("30 seconds") // t = 90: .2's event (t=20) left at 80
      assert.strictEqual(limiter.size("ip"), 0)
    }))

  it.effect("entry cap: the least recently used key is evicted and starts afresh (fails open)", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ rate: 1, maxEntries: 2, dimensions: { sender: false } })
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1")), "Continue")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.2")), "Continue")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1")), "Defer") // touches .1: .2 is now the oldest
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.3")), "Continue")
      assert.strictEqual(limiter.size("ip"), 2)
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.1")), "Defer", ".1 was kept")
      assert.strictEqual(yield* mail(limiter.rule, ctx("192.0.2.2")), "Continue", ".2 was evicted: fresh window")
    }))

  it.effect("exempt clients are not limited", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ rate: 1, exempt: (c) => c.user !== undefined })
      const authed = { ...ctx("192.0.2.1"), user: "alice" }
      for (let i = 0; i < 3; i++) assert.strictEqual(yield* mail(limiter.rule, authed), "Continue")
    }))
})
