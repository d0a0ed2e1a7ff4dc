/**
 * Envelope addresses against the RFC 5321 §4.1.2 Mailbox grammar (and RFC 6531's UTF-8), row by
 * row: dot-strings, quoted strings and their escapes, domains, address literals, the length
 * limits, the canonical form (unquoted when it can be, domain lower-cased, A-labels, compressed
 * IPv6), the domainless postmaster and what is refused.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as Address from "../../src/protocol/Address.ts"

const ok = (address: string, local: string, domain: string, utf8 = false) => ({ address, local, domain, utf8 })
/** Rows that parse: the input, and the local part and domain it means. */
const valid = [
  // Dot-string (§4.1.2 Dot-string = Atom *("." Atom)), every atext character.
  ok("john.smith@example.org", "john.smith", "example.org"),
  ok("a+tag@sub.example.test", "a+tag", "sub.example.test"),
  ok("!#$%&'*+-/=?^_`{|}~@example.org", "!#$%&'*+-/=?^_`{|}~", "example.org"),
  ok("John.Doe@Example.TEST", "John.Doe", "example.test"),
  // Quoted-string with qtextSMTP and quoted-pairSMTP.
  ok('"john smith"@example.org', "john smith", "example.org"),
  ok('"a@b"@c.test', "a@b", "c.test"),
  ok('"a\\"b"@c.test', 'a"b', "c.test"),
  ok('"a\\\\b"@c.test', "a\\b", "c.test"),
  ok('"\\j\\o\\h\\n"@c.test', "john", "c.test"),
  ok('".dot.first"@c.test', ".dot.first", "c.test"),
  ok('"two..dots"@c.test', "two..dots", "c.test"),
  ok('""@c.test', "", "c.test"),
  ok('"(comment) <x>, [y]: z;"@c.test', "(comment) <x>, [y]: z;", "c.test"),
  // Domains: LDH labels up to 63, single label, digits, IDNA A-labels.
  ok("u@localhost", "u", "localhost"),
  ok("u@123.example", "u", "123.example"),
  ok("u@xn--bcher-kva.example", "u", "xn--bcher-kva.example"),
  ok(`u@${"a".repeat(63)}.test`, "u", `${"a".repeat(63)}.test`),
  // Address literals: IPv4, IPv6 (compressed, lower-cased), general.
  ok("u@[192.0.2.1]", "u", "[192.0.2.1]"),
  ok("u@[192.000.002.001]", "u", "[192.0.2.1]"),
  ok("u@[IPv6:2001:DB8::1]", "u", "[ipv6:2001:db8::1]"),
  ok("u@[IPv6:2001:db8:0:0:0:0:0:1]", "u", "[ipv6:2001:db8::1]"),
  ok("u@[IPv6:::ffff:192.0.2.1]", "u", "[ipv6:::ffff:192.0.2.1]"),
  ok("u@[x-tag:Some.Content]", "u", "[x-tag:some.content]"),
  // RFC 6531: UTF-8 local parts and U-labels (stored as A-labels), when allowed.
  ok("jörg@example.org", "jörg", "example.org", true),
  ok('"jörg müller"@example.org', "jörg müller", "example.org", true),
  ok("用户@例子.测试", "用户", "xn--fsqu00a.xn--0zwm56d", true),
  ok("u@Bücher.example", "u", "xn--bcher-kva.example", true)
]

/** Rows that do not parse, with why. */
const invalid: ReadonlyArray<readonly [string, Address.Problem["_tag"]]> = [
  ["", "Syntax"],
  ["user", "Syntax"],
  ["@example.test", "Syntax"],
  ["user@", "Syntax"],
  [".user@example.test", "Syntax"],
  ["user.@example.test", "Syntax"],
  ["us..er@example.test", "Syntax"],
  ["a@b@c.test", "Syntax"],
  ["us er@example.test", "Syntax"],
  ["us(er@example.test", "Syntax"],
  ['"unterminated@example.test', "Syntax"],
  ['"a"b@example.test', "Syntax"],
  ['"tab\there"@example.test', "Syntax"],
  ['"bad\\\u0001"@example.test', "Syntax"],
  ["user@-bad.test", "Syntax"],
  ["user@bad-.test", "Syntax"],
  ["user@a..test", "Syntax"],
  ["user@example.test.", "Syntax"],
  ["user@.example.test", "Syntax"],
  ["user@exa mple.test", "Syntax"],
  ["user@exa_mple.test", "Syntax"],
  ["user@example.test>", "Syntax"],
  [`user@${"a".repeat(64)}.test`, "Syntax"],
  ["u@[192.0.2.256]", "Syntax"],
  ["u@[192.0.2]", "Syntax"],
  ["u@[IPv6:2001:db8::g]", "Syntax"],
  ["u@[IPv6:fe80::1%eth0]", "Syntax"],
  ["u@[tag:with space]", "Syntax"],
  ["u@[]", "Syntax"],
  ["u@[192.0.2.1", "Syntax"],
  [`${"l".repeat(65)}@example.test`, "LocalTooLong"],
  [`"${"l".repeat(63)}"@example.test`, "LocalTooLong"],
  [`user@${Array.from({ length: 65 }, () => "abc").join(".")}`, "DomainTooLong"],
  ["jörg@example.org", "NonAscii"],
  ["u@bücher.example", "NonAscii"],
  ['"jörg"@example.org', "NonAscii"]
]

describe("Address.check: the RFC 5321 Mailbox grammar", () => {
  it("accepts every valid row, with the local part and domain it means", () => {
    for (const row of valid) {
      const r = Address.check(row.address, { utf8: row.utf8 })
      assert.isTrue(Result.isSuccess(r), `${row.address}: ${Result.isFailure(r) ? Address.describe(r.failure) : ""}`)
      if (Result.isSuccess(r)) assert.deepStrictEqual(r.success, { local: row.local, domain: row.domain }, row.address)
    }
  })

  it("refuses every invalid row, for the right reason", () => {
    for (const [address, reason] of invalid) {
      const r = Address.check(address)
      assert.isTrue(Result.isFailure(r), JSON.stringify(address))
      if (Result.isFailure(r)) assert.strictEqual(r.failure._tag, reason, JSON.stringify(address))
    }
  })

  it("allows UTF-8 only when asked, and never invisible characters or C1 controls", () => {
    assert.isTrue(Result.isSuccess(Address.check("jörg@example.org", { utf8: true })))
    for (const bad of ["a\u200bb@example.org", "a\u202eb@example.org", "a\u0085b@example.org", '"a\ufeffb"@example.org', "u@a\u200b.example"]) {
      const r = Address.check(bad, { utf8: true })
      assert.isTrue(Result.isFailure(r) && r.failure._tag === "Syntax", JSON.stringify(bad))
    }
  })

  it("counts the limits in octets as sent: 64 for the local part, 255 for the domain", () => {
    assert.isTrue(Result.isSuccess(Address.check(`${"l".repeat(64)}@example.test`)))
    assert.isTrue(Result.isSuccess(Address.check(`user@${Array.from({ length: 64 }, () => "abc").join(".")}`))) // 255
    // 32 two-octet characters are 64 octets; one more is 66.
    assert.isTrue(Result.isSuccess(Address.check(`${"é".repeat(32)}@example.test`, { utf8: true })))
    const over = Address.check(`${"é".repeat(33)}@example.test`, { utf8: true })
    assert.isTrue(Result.isFailure(over) && over.failure._tag === "LocalTooLong")
  })

  it("takes the bare postmaster only when allowed (RCPT), in any case", () => {
    for (const p of ["postmaster", "Postmaster", "POSTMASTER"]) {
      assert.deepStrictEqual(Address.check(p, { postmaster: true }), Result.succeed({ local: "postmaster", domain: "" }))
      assert.isTrue(Result.isFailure(Address.check(p)))
    }
  })
})

describe("Address canonical form", () => {
  it("unquotes what needs no quotes and quotes the rest with minimal escapes", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ['"john"@Example.ORG', "john@example.org"],
      ['"\\j\\o\\h\\n"@c.test', "john@c.test"],
      ['"john smith"@example.org', '"john smith"@example.org'],
      ['"a\\"b"@c.test', '"a\\"b"@c.test'],
      ['"a\\\\b"@c.test', '"a\\\\b"@c.test'],
      ['".x"@c.test', '".x"@c.test'],
      ['""@c.test', '""@c.test'],
      ["u@[IPv6:2001:DB8:0::1]", "u@[ipv6:2001:db8::1]"],
      ["jörg@Bücher.example", "jörg@xn--bcher-kva.example"],
      ["Postmaster", "postmaster"]
    ]
    for (const [input, canonical] of cases) assert.strictEqual(Address.normalize(input), canonical, input)
  })

  it("is a fixed point: the canonical form parses to the same mailbox", () => {
    for (const row of valid) {
      const first = Address.parse(row.address)!
      const again = Address.parse(Address.toString(first))
      assert.deepStrictEqual(again, first, row.address)
      assert.strictEqual(Address.toString(again!), Address.toString(first))
    }
  })

  it("keeps the local part's case and folds the domain's", () => {
    assert.strictEqual(Address.normalize("User@EXAMPLE.Test"), "User@example.test")
    assert.isTrue(Address.isPostmaster(Address.parse("PostMaster@example.test")!))
    assert.isFalse(Address.isPostmaster(Address.parse("postmistress@example.test")!))
    assert.isUndefined(Address.normalize("not an address"))
  })
})
