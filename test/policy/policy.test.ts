/**
 * The policy pipeline and the simple built-in rules: order and first-decision-wins, every
 * verdict, observe mode (recorded, metric, let through), deadlines and failures becoming 4xx
 * defers (never 5xx), and each rule's paths.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Metric } from "effect"
import { TestClock } from "effect/testing"
import * as Policy from "../../src/policy/Policy.ts"
import * as ConnectionLimit from "../../src/policy/rules/ConnectionLimit.ts"
import * as HelloRequired from "../../src/policy/rules/HelloRequired.ts"
import * as MaxRecipients from "../../src/policy/rules/MaxRecipients.ts"
import * as SizeLimit from "../../src/policy/rules/SizeLimit.ts"
import * as TlsRequired from "../../src/policy/rules/TlsRequired.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"

const conn: Policy.ConnectContext = { listener: "mx", sessionId: "s1", clientAddress: "192.0.2.1", secure: true }
const mail = (over: Partial<Policy.MailContext> = {}): Policy.MailContext => ({
  ...conn,
  helo: "client.example.org",
  user: undefined,
  mailFrom: "a@example.org",
  declaredSize: undefined,
  ...over
})
const rcpt = (rcptTo: string, recipients: ReadonlyArray<string>): Policy.RcptContext => ({ ...mail(), rcptTo, recipients })

const fixed = (name: string, v: Verdict.Verdict, observe = false): Policy.Rule => ({
  name,
  observe,
  onMailFrom: () => Effect.succeed(v)
})

const replyOf = (d: Policy.Decision) => Verdict.replyOf(d.verdict)

describe("Verdict", () => {
  it("constructors have enhanced-code defaults and keep each verdict in its reply class", () => {
    assert.deepStrictEqual(Verdict.reject(), { _tag: "Reject", reply: SmtpReply.make(550, "5.7.1", "Rejected by policy") })
    assert.strictEqual(Verdict.replyOf(Verdict.defer())?.code, 451)
    assert.strictEqual(Verdict.replyOf(Verdict.disconnect())?.code, 421)
    // a 4xx "reject" or 5xx "defer" would flip retry semantics: replaced, text kept
    const r = Verdict.reject(SmtpReply.make(450, "4.7.1", "nope"))
    assert.deepStrictEqual(Verdict.replyOf(r), SmtpReply.make(550, "5.7.1", "nope"))
    assert.deepStrictEqual(Verdict.replyOf(Verdict.defer(SmtpReply.make(554, "5.7.1", "x"))), SmtpReply.make(451, "4.7.1", "x"))
    assert.strictEqual(Verdict.replyOf(Verdict.disconnect(SmtpReply.make(554, "5.7.1", "bye")))?.code, 421)
    assert.strictEqual(Verdict.replyOf(Verdict.Accept), undefined)
  })
})

describe("Policy.run", () => {
  it.effect("runs rules in order; the first non-continue verdict wins and later rules are not run", () =>
    Effect.gen(function*() {
      const ran: Array<string> = []
      const spy = (name: string, v: Verdict.Verdict): Policy.Rule => ({
        name,
        onMailFrom: () => Effect.sync(() => (ran.push(name), v))
      })
      const d = yield* Policy.run([spy("a", Verdict.Continue), spy("b", Verdict.defer()), spy("c", Verdict.reject())], "mail", mail())
      assert.deepStrictEqual(ran, ["a", "b"])
      assert.strictEqual(d.rule, "b")
      assert.strictEqual(d.verdict._tag, "Defer")
      // rules without a hook for the stage are skipped; all continue → Continue with no rule
      const none = yield* Policy.run([spy("a", Verdict.Continue), { name: "rcpt-only", onRcptTo: () => Effect.succeed(Verdict.reject()) }], "mail", mail())
      assert.deepStrictEqual(none, { verdict: Verdict.Continue, rule: undefined })
    }))

  it.effect("every verdict passes through: accept, reject, defer, disconnect", () =>
    Effect.gen(function*() {
      for (const v of [Verdict.Accept, Verdict.reject(), Verdict.defer(), Verdict.disconnect()]) {
        const d = yield* Policy.run([fixed("r", v), fixed("after", Verdict.reject())], "mail", mail())
        assert.deepStrictEqual(d, { verdict: v, rule: "r" })
      }
    }))

  it.effect("enforce fails with PolicyRejected carrying the reply, which fromCause maps as is", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(Policy.enforce([fixed("r", Verdict.reject(SmtpReply.make(550, "5.7.1", "go away")))], "mail", mail()))
      assert.strictEqual(e._tag, "PolicyRejected")
      assert.strictEqual(e.rule, "r")
      const exit = yield* Effect.exit(Policy.enforce([fixed("d", Verdict.disconnect())], "mail", mail()))
      assert.strictEqual(exit._tag, "Failure")
      if (exit._tag === "Failure") assert.strictEqual(SmtpReply.fromCause(exit.cause).code, 421)
      assert.strictEqual(yield* Policy.enforce([fixed("a", Verdict.Accept)], "mail", mail()), "Accept")
    }))

  it.effect("observe mode records the would-be verdict (observer + metric) and lets the command through", () =>
    Effect.gen(function*() {
      const seen: Array<Policy.PolicyEvent> = []
      const observer: Policy.PolicyObserver = (e) => Effect.sync(() => void seen.push(e))
      const counter = Policy.verdictsTotal.pipe(
        Metric.withAttributes({ rule: "strict-observed", stage: "mail", verdict: "reject", mode: "observe" })
      )
      const before = (yield* Metric.value(counter)).count
      const d = yield* Policy.run([fixed("strict-observed", Verdict.reject(), true), fixed("next", Verdict.Continue)], "mail", mail(), {
        observer
      })
      assert.strictEqual(d.verdict._tag, "Continue")
      assert.deepStrictEqual(seen.map((e) => [e.rule, e.mode, e.verdict._tag]), [["strict-observed", "observe", "Reject"], [
        "next",
        "enforce",
        "Continue"
      ]])
      assert.strictEqual((yield* Metric.value(counter)).count, before + 1)
    }))

  it.effect("a hook past its deadline becomes 451 4.4.2 (TestClock), the next rules are not needed", () =>
    Effect.gen(function*() {
      const slow: Policy.Rule = { name: "slow", onMailFrom: () => Effect.as(Effect.sleep("1 hour"), Verdict.Continue) }
      const fiber = yield* Effect.forkChild(Policy.run([slow], "mail", mail(), { timeout: "2 seconds" }))
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      const d = yield* Fiber.join(fiber)
      assert.deepStrictEqual(replyOf(d), Policy.policyTimeout)
      assert.strictEqual(d.rule, "slow")
    }))

  it.effect("an onClose hook runs within the deadline too (TestClock): a stuck one is cut off, the next still runs", () =>
    Effect.gen(function*() {
      const closed: Array<string> = []
      const stuck: Policy.Rule = { name: "stuck", onClose: () => Effect.never }
      const next: Policy.Rule = { name: "next", onClose: (ctx) => Effect.sync(() => closed.push(ctx.sessionId)) }
      const fiber = yield* Effect.forkChild(Policy.make({ rules: [stuck, next], timeout: "2 seconds" }).close(conn))
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(fiber.pollUnsafe(), "still waiting for the stuck hook")
      assert.deepStrictEqual(closed, [])
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(closed, ["s1"])
    }))

  it.effect("a swap (reload) replaces the rules and, when given, the deadline; without one the deadline stays", () =>
    Effect.gen(function*() {
      const slow: Policy.Rule = { name: "slow", onMailFrom: () => Effect.as(Effect.sleep("1 hour"), Verdict.Continue) }
      const { policy, swap } = Policy.makeSwappable({ rules: [], timeout: "10 seconds" })
      const deadlineOf = Effect.gen(function*() {
        const fiber = yield* Effect.forkChild(policy.run("mail", mail()))
        let waited = 0
        while (fiber.pollUnsafe() === undefined) {
          yield* TestClock.adjust("1 second")
          waited++
        }
        const d = yield* Fiber.join(fiber)
        assert.deepStrictEqual(replyOf(d), Policy.policyTimeout)
        return waited
      })
      yield* swap.replace([slow])
      assert.strictEqual(yield* deadlineOf, 10)
      yield* swap.replace([slow], { timeout: "3 seconds" })
      assert.strictEqual(yield* deadlineOf, 3)
      yield* swap.replace([slow])
      assert.strictEqual(yield* deadlineOf, 3)
    }))

  it.effect("a PolicyError defers 451 4.7.1 and a defect 451 4.3.0 — never a 5xx", () =>
    Effect.gen(function*() {
      const failing: Policy.Rule = {
        name: "dnsbl",
        onMailFrom: () => Effect.fail(new Policy.PolicyError({ rule: "dnsbl", reason: { _tag: "LookupFailed", detail: "SERVFAIL" } }))
      }
      const d1 = yield* Policy.run([failing], "mail", mail())
      assert.deepStrictEqual(replyOf(d1), SmtpReply.make(451, "4.7.1", "Policy check unavailable, try again later"))
      const buggy: Policy.Rule = { name: "buggy", onMailFrom: () => Effect.die(new Error("bug")) }
      const d2 = yield* Policy.run([buggy], "mail", mail())
      assert.strictEqual(replyOf(d2)?.code, 451)
      assert.strictEqual(replyOf(d2)?.enhanced, "4.3.0")
      // a throwing hook (not even an Effect) is a defect too
      const throwing: Policy.Rule = {
        name: "throws",
        onMailFrom: () => {
          throw new Error("sync bug")
        }
      }
      assert.strictEqual(replyOf(yield* Policy.run([throwing], "mail", mail()))?.code, 451)
      // an observed failing rule is recorded but lets mail through
      const d3 = yield* Policy.run([{ ...failing, observe: true }], "mail", mail())
      assert.strictEqual(d3.verdict._tag, "Continue")
    }))

  it.effect("the Policy service runs its configured rules per stage", () =>
    Effect.gen(function*() {
      const p = Policy.make({ rules: [TlsRequired.make()] })
      assert.strictEqual((yield* p.run("mail", mail({ secure: false }))).verdict._tag, "Reject")
      assert.strictEqual((yield* p.run("mail", mail())).verdict._tag, "Continue")
    }))
})

describe("built-in rules", () => {
  const verdictOf = (rule: Policy.Rule, stage: Policy.Stage, ctx: Policy.StageContexts[Policy.Stage]) =>
    Effect.map(Policy.run([rule], stage, ctx), (d) => d.verdict)

  it.effect("HelloRequired: 503 5.5.1 without HELO, 504 5.5.2 for bad syntax, configurable bare IP and FQDN", () =>
    Effect.gen(function*() {
      const rule = HelloRequired.make()
      const v = (helo: string | undefined) => verdictOf(rule, "mail", mail({ helo }))
      assert.deepStrictEqual(Verdict.replyOf(yield* v(undefined)), SmtpReply.make(503, "5.5.1", "Send HELO/EHLO first"))
      for (const bad of ["192.0.2.1", "-bad-.example", "ex ample.org", "a..b", "[300.1.1.1]", "[IPv6:zz]", "host.123"]) {
        const r = Verdict.replyOf(yield* v(bad))
        assert.strictEqual(r?.code, 504, bad)
        assert.strictEqual(r?.enhanced, "5.5.2", bad)
      }
      for (const good of ["mail.example.org", "[192.0.2.1]", "[IPv6:2001:db8::1]", "localhost", "example.org."]) {
        assert.strictEqual((yield* v(good))._tag, "Continue", good)
      }
      assert.strictEqual((yield* verdictOf(HelloRequired.make({ allowBareIp: true }), "mail", mail({ helo: "192.0.2.1" })))._tag, "Continue")
      assert.strictEqual((yield* verdictOf(HelloRequired.make({ requireFqdn: true }), "mail", mail({ helo: "localhost" })))._tag, "Reject")
    }))

  it.effect("SizeLimit: declared SIZE over the limit at MAIL and actual size at DATA → 552 5.3.4", () =>
    Effect.gen(function*() {
      const rule = SizeLimit.make({ maxSize: 1000 })
      const atMail = yield* verdictOf(rule, "mail", mail({ declaredSize: 1001 }))
      assert.strictEqual(Verdict.replyOf(atMail)?.code, 552)
      assert.strictEqual(Verdict.replyOf(atMail)?.enhanced, "5.3.4")
      assert.strictEqual((yield* verdictOf(rule, "mail", mail({ declaredSize: 1000 })))._tag, "Continue")
      assert.strictEqual((yield* verdictOf(rule, "mail", mail()))._tag, "Continue")
      const data = (size: number): Policy.DataContext => ({ ...mail(), recipients: ["b@example.org"], size })
      assert.strictEqual(Verdict.replyOf(yield* verdictOf(rule, "data", data(5000)))?.code, 552)
      assert.strictEqual((yield* verdictOf(rule, "data", data(999)))._tag, "Continue")
    }))

  it.effect("MaxRecipients: 452 4.5.3 past the limit, a repeated recipient does not count", () =>
    Effect.gen(function*() {
      const rule = MaxRecipients.make({ max: 2 })
      assert.strictEqual((yield* verdictOf(rule, "rcpt", rcpt("b@x.test", ["a@x.test"])))._tag, "Continue")
      const over = yield* verdictOf(rule, "rcpt", rcpt("c@x.test", ["a@x.test", "b@x.test"]))
      assert.strictEqual(over._tag, "Defer")
      assert.deepStrictEqual(Verdict.replyOf(over), SmtpReply.tooManyRecipients)
      assert.strictEqual((yield* verdictOf(rule, "rcpt", rcpt("B@x.test", ["a@x.test", "b@x.test"])))._tag, "Continue")
    }))

  it.effect("TlsRequired: 530 5.7.0 before MAIL without TLS", () =>
    Effect.gen(function*() {
      const v = yield* verdictOf(TlsRequired.make(), "mail", mail({ secure: false }))
      assert.deepStrictEqual(Verdict.replyOf(v), SmtpReply.make(530, "5.7.0", "Must issue a STARTTLS command first"))
      assert.strictEqual((yield* verdictOf(TlsRequired.make(), "mail", mail({ secure: true })))._tag, "Continue")
    }))

  it.effect("ConnectionLimit: 421 4.7.0 over the per-IP limit, slots come back on close, exemptions", () =>
    Effect.gen(function*() {
      const rule = ConnectionLimit.make({ max: 2, exempt: (ip) => ip === "10.0.0.1" })
      const at = (sessionId: string, clientAddress = "192.0.2.7") => ({ ...conn, sessionId, clientAddress })
      assert.strictEqual((yield* Policy.run([rule], "connect", at("a"))).verdict._tag, "Continue")
      assert.strictEqual((yield* Policy.run([rule], "connect", at("b"))).verdict._tag, "Continue")
      const third = yield* Policy.run([rule], "connect", at("c"))
      assert.strictEqual(third.verdict._tag, "Disconnect")
      assert.deepStrictEqual(replyOf(third), SmtpReply.tooManyConnectionsFromIp)
      // another IP is not affected; the refused session's close releases nothing
      assert.strictEqual((yield* Policy.run([rule], "connect", at("d", "192.0.2.8"))).verdict._tag, "Continue")
      yield* Policy.close([rule], at("c"))
      assert.strictEqual(rule.connections("192.0.2.7"), 2)
      yield* Policy.close([rule], at("a"))
      yield* Policy.close([rule], at("a")) // idempotent
      assert.strictEqual(rule.connections("192.0.2.7"), 1)
      assert.strictEqual((yield* Policy.run([rule], "connect", at("e"))).verdict._tag, "Continue")
      for (const id of ["x1", "x2", "x3"]) {
        assert.strictEqual((yield* Policy.run([rule], "connect", at(id, "10.0.0.1"))).verdict._tag, "Continue")
      }
    }))
})
