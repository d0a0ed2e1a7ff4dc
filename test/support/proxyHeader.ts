/**
 * PROXY protocol headers as load balancers send them, built byte by byte from the spec (HAProxy's
 * proxy-protocol.txt, sections 2.1 and 2.2) for the parser and listener tests. Independent of
 * src/protocol/ProxyHeader.ts on purpose: it encodes, the parser decodes.
 */
import { isIPv4 } from "node:net"

export const signature = Buffer.from("0d0a0d0a000d0a515549540a", "hex")

export const v1 = (source: string, destination: string, sport: number, dport: number): Buffer =>
  Buffer.from(`PROXY ${isIPv4(source) ? "TCP4" : "TCP6"} ${source} ${destination} ${sport} ${dport}\r\n`, "latin1")

export const tlv = (type: number, value: Buffer | string): Buffer => {
  const v = typeof value === "string" ? Buffer.from(value, "utf8") : value
  const head = Buffer.alloc(3)
  head[0] = type
  head.writeUInt16BE(v.length, 1)
  return Buffer.concat([head, v])
}

const ipv4 = (a: string) => Buffer.from(a.split(".").map(Number))
const ipv6 = (a: string) => {
  const [head, tail] = a.split("::") as [string, string | undefined]
  const left = head === "" ? [] : head.split(":")
  const right = tail === undefined || tail === "" ? [] : tail.split(":")
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right]
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => out.writeUInt16BE(Number.parseInt(g, 16), 2 * i))
  return out
}
const port = (p: number) => {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(p)
  return b
}

export interface V2 {
  readonly command?: "LOCAL" | "PROXY"
  readonly family?: "tcp4" | "tcp6" | "unix" | "unspec"
  readonly source?: string
  readonly destination?: string
  readonly sport?: number
  readonly dport?: number
  readonly tlvs?: ReadonlyArray<Buffer>
}

export const v2 = (o: V2): Buffer => {
  const family = o.family ?? "tcp4"
  let addresses: Buffer
  let fam: number
  if (family === "tcp4") {
    fam = 0x11
    addresses = Buffer.concat([ipv4(o.source ?? "0.0.0.0"), ipv4(o.destination ?? "0.0.0.0"), port(o.sport ?? 0), port(o.dport ?? 0)])
  } else if (family === "tcp6") {
    fam = 0x21
    addresses = Buffer.concat([ipv6(o.source ?? "::"), ipv6(o.destination ?? "::"), port(o.sport ?? 0), port(o.dport ?? 0)])
  } else if (family === "unix") {
    fam = 0x31
    addresses = Buffer.alloc(216)
    addresses.write(o.source ?? "", 0, "utf8")
    addresses.write(o.destination ?? "", 108, "utf8")
  } else {
    fam = 0x00
    addresses = Buffer.alloc(0)
  }
  const body = Buffer.concat([addresses, ...(o.tlvs ?? [])])
  const head = Buffer.alloc(4)
  head[0] = (o.command ?? "PROXY") === "PROXY" ? 0x21 : 0x20
  head[1] = fam
  head.writeUInt16BE(body.length, 2)
  return Buffer.concat([signature, head, body])
}

/** The SSL TLV: client bits, verify result, sub-TLVs (version 0x21, CN 0x22, cipher 0x23). */
export const ssl = (o: { readonly client: number; readonly verify: number; readonly version?: string; readonly cn?: string; readonly cipher?: string }) => {
  const head = Buffer.alloc(5)
  head[0] = o.client
  head.writeUInt32BE(o.verify, 1)
  return tlv(0x20, Buffer.concat([
    head,
    ...(o.version === undefined ? [] : [tlv(0x21, o.version)]),
    ...(o.cn === undefined ? [] : [tlv(0x22, o.cn)]),
    ...(o.cipher === undefined ? [] : [tlv(0x23, o.cipher)])
  ]))
}

/** CRC32C, bit by bit (slow and obviously right; the parser uses a table). */
export const crc32c = (bytes: Uint8Array): number => {
  let c = 0xffffffff
  for (const b of bytes) {
    c ^= b
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1))
  }
  return (c ^ 0xffffffff) >>> 0
}

/** A v2 header with a correct CRC32C TLV appended. */
export const withCrc = (o: V2): Buffer => {
  const header = v2({ ...o, tlvs: [...(o.tlvs ?? []), tlv(0x03, Buffer.alloc(4))] })
  const sum = crc32c(header)
  header.writeUInt32BE(sum, header.length - 4)
  return header
}
