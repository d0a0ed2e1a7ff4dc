/**
 * Envelope addresses: parsing, the domain-only lower-casing, the domainless postmaster and
 * what is refused.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Address from "../../src/protocol/Address.ts"

describe("Address.parse", () => {
  it("splits local part and domain, lower-casing the domain only", () => {
    assert.deepStrictEqual(Address.parse("John.Doe@Example.TEST"), { local: "John.Doe", domain: "example.test" })
    assert.deepStrictEqual(Address.parse("a+tag@sub.example.test"), { local: "a+tag", domain: "sub.example.test" })
  })

  it("accepts the bare postmaster in any case, with an empty domain", () => {
    for (const p of ["postmaster", "Postmaster", "POSTMASTER", "PostMaster"]) {
      assert.deepStrictEqual(Address.parse(p), { local: "postmaster", domain: "" }, p)
    }
    assert.isTrue(Address.isPostmaster(Address.parse("Postmaster@example.test")!))
    assert.isFalse(Address.isPostmaster(Address.parse("postmistress@example.test")!))
  })

  it("accepts address literals, single-label and IDNA (xn--) domains", () => {
    assert.deepStrictEqual(Address.parse("u@[192.0.2.1]"), { local: "u", domain: "[192.0.2.1]" })
    assert.deepStrictEqual(Address.parse("u@[IPv6:2001:DB8::1]"), { local: "u", domain: "[ipv6:2001:db8::1]" })
    assert.deepStrictEqual(Address.parse("u@localhost"), { local: "u", domain: "localhost" })
    assert.deepStrictEqual(Address.parse("u@xn--bcher-kva.example"), { local: "u", domain: "xn--bcher-kva.example" })
  })

  it("refuses what is not local@domain", () => {
    const bad = [
      "",
      "user",
      "postmaster2",
      "@example.test",
      "user@",
      "user@-bad.test",
      "user@bad-.test",
      "user@a..test",
      "user@example.test.",
      "user@.example.test",
      "user@exa mple.test",
      "user@exa_mple.test",
      "user@example.test>",
      `${"l".repeat(65)}@example.test`,
      `user@${"a".repeat(64)}.test`,
      `user@${Array.from({ length: 65 }, () => "abc").join(".")}` // 259 > 255
    ]
    for (const b of bad) assert.isUndefined(Address.parse(b), JSON.stringify(b))
  })

  it("takes the local part up to 64 and labels up to 63 characters", () => {
    assert.isDefined(Address.parse(`${"l".repeat(64)}@example.test`))
    assert.isDefined(Address.parse(`user@${"a".repeat(63)}.test`))
    assert.isDefined(Address.parse(`user@${Array.from({ length: 64 }, () => "abc").join(".")}`)) // 255
  })
})

describe("Address.normalize / toString", () => {
  it("normalises to local@lower-cased-domain, keeping the local part as sent", () => {
    assert.strictEqual(Address.normalize("User@EXAMPLE.Test"), "User@example.test")
    assert.strictEqual(Address.normalize("postmaster"), "postmaster")
    assert.strictEqual(Address.normalize("POSTMASTER"), "postmaster")
    assert.isUndefined(Address.normalize("not an address"))
  })

  it("toString of a parsed address round-trips the normalised form", () => {
    for (const a of ["a@b.test", "Mixed.Case@example.test", "postmaster"]) {
      assert.strictEqual(Address.toString(Address.parse(a)!), a)
    }
  })
})

describe("Address.parse: '@' in the local part", () => {
  it("refuses an unquoted '@' in the local part and keeps a quoted one", () => {
    assert.isUndefined(Address.parse("a@b@c.test"))
    assert.deepStrictEqual(Address.parse('"a@b"@c.test'), { local: '"a@b"', domain: "c.test" })
  })
})
