/**
 * The MTA-STS texts (RFC 8461): the `_mta-sts` TXT record (§3.1), the policy file (§3.2) and MX
 * host matching (§4.1). Good inputs give the policy they state; bad ones give a reason that
 * names what is wrong, so the log line tells an operator which field to fix.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as MtaStsPolicy from "../../src/delivery/mx/MtaStsPolicy.ts"

const policy = (text: string) => {
  const r = MtaStsPolicy.parsePolicy(text)
  if (Result.isFailure(r)) throw new Error(`expected a policy, got: ${r.failure}`)
  return r.success
}
const problem = (text: string) => {
  const r = MtaStsPolicy.parsePolicy(text)
  if (Result.isSuccess(r)) throw new Error(`expected a refusal, got ${JSON.stringify(r.success)}`)
  return r.failure
}
const id = (...records: ReadonlyArray<ReadonlyArray<string>>) => MtaStsPolicy.parseRecord(records)

describe("MTA-STS TXT record (RFC 8461 §3.1)", () => {
  it("the id of the one v=STSv1 record; others' records ignored; character-strings joined", () => {
    assert.deepStrictEqual(id(["v=STSv1; id=20260101T000000;"]), Result.succeed("20260101T000000"))
    assert.deepStrictEqual(id(["v=spf1 -all"], ["v=STSv1;id=abc"]), Result.succeed("abc"))
    assert.deepStrictEqual(id(["v=STSv1; ", "id=split1; ext=x"]), Result.succeed("split1"))
    assert.deepStrictEqual(id(["v=STSv1 ; id=1 ;"]), Result.succeed("1"))
  })

  it("no usable record: none, two, no id, a bad id, another version", () => {
    assert.deepStrictEqual(id(), Result.fail("no v=STSv1 record"))
    assert.deepStrictEqual(id(["v=STSv2; id=1"]), Result.fail("no v=STSv1 record"))
    assert.deepStrictEqual(id(["v=STSv1; id=1"], ["v=STSv1; id=2"]), Result.fail("2 v=STSv1 records (exactly one is needed)"))
    assert.deepStrictEqual(id(["v=STSv1;"]), Result.fail("the record has no id"))
    assert.deepStrictEqual(id(["v=STSv1; id=not-alnum"]), Result.fail(`bad id "not-alnum" (1 to 32 letters and digits)`))
    assert.deepStrictEqual(id([`v=STSv1; id=${"a".repeat(33)}`]), Result.fail(`bad id "${"a".repeat(33)}" (1 to 32 letters and digits)`))
  })
})

describe("MTA-STS policy file (RFC 8461 §3.2)", () => {
  it("a policy with CRLF or LF lines, every mx kept, unknown fields ignored, the first of a repeated field wins", () => {
    assert.deepStrictEqual(
      policy("version: STSv1\r\nmode: enforce\r\nmx: mx1.Example.com.\r\nmx: *.example.net\r\nmax_age: 604800\r\n"),
      { mode: "enforce", mx: ["mx1.example.com", "*.example.net"], maxAgeSeconds: 604800 }
    )
    assert.deepStrictEqual(
      policy("version: STSv1\nmode: testing\nmode: enforce\nmx:mail.example.org\nmax_age:86400\nextension_field: whatever\n\n"),
      { mode: "testing", mx: ["mail.example.org"], maxAgeSeconds: 86400 }
    )
    // mode none withdraws a policy: it needs no mx.
    assert.deepStrictEqual(policy("version: STSv1\nmode: none\nmax_age: 0"), { mode: "none", mx: [], maxAgeSeconds: 0 })
    // More than a year is read as a year.
    assert.strictEqual(policy("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 9999999999").maxAgeSeconds, MtaStsPolicy.maxMaxAgeSeconds)
  })

  it("refused, with the reason: version, mode, max_age, mx, and lines that are not fields", () => {
    assert.strictEqual(problem("mode: enforce\nmx: a.test\nmax_age: 1"), "no version field")
    assert.strictEqual(problem("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1"), `version "STSv2" is not STSv1`)
    assert.strictEqual(problem("version: STSv1\nmx: a.test\nmax_age: 1"), "no mode field")
    assert.strictEqual(problem("version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1"), `mode "Enforce" is not enforce, testing or none`)
    assert.strictEqual(problem("version: STSv1\nmode: enforce\nmx: a.test"), "no max_age field")
    assert.strictEqual(problem("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -5"), `max_age "-5" is not a number of seconds`)
    assert.strictEqual(problem("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1 day"), `max_age "1 day" is not a number of seconds`)
    assert.strictEqual(problem("version: STSv1\nmode: enforce\nmax_age: 86400"), "mode enforce without any mx field")
    assert.strictEqual(problem("version: STSv1\nmode: enforce\nmx: *example.com\nmax_age: 1"), `line 3: bad mx pattern "*example.com"`)
    assert.strictEqual(problem("version: STSv1\nmode: enforce\nmx: mx.*.example.com\nmax_age: 1"), `line 3: bad mx pattern "mx.*.example.com"`)
    assert.strictEqual(problem("<html><body>Not here</body></html>"), `line 1 is not "key: value": "<html><body>Not here</body></html>"`)
  })
})

describe("MX host matching (RFC 8461 §4.1)", () => {
  const p = policy("version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.mail.example.net\nmax_age: 1")
  it("exact names and one-label wildcards, case and trailing dot aside", () => {
    assert.isTrue(MtaStsPolicy.allows(p, "mx.example.com"))
    assert.isTrue(MtaStsPolicy.allows(p, "MX.Example.COM."))
    assert.isTrue(MtaStsPolicy.allows(p, "a.mail.example.net"))
    assert.isFalse(MtaStsPolicy.allows(p, "mail.example.net"), "the wildcard needs a label")
    assert.isFalse(MtaStsPolicy.allows(p, "a.b.mail.example.net"), "the wildcard covers one label only")
    assert.isFalse(MtaStsPolicy.allows(p, "xmail.example.net"))
    assert.isFalse(MtaStsPolicy.allows(p, "mx2.example.com"))
    assert.isFalse(MtaStsPolicy.allows(p, "evil-mx.example.com.attacker.test"))
  })
})
