/**
 * The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a load balancer sends before
 * the SMTP session to say who the client really is. This is the parser alone: it is fed the
 * bytes received so far and says "need more", "invalid" (with why) or the header and how many
 * bytes it took, so it works on a header that arrives in one piece or a byte at a time.
 *
 * Hand-written: the spec is small (a text line, or a 16-byte preamble with addresses and TLVs),
 * and npm has no maintained streaming v2 parser (smtp-server's `useProxy` reads v1 text only;
 * the `proxy-protocol*` packages found are unmaintained, v1-only or not incremental).
 *
 * Strict by design, since a bad header closes the connection: v1 addresses must be valid for
 * their family and ports 0-65535; v2 must be version 2, command LOCAL or PROXY, a stream (TCP or
 * UNIX) or unspecified family, with address blocks of the right size and TLVs that fit exactly.
 * The whole v2 header is bounded by `maxV2Length` (the spec allows 64 KiB; no proxy sends that),
 * a CRC32C TLV, when present, must match. LOCAL (health checks), v1 `UNKNOWN` and v2 `UNSPEC`
 * carry no client: the connection's own peer stays the client.
 */
import { isIPv4, isIPv6 } from "node:net"

export interface Endpoint {
  readonly address: string
  readonly port: number
}

/** The SSL TLV (PP2_TYPE_SSL): what the proxy knows about the client's TLS. */
export interface SslInfo {
  /** The client connected over SSL/TLS (PP2_CLIENT_SSL). */
  readonly ssl: boolean
  /** It presented a certificate on this connection / on this session (PP2_CLIENT_CERT_CONN / _SESS). */
  readonly certConnection: boolean
  readonly certSession: boolean
  /** The proxy verified that certificate (the `verify` field is 0). */
  readonly verified: boolean
  readonly version?: string | undefined
  readonly commonName?: string | undefined
  readonly cipher?: string | undefined
  readonly signatureAlgorithm?: string | undefined
  readonly keyAlgorithm?: string | undefined
}

export interface Tlvs {
  /** PP2_TYPE_AUTHORITY: the host name the client asked for (SNI), UTF-8. */
  readonly authority?: string | undefined
  readonly alpn?: string | undefined
  /** PP2_TYPE_UNIQUE_ID, hex. */
  readonly uniqueId?: string | undefined
  readonly ssl?: SslInfo | undefined
  /** PP2_TYPE_NETNS. */
  readonly netns?: string | undefined
  /** Every other TLV type seen (values not kept). */
  readonly other: ReadonlyArray<number>
}

export type ProxyHeader =
  /** No client address: a health check (v2 LOCAL), v1 `UNKNOWN`, or v2 `UNSPEC`. */
  | { readonly _tag: "Local"; readonly version: 1 | 2; readonly tlvs: Tlvs }
  | {
    readonly _tag: "Proxied"
    readonly version: 1 | 2
    readonly family: "tcp4" | "tcp6"
    readonly source: Endpoint
    readonly destination: Endpoint
    readonly tlvs: Tlvs
  }
  /** A v2 UNIX-socket client: a path, not an address; the connection's peer stays the client. */
  | { readonly _tag: "Unix"; readonly source: string; readonly destination: string; readonly tlvs: Tlvs }

export type ParseResult =
  | { readonly _tag: "NeedMore" }
  | { readonly _tag: "Invalid"; readonly reason: string }
  | { readonly _tag: "Parsed"; readonly header: ProxyHeader; readonly length: number }

/** v1's longest line, CRLF included (spec 2.1). */
export const maxV1Length = 107
/** Our bound on a whole v2 header (16-byte preamble, addresses and TLVs). */
export const maxV2Length = 4096

const v2Signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const v1Prefix = Buffer.from("PROXY ", "latin1")

const needMore: ParseResult = { _tag: "NeedMore" }
const invalid = (reason: string): ParseResult => ({ _tag: "Invalid", reason })
const noTlvs: Tlvs = { other: [] }

/** Whether `bytes` (a prefix of the stream) agrees with `expected` as far as it goes. */
const agrees = (bytes: Uint8Array, expected: Buffer): boolean => {
  const n = Math.min(bytes.length, expected.length)
  for (let i = 0; i < n; i++) if (bytes[i] !== expected[i]) return false
  return true
}

/** Parses the header at the start of `bytes` (everything received so far). */
export const parse = (bytes: Uint8Array): ParseResult => {
  if (bytes.length === 0) return needMore
  if (bytes[0] === v2Signature[0]) {
    if (!agrees(bytes, v2Signature)) return invalid("not a PROXY protocol header")
    return bytes.length < 16 ? needMore : parseV2(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
  }
  if (!agrees(bytes, v1Prefix)) return invalid("not a PROXY protocol header")
  return parseV1(bytes)
}

const decimalPort = /^(0|[1-9]\d{0,4})$/

const parseV1 = (bytes: Uint8Array): ParseResult => {
  const end = Math.min(bytes.length, maxV1Length)
  let lf = -1
  for (let i = 0; i < end; i++) {
    if (bytes[i] === 0x0a) {
      lf = i
      break
    }
  }
  if (lf === -1) return bytes.length >= maxV1Length ? invalid("v1 header longer than 107 bytes") : needMore
  if (lf === 0 || bytes[lf - 1] !== 0x0d) return invalid("v1 header not ended by CRLF")
  const line = Buffer.from(bytes.buffer, bytes.byteOffset, lf - 1).toString("latin1")
  const length = lf + 1
  const parts = line.split(" ")
  // "PROXY UNKNOWN" may carry anything after it (spec 2.1); the receiver ignores it.
  if (parts[1] === "UNKNOWN") return { _tag: "Parsed", header: { _tag: "Local", version: 1, tlvs: noTlvs }, length }
  if (parts.length !== 6) return invalid("v1 header: expected PROXY TCP4|TCP6 <src> <dst> <sport> <dport>")
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string]
  const valid = proto === "TCP4" ? isIPv4 : proto === "TCP6" ? isIPv6 : undefined
  if (valid === undefined) return invalid(`v1 header: unknown protocol ${JSON.stringify(proto.slice(0, 16))}`)
  // No zone index (`fe80::1%eth0`): it names an interface of the proxy, not of this host.
  if (!valid(src) || !valid(dst) || src.includes("%") || dst.includes("%")) return invalid(`v1 header: addresses are not ${proto} addresses`)
  if (!decimalPort.test(sport) || !decimalPort.test(dport) || Number(sport) > 65535 || Number(dport) > 65535) {
    return invalid("v1 header: ports must be 0-65535")
  }
  return {
    _tag: "Parsed",
    length,
    header: {
      _tag: "Proxied",
      version: 1,
      family: proto === "TCP4" ? "tcp4" : "tcp6",
      source: { address: src.toLowerCase(), port: Number(sport) },
      destination: { address: dst.toLowerCase(), port: Number(dport) },
      tlvs: noTlvs
    }
  }
}

/**
 * IPv6 bytes as text; a v4-mapped address (`::ffff:a.b.c.d`) as its IPv4 address, as a dual-stack
 * socket's peer is counted. (smtp-server brings every address to RFC 5952 form afterwards.)
 */
const ipv6Text = (b: Uint8Array): string => {
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return ipv4Text(b.subarray(12))
  const groups: Array<string> = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16))
  return groups.join(":")
}

const ipv4Text = (b: Uint8Array): string => `${b[0]}.${b[1]}.${b[2]}.${b[3]}`

const parseV2 = (buf: Buffer): ParseResult => {
  const verCmd = buf[12]!
  if (verCmd >> 4 !== 2) return invalid(`v2 header: version ${verCmd >> 4}`)
  const command = verCmd & 0x0f
  if (command > 1) return invalid(`v2 header: command ${command}`)
  const family = buf[13]! >> 4
  const transport = buf[13]! & 0x0f
  const bodyLength = buf.readUInt16BE(14)
  const length = 16 + bodyLength
  if (length > maxV2Length) return invalid(`v2 header: ${length} bytes, more than ${maxV2Length}`)
  if (family > 3 || transport > 2) return invalid(`v2 header: family/transport byte 0x${buf[13]!.toString(16)}`)
  if (buf.length < length) return needMore
  const body = buf.subarray(16, length)
  // LOCAL: the addresses (if any) are to be ignored; TLVs may still follow them.
  const addressLength = family === 1 ? 12 : family === 2 ? 36 : family === 3 ? 216 : 0
  if (command === 1 && family !== 0 && transport !== 1) return invalid("v2 header: not a stream (SMTP runs over TCP)")
  if (body.length < addressLength) return invalid(`v2 header: ${body.length} bytes for a ${addressLength}-byte address block`)
  const tlvs = parseTlvs(buf, 16 + addressLength, length)
  if (typeof tlvs === "string") return invalid(`v2 header: ${tlvs}`)
  if (command === 0 || family === 0) return { _tag: "Parsed", length, header: { _tag: "Local", version: 2, tlvs } }
  if (family === 1 || family === 2) {
    const ip = family === 1 ? ipv4Text : ipv6Text
    const n = family === 1 ? 4 : 16
    return {
      _tag: "Parsed",
      length,
      header: {
        _tag: "Proxied",
        version: 2,
        family: family === 1 ? "tcp4" : "tcp6",
        source: { address: ip(body.subarray(0, n)), port: body.readUInt16BE(2 * n) },
        destination: { address: ip(body.subarray(n, 2 * n)), port: body.readUInt16BE(2 * n + 2) },
        tlvs
      }
    }
  }
  const path = (b: Buffer) => {
    const nul = b.indexOf(0)
    return b.subarray(0, nul === -1 ? b.length : nul).toString("utf8")
  }
  return { _tag: "Parsed", length, header: { _tag: "Unix", source: path(body.subarray(0, 108)), destination: path(body.subarray(108, 216)), tlvs } }
}

/** The TLVs that carry text, by type, and where their value goes. */
const textTlvs: Readonly<Record<number, readonly [key: "alpn" | "authority" | "netns", name: string]>> = {
  0x01: ["alpn", "ALPN"],
  0x02: ["authority", "AUTHORITY"],
  0x30: ["netns", "NETNS"]
}
const PP2_TYPE_CRC32C = 0x03
const PP2_TYPE_NOOP = 0x04
const PP2_TYPE_UNIQUE_ID = 0x05
const PP2_TYPE_SSL = 0x20
const PP2_SUBTYPE_SSL: Readonly<Record<number, "version" | "commonName" | "cipher" | "signatureAlgorithm" | "keyAlgorithm">> = {
  0x21: "version",
  0x22: "commonName",
  0x23: "cipher",
  0x24: "signatureAlgorithm",
  0x25: "keyAlgorithm"
}

/** Visits the TLVs in `buf[from, to)`; a string is why they are malformed. */
const eachTlv = (buf: Buffer, from: number, to: number, visit: (type: number, value: Buffer, at: number) => string | undefined): string | undefined => {
  let i = from
  while (i < to) {
    if (to - i < 3) return "truncated TLV"
    const type = buf[i]!
    const len = buf.readUInt16BE(i + 1)
    if (i + 3 + len > to) return `TLV 0x${type.toString(16)} runs past the header`
    const problem = visit(type, buf.subarray(i + 3, i + 3 + len), i)
    if (problem !== undefined) return problem
    i += 3 + len
  }
  return undefined
}

/** Printable text (no controls): these values reach logs. */
const text = (value: Buffer, what: string): string | { problem: string } => {
  const s = value.toString("utf8")
  return /[\u0000-\u001f\u007f\ufffd]/.test(s) ? { problem: `${what} is not printable UTF-8` } : s
}

const parseTlvs = (buf: Buffer, from: number, to: number): Tlvs | string => {
  const out: { -readonly [K in keyof Tlvs]: Tlvs[K] } & { other: Array<number> } = { other: [] }
  let crcAt = -1
  let crc = 0
  const problem = eachTlv(buf, from, to, (type, value, at) => {
    const textual = textTlvs[type]
    if (textual !== undefined) {
      const t = text(value, textual[1])
      if (typeof t !== "string") return t.problem
      out[textual[0]] = t
      return undefined
    }
    switch (type) {
      case PP2_TYPE_CRC32C:
        if (value.length !== 4) return "CRC32C TLV is not 4 bytes"
        crcAt = at + 3
        crc = value.readUInt32BE(0)
        return undefined
      case PP2_TYPE_NOOP:
        return undefined
      case PP2_TYPE_UNIQUE_ID:
        if (value.length > 128) return "UNIQUE_ID longer than 128 bytes"
        out.uniqueId = value.toString("hex")
        return undefined
      case PP2_TYPE_SSL: {
        const ssl = parseSsl(value)
        if (typeof ssl === "string") return ssl
        out.ssl = ssl
        return undefined
      }
      default:
        if (out.other.length < 32) out.other.push(type)
        return undefined
    }
  })
  if (problem !== undefined) return problem
  if (crcAt !== -1) {
    // The checksum covers the whole header with the checksum field itself as zeroes (spec 2.2.5).
    const copy = Buffer.from(buf.subarray(0, to))
    copy.fill(0, crcAt, crcAt + 4)
    if (crc32c(copy) !== crc) return "CRC32C checksum does not match"
  }
  return out
}

const parseSsl = (value: Buffer): SslInfo | string => {
  if (value.length < 5) return "SSL TLV shorter than 5 bytes"
  const client = value[0]!
  const info: { -readonly [K in keyof SslInfo]: SslInfo[K] } = {
    ssl: (client & 0x01) !== 0,
    certConnection: (client & 0x02) !== 0,
    certSession: (client & 0x04) !== 0,
    verified: value.readUInt32BE(1) === 0
  }
  const problem = eachTlv(value, 5, value.length, (type, sub) => {
    const key = PP2_SUBTYPE_SSL[type]
    if (key === undefined) return undefined
    const t = text(sub, `SSL ${key}`)
    if (typeof t !== "string") return t.problem
    info[key] = t
    return undefined
  })
  return problem ?? info
}

const crcTable = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    // Castagnoli polynomial, reflected.
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

/** CRC32C (Castagnoli), as the CRC32C TLV carries it. */
export const crc32c = (bytes: Uint8Array): number => {
  let c = 0xffffffff
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

/** The client address a header gives, or `undefined` when the connection's own peer stays the client. */
export const clientOf = (header: ProxyHeader): Endpoint | undefined => (header._tag === "Proxied" ? header.source : undefined)
