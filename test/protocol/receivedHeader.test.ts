/**
 * The Received trace header as a value: clause structure, protocol keyword, the single-recipient
 * `for`, and sanitising the client-controlled HELO so it cannot inject header lines.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ReceivedHeader from "../../src/protocol/ReceivedHeader.ts"

const base: ReceivedHeader.TraceInfo = {
  helo: "client.test",
  clientAddress: "192.0.2.7",
  hostname: "mx.test",
  secure: false,
  authenticated: false,
  id: "01ABCDEFGHJKMNPQ",
  recipients: ["user@example.test"],
  date: new Date(Date.UTC(2026, 10, 21, 6, 1, 2))
}

/** A header is well formed when only its first line starts at column 0 and it ends with CRLF. */
const assertOneHeader = (h: string) => {
  assert.isTrue(h.startsWith("Received: "), h)
  assert.isTrue(h.endsWith("\r\n"), h)
  const lines = h.slice(0, -2).split("\r\n")
  for (const l of lines.slice(1)) assert.isTrue(l.startsWith("\t"), JSON.stringify(l))
  // No CR or LF except in CRLF folds.
  assert.notMatch(h, /\r(?!\n)|(?<!\r)\n/)
}

describe("ReceivedHeader.make", () => {
  it("renders the RFC 5321 4.4 clauses", () => {
    const h = ReceivedHeader.make(base)
    assert.strictEqual(
      h,
      "Received: from client.test ([192.0.2.7])\r\n" +
        "\tby mx.test (Incoming) with ESMTP id 01ABCDEFGHJKMNPQ\r\n" +
        "\tfor <user@example.test>;\r\n" +
        "\tSat, 21 Nov 2026 06:01:02 +0000\r\n"
    )
    assertOneHeader(h)
  })

  it("names the protocol: SMTP after HELO, ESMTP/ESMTPS/ESMTPA/ESMTPSA after EHLO (RFC 3848)", () => {
    assert.include(ReceivedHeader.make({ ...base, esmtp: false }), " with SMTP id ")
    assert.include(ReceivedHeader.make({ ...base, secure: true }), " with ESMTPS id ")
    assert.include(ReceivedHeader.make({ ...base, authenticated: true }), " with ESMTPA id ")
    assert.include(ReceivedHeader.make({ ...base, secure: true, authenticated: true }), " with ESMTPSA id ")
  })

  it("lists the recipient only when there is exactly one", () => {
    assert.notInclude(ReceivedHeader.make({ ...base, recipients: ["a@example.test", "b@example.test"] }), "for <")
    assert.notInclude(ReceivedHeader.make({ ...base, recipients: [] }), "for <")
  })

  it("writes an IPv6 client as an IPv6 address literal", () => {
    assert.include(ReceivedHeader.make({ ...base, clientAddress: "2001:db8::1" }), "([IPv6:2001:db8::1])")
  })

  it("adds a verified reverse name, but not the engine's [ip] placeholder", () => {
    assert.include(ReceivedHeader.make({ ...base, clientHostname: "mail.sender.test" }), "(mail.sender.test [192.0.2.7])")
    assert.include(ReceivedHeader.make({ ...base, clientHostname: "[192.0.2.7]" }), "from client.test ([192.0.2.7])")
  })

  it("sanitises a HELO with CR/LF so it cannot inject a header line", () => {
    const h = ReceivedHeader.make({ ...base, helo: "evil.test\r\nX-Injected: yes" })
    assertOneHeader(h)
    assert.notMatch(h, /^X-Injected/m)
    // ":" stays (IPv6 literals need it); on one line it is harmless.
    assert.isTrue(h.startsWith("Received: from evil.test??X-Injected:?yes ([192.0.2.7])\r\n"), h)
  })

  it("sanitises spaces, parentheses and semicolons so the clause structure holds", () => {
    const h = ReceivedHeader.make({ ...base, helo: "a (by mx.test; for <x@y>) b" })
    assertOneHeader(h)
    const from = h.slice(0, h.indexOf("\r\n"))
    assert.strictEqual(from, "Received: from a??by?mx.test??for??x?y???b ([192.0.2.7])")
    assert.strictEqual(h.match(/\bby /g)?.length, 1, "only our own by clause")
    assert.strictEqual(h.match(/;/g)?.length, 1, "only the date separator")
  })

  it("replaces an empty HELO and caps a long one at 255 characters", () => {
    assert.isTrue(ReceivedHeader.make({ ...base, helo: "" }).startsWith("Received: from unknown ("))
    assert.strictEqual(ReceivedHeader.sanitizeHelo("a".repeat(1000)).length, 255)
  })

  it("sanitises a reverse name the same way", () => {
    const h = ReceivedHeader.make({ ...base, clientHostname: "bad name\r\nX: y" })
    assertOneHeader(h)
    assert.include(h, "(bad?name??X:?y [192.0.2.7])")
  })
})

describe("ReceivedHeader.rfc5322Date", () => {
  it("formats UTC dates with zero-padded fields", () => {
    assert.strictEqual(ReceivedHeader.rfc5322Date(new Date(Date.UTC(2027, 0, 3, 4, 5, 6))), "Sun, 03 Jan 2027 04:05:06 +0000")
  })
})
