/**
 * The PROXY protocol parser against the spec (HAProxy proxy-protocol.txt): v1 lines, v2 binary
 * headers for each family and command, the TLVs (AUTHORITY, SSL with sub-TLVs, CRC32C), what is
 * refused and why, every header fed one byte at a time, and a bounded fuzz run (mutated and
 * random inputs: the parser never throws, never takes more bytes than it was given, and a prefix
 * of a valid header always asks for more).
 */
import { assert, describe, it } from "@effect/vitest"
import * as ProxyHeader from "../../src/protocol/ProxyHeader.ts"
import * as P from "../support/proxyHeader.ts"

const parsed = (bytes: Uint8Array) => {
  const r = ProxyHeader.parse(bytes)
  if (r._tag !== "Parsed") throw new Error(`expected a header, got ${JSON.stringify(r)}`)
  return r
}
const invalid = (bytes: Uint8Array): string => {
  const r = ProxyHeader.parse(bytes)
  if (r._tag !== "Invalid") throw new Error(`expected Invalid, got ${JSON.stringify(r)}`)
  return r.reason
}

/** Every prefix of a header asks for more; the whole header parses the same as in one piece. */
const byteByByte = (bytes: Buffer) => {
  for (let i = 0; i < bytes.length; i++) {
    const r = ProxyHeader.parse(bytes.subarray(0, i))
    assert.strictEqual(r._tag, "NeedMore", `prefix of ${i} bytes`)
  }
  return parsed(bytes)
}

describe("PROXY v1", () => {
  it("TCP4 and TCP6: client and destination, the bytes after the line are left alone", () => {
    const line = P.v1("192.0.2.7", "198.51.100.1", 40000, 25)
    const r = parsed(Buffer.concat([line, Buffer.from("EHLO x\r\n")]))
    assert.strictEqual(r.length, line.length)
    assert.deepStrictEqual(r.header, {
      _tag: "Proxied",
      version: 1,
      family: "tcp4",
      source: { address: "192.0.2.7", port: 40000 },
      destination: { address: "198.51.100.1", port: 25 },
      tlvs: { other: [] }
    })
    const six = parsed(P.v1("2001:db8::7", "2001:db8::1", 1, 65535)).header
    assert.strictEqual(six._tag === "Proxied" && six.family, "tcp6")
    assert.deepStrictEqual(six._tag === "Proxied" && six.source, { address: "2001:db8::7", port: 1 })
  })

  it("UNKNOWN keeps the real peer (with or without addresses after it)", () => {
    assert.strictEqual(parsed(Buffer.from("PROXY UNKNOWN\r\n")).header._tag, "Local")
    assert.strictEqual(parsed(Buffer.from("PROXY UNKNOWN ffff:: ffff:: 1 2\r\n")).header._tag, "Local")
  })

  it("the longest legal line (107 bytes) parses; one byte more without a LF is refused", () => {
    const longest = P.v1("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 65535)
    assert.strictEqual(longest.length, 104)
    assert.strictEqual(parsed(longest).length, 104)
    assert.match(invalid(Buffer.from(`PROXY UNKNOWN ${"x".repeat(100)}`)), /longer than 107/)
  })

  const refused: ReadonlyArray<readonly [string, RegExp]> = [
    ["EHLO client.test\r\n", /not a PROXY protocol header/],
    ["proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", /not a PROXY/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", /CRLF/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", /expected PROXY/],
    ["PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", /expected PROXY/],
    ["PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", /unknown protocol/],
    ["PROXY TCP4 ::1 5.6.7.8 1 2\r\n", /not TCP4 addresses/],
    ["PROXY TCP6 1.2.3.4 ::1 1 2\r\n", /not TCP6 addresses/],
    ["PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", /not TCP6 addresses/],
    ["PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", /addresses/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /ports/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", /ports/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", /ports/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", /expected PROXY/]
  ]
  for (const [line, why] of refused) {
    it(`refuses ${JSON.stringify(line)}`, () => assert.match(invalid(Buffer.from(line, "latin1")), why))
  }

  it("a v1 header a byte at a time", () => {
    assert.strictEqual(byteByByte(P.v1("10.1.2.3", "10.0.0.1", 5, 25)).header._tag, "Proxied")
  })
})

describe("PROXY v2", () => {
  it("TCP4 and TCP6 (v4-mapped as IPv4), ports big-endian", () => {
    const four = parsed(P.v2({ source: "203.0.113.9", destination: "10.0.0.1", sport: 0xabcd, dport: 25 })).header
    assert.deepStrictEqual(four._tag === "Proxied" && [four.version, four.family, four.source, four.destination], [
      2,
      "tcp4",
      { address: "203.0.113.9", port: 0xabcd },
      { address: "10.0.0.1", port: 25 }
    ])
    const six = parsed(P.v2({ family: "tcp6", source: "2001:db8:0:0:0:0:0:9", destination: "::1", sport: 1, dport: 2 })).header
    assert.deepStrictEqual(six._tag === "Proxied" && six.source, { address: "2001:db8:0:0:0:0:0:9", port: 1 })
    const mapped = parsed(P.v2({ family: "tcp6", source: "::ffff:c000:207", destination: "::1" })).header
    assert.deepStrictEqual(mapped._tag === "Proxied" && mapped.source.address, "192.0.2.7")
  })

  it("LOCAL (health checks) and UNSPEC carry no client, whatever addresses follow", () => {
    assert.deepStrictEqual(parsed(P.v2({ command: "LOCAL", family: "unspec" })).header, { _tag: "Local", version: 2, tlvs: { other: [] } })
    assert.strictEqual(parsed(P.v2({ command: "LOCAL", source: "1.2.3.4" })).header._tag, "Local")
    assert.strictEqual(parsed(P.v2({ command: "PROXY", family: "unspec" })).header._tag, "Local")
  })

  it("UNIX: the socket paths", () => {
    const r = parsed(P.v2({ family: "unix", source: "/run/haproxy/client.sock", destination: "/run/smtp.sock" }))
    assert.strictEqual(r.length, 16 + 216)
    assert.deepStrictEqual(r.header._tag === "Unix" && [r.header.source, r.header.destination], ["/run/haproxy/client.sock", "/run/smtp.sock"])
  })

  it("TLVs: AUTHORITY, ALPN, UNIQUE_ID, NOOP, SSL with its sub-TLVs, unknown types listed", () => {
    const header = P.v2({
      source: "192.0.2.1",
      destination: "192.0.2.2",
      tlvs: [
        P.tlv(0x02, "mx.example.test"),
        P.tlv(0x01, "smtp"),
        P.tlv(0x05, Buffer.from([0xde, 0xad])),
        P.tlv(0x04, Buffer.alloc(7)),
        P.ssl({ client: 0x07, verify: 0, version: "TLSv1.3", cn: "client.example", cipher: "TLS_AES_128_GCM_SHA256" }),
        P.tlv(0xe0, "custom")
      ]
    })
    const tlvs = byteByByte(header).header.tlvs
    assert.deepStrictEqual(tlvs, {
      authority: "mx.example.test",
      alpn: "smtp",
      uniqueId: "dead",
      ssl: {
        ssl: true,
        certConnection: true,
        certSession: true,
        verified: true,
        version: "TLSv1.3",
        commonName: "client.example",
        cipher: "TLS_AES_128_GCM_SHA256"
      },
      other: [0xe0]
    })
    const unverified = parsed(P.v2({ tlvs: [P.ssl({ client: 0x01, verify: 1 })] })).header.tlvs.ssl
    assert.deepStrictEqual(unverified, { ssl: true, certConnection: false, certSession: false, verified: false })
  })

  it("CRC32C: the check value of the spec's polynomial, a matching TLV passes, a wrong one is refused", () => {
    assert.strictEqual(ProxyHeader.crc32c(Buffer.from("123456789")), 0xe3069283)
    assert.strictEqual(P.crc32c(Buffer.from("123456789")), 0xe3069283)
    const good = P.withCrc({ source: "192.0.2.1", destination: "192.0.2.2", tlvs: [P.tlv(0x02, "a.test")] })
    assert.strictEqual(parsed(good).header._tag, "Proxied")
    const bad = Buffer.from(good)
    bad[17] = bad[17]! ^ 1
    assert.match(invalid(bad), /CRC32C/)
  })

  const refused: ReadonlyArray<readonly [string, () => Buffer, RegExp]> = [
    ["version 1 in the binary form", () => patch(P.v2({}), 12, 0x11), /version 1/],
    ["command 2", () => patch(P.v2({}), 12, 0x22), /command 2/],
    ["family 4", () => patch(P.v2({}), 13, 0x41), /family/],
    ["transport 3", () => patch(P.v2({}), 13, 0x13), /family/],
    ["a datagram client", () => patch(P.v2({}), 13, 0x12), /not a stream/],
    ["TCP4 with a 6-byte address block", () => withLength(P.v2({ family: "unspec" }), 6, 0x11), /address block/],
    ["a truncated TLV header", () => P.v2({ tlvs: [Buffer.from([0x02, 0x00])] }), /truncated TLV/],
    ["a TLV longer than the header", () => P.v2({ tlvs: [Buffer.from([0x02, 0x00, 0x09, 0x41])] }), /runs past/],
    ["an AUTHORITY with a control character", () => P.v2({ tlvs: [P.tlv(0x02, "a\r\nb")] }), /AUTHORITY is not printable/],
    ["an AUTHORITY that is not UTF-8", () => P.v2({ tlvs: [P.tlv(0x02, Buffer.from([0xff, 0xfe]))] }), /AUTHORITY is not printable/],
    ["an SSL TLV of 4 bytes", () => P.v2({ tlvs: [P.tlv(0x20, Buffer.alloc(4))] }), /SSL TLV shorter/],
    ["an SSL sub-TLV past its end", () => P.v2({ tlvs: [P.tlv(0x20, Buffer.concat([Buffer.alloc(5), Buffer.from([0x21, 0, 9])]))] }), /runs past/],
    ["a CRC32C TLV of 3 bytes", () => P.v2({ tlvs: [P.tlv(0x03, Buffer.alloc(3))] }), /CRC32C TLV is not 4 bytes/],
    ["a header over the 4096-byte bound", () => withLength(P.v2({}), 4081, 0x11), /more than 4096/],
    ["a signature that goes wrong at byte 5", () => patch(P.v2({}), 5, 0x0a), /not a PROXY/]
  ]
  for (const [name, make, why] of refused) {
    it(`refuses ${name}`, () => assert.match(invalid(make()), why))
  }

  it("a header over the bound is refused from its first 16 bytes, before the rest arrives", () => {
    assert.match(invalid(withLength(P.v2({}), 60000, 0x11).subarray(0, 16)), /more than 4096/)
  })
})

const patch = (b: Buffer, at: number, value: number) => {
  const c = Buffer.from(b)
  c[at] = value
  return c
}
/** A header whose length field says `length` (body zero-filled to match) and family byte `fam`. */
const withLength = (b: Buffer, length: number, fam: number) => {
  const c = Buffer.concat([b.subarray(0, 16), Buffer.alloc(length)])
  c[13] = fam
  c.writeUInt16BE(length, 14)
  return c
}

describe("fuzz (bounded)", () => {
  /** A small deterministic PRNG, so a failure reproduces. */
  const prng = (seed: number) => () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed / 0x7fffffff
  }

  const seeds: ReadonlyArray<Buffer> = [
    P.v1("192.0.2.7", "198.51.100.1", 40000, 25),
    P.v1("2001:db8::7", "2001:db8::1", 1, 65535),
    P.v2({ source: "203.0.113.9", destination: "10.0.0.1", sport: 1, dport: 25, tlvs: [P.tlv(0x02, "mx.test"), P.ssl({ client: 1, verify: 0, version: "TLSv1.3" })] }),
    P.v2({ family: "tcp6", source: "2001:db8::9", destination: "::1" }),
    P.v2({ family: "unix", source: "/a", destination: "/b" }),
    P.withCrc({ command: "LOCAL", family: "unspec" })
  ]

  const check = (input: Buffer) => {
    let r: ProxyHeader.ParseResult
    try {
      r = ProxyHeader.parse(input)
    } catch (e) {
      throw new Error(`parse threw on ${input.toString("hex")}: ${String(e)}`)
    }
    if (r._tag === "Parsed") {
      assert.isAtMost(r.length, input.length, input.toString("hex"))
      assert.isAtMost(r.length, ProxyHeader.maxV2Length)
      const client = ProxyHeader.clientOf(r.header)
      // A client address reaches logs and Received: it must be an IP address.
      if (client !== undefined) assert.match(client.address, /^[0-9a-f.:]+$/)
    }
    return r
  }

  it("5,000 mutated headers: no throw, no overrun, every client an IP address", () => {
    const random = prng(14)
    for (let n = 0; n < 5_000; n++) {
      const seed = seeds[n % seeds.length]!
      const input = Buffer.from(seed)
      const flips = 1 + Math.floor(random() * 4)
      for (let k = 0; k < flips; k++) input[Math.floor(random() * input.length)] = Math.floor(random() * 256)
      const cut = random() < 0.3 ? input.subarray(0, Math.floor(random() * input.length)) : input
      check(cut)
    }
  })

  it("2,000 random byte strings, some behind a valid signature: no throw, no overrun", () => {
    const random = prng(2033)
    for (let n = 0; n < 2_000; n++) {
      const body = Buffer.from(Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)))
      check(n % 2 === 0 ? Buffer.concat([P.signature, body]) : Buffer.concat([Buffer.from("PROXY "), body]))
    }
  })

  it("every prefix of every seed asks for more", () => {
    for (const seed of seeds) byteByByte(seed)
  })
})
