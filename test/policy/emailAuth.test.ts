/**
 * The email-authentication rules against an in-memory zone (ZoneDns): every result of each
 * method, SPF's lookup limits, DMARC alignment (relaxed and strict) and policies, the
 * skips for our own users, DNS trouble (never a 5xx), and the exact Authentication-Results form.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import * as ZoneDns from "../../src/dns/ZoneDns.ts"
import * as MessageEdit from "../../src/policy/MessageEdit.ts"
import * as Policy from "../../src/policy/Policy.ts"
import * as AuthRules from "../../src/policy/rules/auth/AuthRules.ts"
import * as Checks from "../../src/policy/rules/auth/Checks.ts"
import type { AuthResult } from "../../src/protocol/AuthenticationResults.ts"
import * as HeaderBlock from "../../src/spool/HeaderBlock.ts"
import type { SpooledBody } from "../../src/spool/SpooledBody.ts"
import { ed25519Key, message, rsaKey, seal, sign, txtStrings } from "../support/dkim.ts"

const key = rsaKey()
const edKey = ed25519Key()
const smallKey = rsaKey(512)
const arcKey = rsaKey()

const limitIncludes = Array.from({ length: 11 }, (_, i) => `include:l${i + 1}.limit.test`).join(" ")

const zone: ZoneDns.Zone = {
  "example.org": { TXT: ["v=spf1 ip4:192.0.2.10 -all"], A: ["192.0.2.10"] },
  "_dmarc.example.org": { TXT: ["v=DMARC1; p=reject"] },
  "sel._domainkey.example.org": { TXT: [txtStrings(key.record)] },
  "ed._domainkey.example.org": { TXT: [edKey.record] },
  "small._domainkey.example.org": { TXT: [txtStrings(smallKey.record)] },
  "bounce.example.org": { TXT: ["v=spf1 ip4:192.0.2.10 -all"] },
  "strict.test": { TXT: ["v=spf1 ip4:192.0.2.10 -all"] },
  "_dmarc.strict.test": { TXT: ["v=DMARC1; p=reject; aspf=s; adkim=s"] },
  "bounce.strict.test": { TXT: ["v=spf1 ip4:192.0.2.10 -all"] },
  "quarantine.test": { TXT: ["v=spf1 -all"] },
  "_dmarc.quarantine.test": { TXT: ["v=DMARC1; p=quarantine"] },
  "relaxed.test": { TXT: ["v=spf1 -all"] },
  "_dmarc.relaxed.test": { TXT: ["v=DMARC1; p=none"] },
  "soft.test": { TXT: ["v=spf1 ~all"] },
  "neutral.test": { TXT: ["v=spf1 ?all"] },
  "nospf.test": { A: ["192.0.2.99"] },
  "temp.test": { fail: { TXT: "Timeout" } },
  "_dmarc.temp.test": { fail: "ServerFailure" },
  "perm.test": { TXT: ["v=spf1 ip4:192.0.2.10 bogus:mechanism -all"] },
  "limit.test": { TXT: [`v=spf1 ${limitIncludes} -all`] },
  ...Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`l${i + 1}.limit.test`, { TXT: ["v=spf1 ip4:198.51.100.1 -all"] }])),
  "void.test": { TXT: ["v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test ip4:192.0.2.10 -all"] },
  "mx.sender.test": { TXT: ["v=spf1 ip4:192.0.2.10 -all"], A: ["192.0.2.10"] },
  "arc._domainkey.forwarder.test": { TXT: [txtStrings(arcKey.record)] },
  // iprev
  "10.2.0.192.in-addr.arpa": { PTR: ["mail.example.org"] },
  "mail.example.org": { A: ["192.0.2.10"] },
  "20.2.0.192.in-addr.arpa": { PTR: ["liar.example.org"] },
  "liar.example.org": { A: ["192.0.2.99"] },
  "30.2.0.192.in-addr.arpa": { fail: "Timeout" }
}

interface Sent {
  readonly ip?: string
  readonly helo?: string
  readonly mailFrom: string
  readonly user?: string
  readonly trusted?: boolean
}

const bodyOf = (msg: string): SpooledBody => {
  const buf = Buffer.from(msg)
  return { _tag: "InMemory", size: buf.length, chunks: [buf], release: Effect.void }
}

let session = 0
/** MAIL then DATA through `rules`, as the session runs them. */
const transact = (rules: ReadonlyArray<Policy.Rule>, msg: string, sent: Sent) =>
  Effect.gen(function*() {
    const mail: Policy.MailContext = {
      listener: "test",
      sessionId: `s${++session}`,
      clientAddress: sent.ip ?? "192.0.2.10",
      secure: false,
      helo: sent.helo ?? "mx.sender.test",
      user: sent.user,
      trusted: sent.trusted,
      mailFrom: sent.mailFrom,
      declaredSize: undefined
    }
    const atMail = yield* Policy.run(rules, "mail", mail)
    if (atMail.verdict._tag !== "Continue") return { atMail, atData: undefined, plan: undefined, results: [] as ReadonlyArray<AuthResult> }
    const body = bodyOf(msg)
    const block = yield* HeaderBlock.read(body)
    const atData = yield* Policy.run(rules, "data", {
      ...mail,
      recipients: ["someone@example.test"],
      size: body.size,
      messageId: `m${session}`,
      headers: block.fields.map((f) => [f.name, f.value] as const),
      body: HeaderBlock.stream(body)
    })
    const plan = MessageEdit.plan(atData.edits, "mx.test")
    yield* Effect.forEach(rules, (r) => r.onClose?.(mail) ?? Effect.void)
    return { atMail, atData, plan, results: plan.authentication?.results ?? [] }
  })

const setup = (build: (checks: Checks.Checks["Service"]) => ReadonlyArray<Policy.Rule>, z: ZoneDns.Zone = zone) =>
  Effect.map(Checks.make(ZoneDns.make(z).dns, { hostname: "mx.test" }), build)

const resultOf = (results: ReadonlyArray<AuthResult>, method: string, prop?: string) =>
  results.find((r) => r.method === method && (prop === undefined || prop in r.properties))

describe("spf", () => {
  const cases: ReadonlyArray<readonly [string, string, string]> = [
    ["pass", "a@example.org", "192.0.2.10"],
    ["fail", "a@example.org", "192.0.2.66"],
    ["softfail", "a@soft.test", "192.0.2.10"],
    ["neutral", "a@neutral.test", "192.0.2.10"],
    ["none", "a@nospf.test", "192.0.2.10"],
    ["temperror", "a@temp.test", "192.0.2.10"],
    ["permerror", "a@perm.test", "192.0.2.10"]
  ]
  for (const [expected, mailFrom, ip] of cases) {
    it.effect(`spf=${expected}`, () =>
      Effect.gen(function*() {
        const rules = yield* setup((c) => [AuthRules.spf(c)])
        const { atMail, results } = yield* transact(rules, message(mailFrom), { mailFrom, ip })
        assert.strictEqual(atMail.verdict._tag, "Continue", "by default SPF only records")
        const r = resultOf(results, "spf", "smtp.mailfrom")
        assert.strictEqual(r?.result, expected)
        assert.strictEqual(r?.properties["smtp.mailfrom"], mailFrom)
      }))
  }

  it.effect("the HELO identity is checked and reported as smtp.helo; a null sender uses it", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.spf(c)])
      const { results } = yield* transact(rules, message("a@example.org"), { mailFrom: "", helo: "mx.sender.test" })
      assert.deepStrictEqual(results.map((r) => [r.result, r.properties]), [
        ["pass", { "smtp.helo": "mx.sender.test" }],
        ["pass", { "smtp.helo": "mx.sender.test" }]
      ])
    }))

  it.effect("more than 10 DNS lookups is permerror; more than 2 void lookups too", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.spf(c)])
      const limit = yield* transact(rules, message("a@limit.test"), { mailFrom: "a@limit.test" })
      assert.strictEqual(resultOf(limit.results, "spf", "smtp.mailfrom")?.result, "permerror")
      const voids = yield* transact(rules, message("a@void.test"), { mailFrom: "a@void.test" })
      assert.strictEqual(resultOf(voids.results, "spf", "smtp.mailfrom")?.result, "permerror")
    }))

  it.effect("fail = reject refuses at MAIL with 550 5.7.23; permerror = reject with 550 5.7.24", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.spf(c, { fail: "reject", permerror: "reject" })])
      const failed = yield* transact(rules, message("a@example.org"), { mailFrom: "a@example.org", ip: "192.0.2.66" })
      assert.strictEqual(failed.atMail.verdict._tag, "Reject")
      if (failed.atMail.verdict._tag === "Reject") assert.deepStrictEqual([failed.atMail.verdict.reply.code, failed.atMail.verdict.reply.enhanced], [550, "5.7.23"])
      const broken = yield* transact(rules, message("a@perm.test"), { mailFrom: "a@perm.test" })
      if (broken.atMail.verdict._tag !== "Reject") return assert.fail("expected a reject")
      assert.strictEqual(broken.atMail.verdict.reply.enhanced, "5.7.24")
    }))

  it.effect("temperror never refuses: it continues by default, and defers with 451 4.4.3 when asked", () =>
    Effect.gen(function*() {
      const open = yield* setup((c) => [AuthRules.spf(c, { fail: "reject" })])
      assert.strictEqual((yield* transact(open, message("a@temp.test"), { mailFrom: "a@temp.test" })).atMail.verdict._tag, "Continue")
      const strict = yield* setup((c) => [AuthRules.spf(c, { temperror: "defer" })])
      const deferred = yield* transact(strict, message("a@temp.test"), { mailFrom: "a@temp.test" })
      if (deferred.atMail.verdict._tag !== "Defer") return assert.fail("expected a defer")
      assert.deepStrictEqual([deferred.atMail.verdict.reply.code, deferred.atMail.verdict.reply.enhanced], [451, "4.4.3"])
    }))

  it.effect("authenticated sessions and trusted networks are skipped unless configured", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.spf(c, { fail: "reject" })])
      const user = yield* transact(rules, message("a@example.org"), { mailFrom: "a@example.org", ip: "192.0.2.66", user: "alice" })
      assert.strictEqual(user.atMail.verdict._tag, "Continue")
      assert.isUndefined(user.plan?.authentication, "a skipped rule adds no results")
      const trusted = yield* transact(rules, message("a@example.org"), { mailFrom: "a@example.org", ip: "192.0.2.66", trusted: true })
      assert.strictEqual(trusted.atMail.verdict._tag, "Continue")
      const checked = yield* setup((c) => [AuthRules.spf(c, { fail: "reject", checkAuthenticated: true, checkTrusted: true })])
      const both = yield* transact(checked, message("a@example.org"), { mailFrom: "a@example.org", ip: "192.0.2.66", user: "alice", trusted: true })
      assert.strictEqual(both.atMail.verdict._tag, "Reject")
    }))
})

describe("dkim", () => {
  it.effect("rsa-sha256 and ed25519-sha256 signatures pass", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.dkim(c)])
      const signed = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "sel", key))
      const both = yield* Effect.promise(() => sign(signed, "example.org", "ed", edKey))
      const { results } = yield* transact(rules, both, { mailFrom: "a@example.org" })
      assert.deepStrictEqual(results.map((r) => [r.result, r.properties["header.d"], r.properties["header.s"], r.properties["header.a"]]).sort(), [
        ["pass", "example.org", "ed", "ed25519-sha256"],
        ["pass", "example.org", "sel", "rsa-sha256"]
      ])
    }))

  it.effect("a body changed after signing fails; an unsigned message is none", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.dkim(c)])
      const signed = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "sel", key))
      const { results } = yield* transact(rules, signed.replace("this is a test", "this is a fake"), { mailFrom: "a@example.org" })
      assert.strictEqual(results[0]?.result, "fail")
      assert.match(results[0]?.reason ?? "", /body hash/)
      const unsigned = yield* transact(rules, message("a@example.org"), { mailFrom: "a@example.org" })
      assert.deepStrictEqual(unsigned.results, [{ method: "dkim", result: "none", reason: "message not signed", properties: {} }])
    }))

  it.effect("a key under 1024 bits does not pass; a missing key is permerror-class; DNS trouble is temperror", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.dkim(c)])
      const small = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "small", smallKey))
      const weak = (yield* transact(rules, small, { mailFrom: "a@example.org" })).results[0]
      assert.notStrictEqual(weak?.result, "pass")
      assert.include(["fail", "policy", "neutral", "permerror"], weak?.result)
      const nokey = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "gone", key))
      const missing = (yield* transact(rules, nokey, { mailFrom: "a@example.org" })).results[0]
      assert.include(["neutral", "permerror", "fail"], missing?.result)
      const troubled = yield* setup((c) => [AuthRules.dkim(c)], { ...zone, "sel._domainkey.example.org": { fail: "Timeout" } })
      const signed = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "sel", key))
      assert.strictEqual((yield* transact(troubled, signed, { mailFrom: "a@example.org" })).results[0]?.result, "temperror")
    }))
})

describe("dmarc", () => {
  const all = (c: Checks.Checks["Service"], options: AuthRules.DmarcOptions = {}) => [
    AuthRules.spf(c),
    AuthRules.dkim(c),
    AuthRules.dmarc(c, options)
  ]

  it.effect("aligned DKIM passes; aligned SPF alone passes (relaxed: a subdomain aligns)", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => all(c))
      const signed = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "sel", key))
      const viaDkim = yield* transact(rules, signed, { mailFrom: "x@other.test", ip: "192.0.2.66" })
      assert.deepStrictEqual(resultOf(viaDkim.results, "dmarc"), {
        method: "dmarc",
        result: "pass",
        properties: { "header.from": "example.org", "policy.dmarc": "reject" }
      })
      const viaSpf = yield* transact(rules, message("a@example.org"), { mailFrom: "b@bounce.example.org" })
      assert.strictEqual(viaSpf.atData?.verdict._tag, "Continue")
      assert.strictEqual(resultOf(viaSpf.results, "dmarc")?.result, "pass")
    }))

  it.effect("strict alignment: the subdomain that passes SPF does not align", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => all(c))
      const { atData, results } = yield* transact(rules, message("a@strict.test"), { mailFrom: "b@bounce.strict.test" })
      assert.strictEqual(resultOf(results, "spf", "smtp.mailfrom")?.result, "pass")
      assert.strictEqual(atData?.verdict._tag, "Reject", "p=reject and no aligned identifier")
    }))

  it.effect("p=reject refuses a forged From with 550 5.7.1; observe mode only records", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => all(c))
      const forged = yield* transact(rules, message("ceo@example.org"), { mailFrom: "x@other.test", ip: "192.0.2.66" })
      if (forged.atData?.verdict._tag !== "Reject") return assert.fail("expected a reject")
      assert.deepStrictEqual([forged.atData.verdict.reply.code, forged.atData.verdict.reply.enhanced], [550, "5.7.1"])
      const observed = yield* setup((c) => all(c, { observe: true }))
      const seen = yield* transact(observed, message("ceo@example.org"), { mailFrom: "x@other.test", ip: "192.0.2.66" })
      assert.strictEqual(seen.atData?.verdict._tag, "Continue")
      assert.isUndefined(resultOf(seen.results, "dmarc"), "an observed rule edits nothing")
    }))

  it.effect("p=quarantine is accepted and marked; p=none is recorded", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => all(c))
      const q = yield* transact(rules, message("a@quarantine.test"), { mailFrom: "a@quarantine.test" })
      assert.strictEqual(q.atData?.verdict._tag, "Continue")
      assert.strictEqual(q.plan?.quarantine?.rule, "dmarc")
      assert.strictEqual(resultOf(q.results, "dmarc")?.result, "fail")
      const none = yield* transact(rules, message("a@relaxed.test"), { mailFrom: "a@relaxed.test" })
      assert.isUndefined(none.plan?.quarantine)
      assert.deepStrictEqual(resultOf(none.results, "dmarc")?.properties, { "header.from": "relaxed.test", "policy.dmarc": "none" })
    }))

  it.effect("no record is none; DNS trouble is temperror, never a refusal; two author domains are permerror", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => all(c))
      assert.strictEqual(resultOf((yield* transact(rules, message("a@nospf.test"), { mailFrom: "a@nospf.test" })).results, "dmarc")?.result, "none")
      const temp = yield* transact(rules, message("a@temp.test"), { mailFrom: "a@other.test", ip: "192.0.2.66" })
      assert.strictEqual(temp.atData?.verdict._tag, "Continue")
      assert.strictEqual(resultOf(temp.results, "dmarc")?.result, "temperror")
      const deferring = yield* setup((c) => all(c, { temperror: "defer" }))
      const deferred = yield* transact(deferring, message("a@temp.test"), { mailFrom: "a@other.test", ip: "192.0.2.66" })
      if (deferred.atData?.verdict._tag !== "Defer") return assert.fail("expected a defer")
      assert.strictEqual(deferred.atData.verdict.reply.code, 451)
      const two = yield* transact(rules, message("a@example.org, b@relaxed.test"), { mailFrom: "a@example.org" })
      assert.strictEqual(resultOf(two.results, "dmarc")?.result, "permerror")
    }))

  it.effect("without an spf rule DMARC still checks SPF; the message is read once for all rules", () =>
    Effect.gen(function*() {
      const z = ZoneDns.make(zone)
      const checks = yield* Checks.make(z.dns, { hostname: "mx.test" })
      const rules = [AuthRules.dkim(checks), AuthRules.arc(checks), AuthRules.dmarc(checks)]
      const { results } = yield* transact(rules, message("a@example.org"), { mailFrom: "b@bounce.example.org" })
      assert.strictEqual(resultOf(results, "dmarc")?.result, "pass")
      const dmarcLookups = z.questions().filter((q) => q.name === "_dmarc.example.org")
      assert.strictEqual(dmarcLookups.length, 1)
    }))
})

describe("arc", () => {
  it.effect("no chain is none; a sealed chain passes; a message changed after sealing fails", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.arc(c)])
      assert.strictEqual((yield* transact(rules, message("a@example.org"), { mailFrom: "a@example.org" })).results[0]?.result, "none")
      const sealed = yield* Effect.promise(() =>
        seal(message("a@example.org"), "forwarder.test", "arc", arcKey, "forwarder.test; spf=pass smtp.mailfrom=a@example.org")
      )
      assert.strictEqual((yield* transact(rules, sealed, { mailFrom: "a@example.org" })).results[0]?.result, "pass")
      const changed = sealed.replace("this is a test", "this is changed")
      assert.strictEqual((yield* transact(rules, changed, { mailFrom: "a@example.org" })).results[0]?.result, "fail")
    }))
})

describe("arc sealing", () => {
  it.effect("with a seal key, the arc rule seals what it verified; the next hop finds a passing chain carrying our results", () =>
    Effect.gen(function*() {
      const ours = rsaKey()
      const sealZone: ZoneDns.Zone = { ...zone, "seal._domainkey.mx.test": { TXT: [txtStrings(ours.record)] } }
      const checks = yield* Checks.make(ZoneDns.make(sealZone).dns, {
        hostname: "mx.test",
        arcSeal: { signingDomain: "mx.test", selector: "seal", privateKey: ours.privateKey }
      })
      const rules = [AuthRules.spf(checks), AuthRules.dkim(checks), AuthRules.dmarc(checks), AuthRules.arc(checks, { seal: true })]
      const signed = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "sel", key))
      const { plan } = yield* transact(rules, signed, { mailFrom: "a@example.org" })
      const prepend = plan?.prepend ?? ""
      assert.match(prepend, /^Authentication-Results: mx\.test;/)
      assert.match(prepend, /\r\nARC-Seal: i=1; /)
      assert.match(prepend, /\r\nARC-Message-Signature: i=1; /)
      assert.match(prepend, /\r\nARC-Authentication-Results: i=1; mx\.test;[\s\S]*spf=pass[\s\S]*dkim=pass[\s\S]*dmarc=pass[\s\S]*arc=none/)
      // The next hop: a chain of one set, which passes.
      const nextHop = yield* setup((c) => [AuthRules.arc(c)], sealZone)
      const onward = yield* transact(nextHop, prepend + signed, { mailFrom: "a@example.org" })
      assert.strictEqual(onward.results[0]?.result, "pass")
      // Without a key the option does nothing.
      const keyless = yield* setup((c) => [AuthRules.arc(c, { seal: true })])
      assert.notInclude((yield* transact(keyless, signed, { mailFrom: "a@example.org" })).plan?.prepend ?? "", "ARC-Seal")
    }))
})

describe("iprev", () => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    ["pass", "192.0.2.10"],
    ["fail", "192.0.2.20"],
    ["permerror", "192.0.2.40"],
    ["temperror", "192.0.2.30"]
  ]
  for (const [expected, ip] of cases) {
    it.effect(`iprev=${expected}`, () =>
      Effect.gen(function*() {
        const rules = yield* setup((c) => [AuthRules.iprev(c)])
        const { results } = yield* transact(rules, message("a@example.org"), { mailFrom: "a@example.org", ip })
        assert.strictEqual(results[0]?.result, expected)
        assert.strictEqual(results[0]?.properties["policy.iprev"], ip)
      }))
  }
})

describe("metrics", () => {
  it.effect("incoming_auth_results_total counts each result by method and result, refusals included", () =>
    Effect.gen(function*() {
      const count = (method: string, result: string) =>
        Effect.map(Metric.value(Checks.resultsTotal.pipe(Metric.withAttributes({ method, result }))), (v) => v.count)
      const watched = [["spf", "pass"], ["spf", "fail"], ["dkim", "pass"], ["dkim", "none"], ["dmarc", "pass"], ["dmarc", "fail"]] as const
      const before = yield* Effect.forEach(watched, ([m, r]) => count(m, r))
      const rules = yield* setup((c) => [AuthRules.spf(c), AuthRules.dkim(c), AuthRules.dmarc(c)])
      const signed = yield* Effect.promise(() => sign(message("a@example.org"), "example.org", "sel", key))
      yield* transact(rules, signed, { mailFrom: "a@example.org" })
      // A forged From of a p=reject domain: refused, and its dmarc=fail still counted.
      const forged = yield* transact(rules, message("ceo@example.org"), { mailFrom: "x@example.org", ip: "192.0.2.66" })
      assert.strictEqual(forged.atData?.verdict._tag, "Reject")
      const after = yield* Effect.forEach(watched, ([m, r]) => count(m, r))
      // The HELO identity (mx.sender.test, SPF-listed for 192.0.2.10 only) is an spf result of its
      // own: two spf results per message.
      assert.deepStrictEqual(
        Object.fromEntries(watched.map(([m, r], i) => [`${m}=${r}`, after[i]! - before[i]!])),
        { "spf=pass": 2, "spf=fail": 2, "dkim=pass": 1, "dkim=none": 1, "dmarc=pass": 1, "dmarc=fail": 1 }
      )
    }))
})

describe("Authentication-Results", () => {
  it.effect("one header on top, exact form, results in rule order, and existing fields claiming our id removed", () =>
    Effect.gen(function*() {
      const rules = yield* setup((c) => [AuthRules.spf(c), AuthRules.dkim(c), AuthRules.dmarc(c), AuthRules.iprev(c)])
      const forged = "Authentication-Results: MX.test; dkim=pass header.d=example.org\r\n" +
        "Authentication-Results: upstream.test; spf=pass\r\n"
      const signed = yield* Effect.promise(() => sign(message("a@example.org", undefined, forged), "example.org", "sel", key))
      const { plan } = yield* transact(rules, signed, { mailFrom: "a@example.org" })
      const b = (signed.match(/ b=([^;]+)/)?.[1] ?? "").replace(/\s/g, "").slice(0, 8)
      const quotedB = /^[A-Za-z0-9+]+$/.test(b) ? b : `"${b}"`
      assert.strictEqual(
        plan?.prepend,
        "Authentication-Results: mx.test;\r\n" +
          "\tspf=pass smtp.helo=mx.sender.test;\r\n" +
          "\tspf=pass smtp.mailfrom=a@example.org;\r\n" +
          `\tdkim=pass header.d=example.org header.s=sel header.a=rsa-sha256 header.b=${quotedB};\r\n` +
          "\tdmarc=pass header.from=example.org policy.dmarc=reject;\r\n" +
          "\tiprev=pass reason=mail.example.org policy.iprev=192.0.2.10\r\n"
      )
      assert.deepStrictEqual(plan?.headerOps, [{ _tag: "RemoveHeader", name: "Authentication-Results", authservId: "mx.test" }])
      const body = yield* HeaderBlock.rewrite(bodyOf(signed), plan!.headerOps)
      const text = Buffer.concat((body._tag === "InMemory" ? body.chunks : [])).toString()
      assert.notInclude(text, "MX.test; dkim=pass", "the forged field claiming our authserv-id is gone")
      assert.include(text, "Authentication-Results: upstream.test; spf=pass\r\n", "another host's field stays")
    }))
})
