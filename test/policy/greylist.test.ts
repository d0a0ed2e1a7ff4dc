/**
 * The `greylist` rule over the real SQLite store (a temporary data dir), with time driven by
 * TestClock: an unknown triplet is deferred with 451 4.7.1, an early retry again, a retry after the
 * delay and within the retry window passes, a late one starts over; passed triplets are known for
 * their lifetime; auto_allow; /24 and /64 networks; allow-lists and our own users; pruning and the
 * bound; a failing store lets mail through; the state survives reopening the database.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import type { RcptContext } from "../../src/policy/Policy.ts"
import * as Greylist from "../../src/policy/rules/spam/Greylist.ts"
import { type GreylistStore, GreylistStoreError } from "../../src/policy/rules/spam/GreylistStore.ts"
import * as SqliteGreylistStore from "../../src/policy/rules/spam/SqliteGreylistStore.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "greylist-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const rcpt = (clientAddress: string, mailFrom: string, rcptTo: string, more: Partial<RcptContext> = {}): RcptContext => ({
  listener: "mx",
  sessionId: "s1",
  clientAddress,
  secure: false,
  helo: "client.test",
  user: undefined,
  mailFrom,
  declaredSize: undefined,
  rcptTo,
  recipients: [],
  ...more
})

const build = (options: Greylist.GreylistOptions = {}) =>
  Effect.gen(function*() {
    const store = yield* SqliteGreylistStore.make(yield* tempDir)
    return { greylist: yield* Greylist.make(store, options), store }
  })

const tag = (g: Greylist.Greylist, ctx: RcptContext) => Effect.map(g.rule.onRcptTo!(ctx), (v) => v._tag)

describe("greylist", () => {
  it("networks: /24 for IPv4, /64 for IPv6, v4-mapped as IPv4", () => {
    assert.strictEqual(Greylist.networkKey("192.0.2.77"), "192.0.2.0/24")
    assert.strictEqual(Greylist.networkKey("::ffff:192.0.2.77"), "192.0.2.0/24")
    assert.strictEqual(Greylist.networkKey("2001:db8:1:2:aaaa::5"), "2001:db8:1:2::/64")
    assert.strictEqual(Greylist.networkKey("192.0.2.77", 32), "192.0.2.77/32")
  })

  it.effect("451 4.7.1 first; early retry 451 again; after the delay 250; the retry window and the lifetime", () =>
    Effect.gen(function*() {
      const { greylist } = yield* build()
      const ctx = rcpt("192.0.2.10", "a@sender.test", "u@example.test")
      const first = yield* greylist.rule.onRcptTo!(ctx)
      assert.strictEqual(SmtpReply.format(Verdict.replyOf(first)!), "451 4.7.1 Greylisted, try again in 300 seconds")
      yield* TestClock.adjust("2 minutes")
      const early = yield* greylist.rule.onRcptTo!(ctx)
      assert.strictEqual(SmtpReply.format(Verdict.replyOf(early)!), "451 4.7.1 Greylisted, try again in 180 seconds")
      yield* TestClock.adjust("3 minutes")
      assert.strictEqual(yield* tag(greylist, ctx), "Continue")
      // Another host of the same /24, same sender and recipient: known.
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.99", "A@Sender.test", "U@example.test")), "Continue")
      // A different recipient is a different triplet.
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.10", "a@sender.test", "v@example.test")), "Defer")
      // Another /24: a different triplet.
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.3.10", "a@sender.test", "u@example.test")), "Defer")
      // Known for 35 days after last seen...
      yield* TestClock.adjust("34 days")
      assert.strictEqual(yield* tag(greylist, ctx), "Continue")
      // ...and forgotten after.
      yield* TestClock.adjust("36 days")
      assert.strictEqual(yield* tag(greylist, ctx), "Defer")
    }))

  it.effect("a retry after the retry window starts over", () =>
    Effect.gen(function*() {
      const { greylist } = yield* build({ delay: "1 minute", retryWindow: "1 hour" })
      const ctx = rcpt("198.51.100.1", "b@sender.test", "u@example.test")
      assert.strictEqual(yield* tag(greylist, ctx), "Defer")
      yield* TestClock.adjust("2 hours")
      assert.strictEqual(yield* tag(greylist, ctx), "Defer")
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual(yield* tag(greylist, ctx), "Continue")
    }))

  it.effect("auto_allow: a network that passed N triplets is not greylisted any more", () =>
    Effect.gen(function*() {
      const { greylist } = yield* build({ autoAllow: 2, delay: "1 minute" })
      for (const to of ["a@example.test", "b@example.test"]) {
        assert.strictEqual(yield* tag(greylist, rcpt("203.0.113.5", "s@sender.test", to)), "Defer")
      }
      yield* TestClock.adjust("2 minutes")
      for (const to of ["a@example.test", "b@example.test"]) {
        assert.strictEqual(yield* tag(greylist, rcpt("203.0.113.5", "s@sender.test", to)), "Continue")
      }
      // A new triplet from that network passes at once.
      assert.strictEqual(yield* tag(greylist, rcpt("203.0.113.6", "new@other.test", "c@example.test")), "Continue")
      // Another network still waits.
      assert.strictEqual(yield* tag(greylist, rcpt("203.0.114.6", "new@other.test", "c@example.test")), "Defer")
    }))

  it.effect("allow_networks, allow_sender_domains (and subdomains), AUTH and trusted clients pass at once", () =>
    Effect.gen(function*() {
      const { greylist } = yield* build({ allowNetworks: ["10.0.0.0/8", "2001:db8::/32"], allowSenderDomains: ["bank.test"] })
      assert.strictEqual(yield* tag(greylist, rcpt("10.1.2.3", "a@x.test", "u@example.test")), "Continue")
      assert.strictEqual(yield* tag(greylist, rcpt("2001:db8::1", "a@x.test", "u@example.test")), "Continue")
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.1", "a@bank.test", "u@example.test")), "Continue")
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.1", "a@mail.bank.test", "u@example.test")), "Continue")
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.1", "a@notbank.test", "u@example.test")), "Defer")
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.1", "z@x.test", "u@example.test", { user: "alice" })), "Continue")
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.1", "z@x.test", "u@example.test", { trusted: true })), "Continue")
      const strict = (yield* build({ checkAuthenticated: true })).greylist
      assert.strictEqual(yield* tag(strict, rcpt("192.0.2.1", "z@x.test", "u@example.test", { user: "alice" })), "Defer")
    }))

  it.effect("pruned: waiting triplets after the retry window, passed ones after their lifetime; bounded by max_entries", () =>
    Effect.gen(function*() {
      const { greylist, store } = yield* build({ delay: "1 minute", retryWindow: "1 hour", lifetime: "1 day", maxEntries: 3, autoAllow: 0 })
      for (let i = 0; i < 5; i++) yield* greylist.rule.onRcptTo!(rcpt("192.0.2.1", "a@x.test", `u${i}@example.test`))
      yield* TestClock.adjust("2 minutes")
      yield* greylist.rule.onRcptTo!(rcpt("192.0.2.1", "a@x.test", "u0@example.test"))
      assert.strictEqual(yield* store.size, 5)
      // Over the bound: the waiting triplets seen least recently go first.
      assert.strictEqual(yield* greylist.prune, 2)
      assert.strictEqual(yield* store.size, 3)
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.1", "a@x.test", "u0@example.test")), "Continue", "the passed one stays")
      yield* TestClock.adjust("2 hours")
      yield* greylist.prune
      assert.strictEqual(yield* store.size, 1, "waiting triplets past the retry window are gone")
      yield* TestClock.adjust("2 days")
      yield* greylist.prune
      assert.strictEqual(yield* store.size, 0)
    }))

  it.effect("a failing store lets the recipient through (never a 4xx/5xx of ours)", () =>
    Effect.gen(function*() {
      const broken = new GreylistStoreError({ reason: { _tag: "Unavailable", detail: "disk gone" } })
      const store: GreylistStore = {
        getTriplet: () => Effect.fail(broken),
        putTriplet: () => Effect.fail(broken),
        getClient: () => Effect.fail(broken),
        putClient: () => Effect.fail(broken),
        prune: () => Effect.fail(broken),
        size: Effect.fail(broken)
      }
      const greylist = yield* Greylist.make(store)
      assert.strictEqual(yield* tag(greylist, rcpt("192.0.2.1", "a@x.test", "u@example.test")), "Continue")
    }))

  it.effect("the state survives closing and reopening the database", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ctx = rcpt("192.0.2.1", "a@x.test", "u@example.test")
      // The first store is closed (its scope ends) before the second opens the same file.
      yield* Effect.scoped(Effect.gen(function*() {
        const first = yield* Greylist.make(yield* SqliteGreylistStore.make(dir), {})
        assert.strictEqual(yield* tag(first, ctx), "Defer")
      }))
      yield* TestClock.adjust("6 minutes")
      const again = yield* Greylist.make(yield* SqliteGreylistStore.make(dir), {})
      assert.strictEqual(yield* tag(again, ctx), "Continue")
    }))
})
