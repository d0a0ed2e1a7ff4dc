/**
 * Reading a PROXY protocol header (v1 or v2, protocol/ProxyHeader.ts) off a freshly accepted
 * socket, before smtp-server sees the connection. The engine (engine.ts) calls this from
 * smtp-server's own pre-connect step (`_handleProxy`), so the library's guard on sockets that
 * have not reached a session yet (its `maxClients` count, close on drain) still covers them, and
 * an implicit-TLS listener starts its handshake on the bytes after the header.
 *
 * Only peers in `trusted` must send one (and only they may); a header that is malformed, cut
 * off by the peer, or not complete within `timeoutMs` of the accept closes the connection with
 * no reply, as the spec asks: nothing an SMTP client could read has been said yet. The bytes
 * after the header are pushed back onto the socket for the session.
 */
import { randomBytes } from "node:crypto"
import type { Socket } from "node:net"
import { inNetworks, type Network } from "../../policy/Relay.ts"
import * as ProxyHeader from "../../protocol/ProxyHeader.ts"

export interface ProxySettings {
  /** Peers that must send a header: the load balancers. */
  readonly trusted: ReadonlyArray<Network>
  /** From the accept to the end of the header. */
  readonly timeoutMs: number
}

export type ReadResult =
  | { readonly _tag: "Header"; readonly header: ProxyHeader.ProxyHeader }
  | { readonly _tag: "Refused"; readonly reason: string }

/** Whether the connection from `peer` must start with a header. */
export const expected = (settings: ProxySettings | undefined, peer: string | undefined): boolean =>
  settings !== undefined && peer !== undefined && inNetworks(settings.trusted, peer)

// Random bytes for connection ids, drawn from a pool refilled rarely: `randomBytes(10)` per
// connection was ~13 µs of the main thread (measured, one message per connection).
let pool = randomBytes(4096)
let offset = 0
const digits = "0123456789abcdefghijklmnopqrstuv"

/** A connection id as smtp-server makes them (16 base-32 characters from 80 random bits). */
export const connectionId = (): string => {
  if (offset + 10 > pool.length) {
    pool = randomBytes(4096)
    offset = 0
  }
  // 80 bits as 16 digits of 5 bits each, most significant first.
  let id = ""
  let bits = 0
  let acc = 0
  for (let i = offset; i < offset + 10; i++) {
    acc = (acc << 8) | pool[i]!
    bits += 8
    while (bits >= 5) {
      bits -= 5
      id += digits[(acc >> bits) & 31]
    }
    acc &= (1 << bits) - 1
  }
  offset += 10
  return id
}

/** Reads the header; `done` is called once. On refusal the socket is already being destroyed. */
export const read = (socket: Socket, timeoutMs: number, done: (result: ReadResult) => void): void => {
  let received: Buffer = Buffer.alloc(0)
  let finished = false
  const cleanup = () => {
    finished = true
    clearTimeout(timer)
    socket.off("readable", onReadable)
    socket.off("error", onGone)
    socket.off("end", onGone)
    socket.off("close", onGone)
  }
  const refuse = (reason: string) => {
    if (finished) return
    cleanup()
    // Late errors (a reset while closing) must not reach Node as unhandled.
    socket.on("error", () => undefined)
    socket.destroy()
    done({ _tag: "Refused", reason })
  }
  const onGone = () => refuse(received.length === 0 ? "closed before a header" : "closed in the middle of the header")
  const onReadable = () => {
    let chunk: Buffer | null
    while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk])
      const result = ProxyHeader.parse(received)
      if (result._tag === "NeedMore") continue
      if (result._tag === "Invalid") return refuse(result.reason)
      cleanup()
      if (received.length > result.length) socket.unshift(received.subarray(result.length))
      return done({ _tag: "Header", header: result.header })
    }
  }
  const timer = setTimeout(() => refuse(`no complete header within ${timeoutMs} ms`), timeoutMs)
  timer.unref()
  socket.on("readable", onReadable)
  socket.on("error", onGone)
  socket.on("end", onGone)
  socket.on("close", onGone)
}

/** A one-line description of a header for logs (addresses, authority, TLS). */
export const describe = (header: ProxyHeader.ProxyHeader): string => {
  const tls = header.tlvs.ssl === undefined
    ? ""
    : ` ssl=${header.tlvs.ssl.ssl}${header.tlvs.ssl.version === undefined ? "" : ` ${header.tlvs.ssl.version}`}`
  const authority = header.tlvs.authority === undefined ? "" : ` authority=${header.tlvs.authority}`
  switch (header._tag) {
    case "Local":
      return `v${header.version} LOCAL${authority}${tls}`
    case "Unix":
      return `v2 UNIX ${header.source}${authority}${tls}`
    case "Proxied":
      return `v${header.version} ${header.source.address}:${header.source.port} -> ${header.destination.address}:${header.destination.port}${authority}${tls}`
  }
}
