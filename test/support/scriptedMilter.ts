/**
 * A scripted milter (filter side) on a loopback port, for tests of our client: it records every
 * packet it receives per connection and answers as the test's script says — replies,
 * modification requests, progress, silence, a hang-up or bytes that are not the protocol. Its
 * framing is written independently of src/policy/milter/Codec.ts (a test of our codec must not
 * use it to check itself).
 */
import { createServer, type Server, type Socket } from "node:net"
import { Effect, type Scope } from "effect"

export interface Received {
  readonly command: string
  readonly data: Buffer
}

/** What the filter does on a packet: bytes to write (possibly none), or hang up. */
export type Action = ReadonlyArray<Buffer | { readonly delayMs: number; readonly then: Buffer }> | "close"

export interface Script {
  /** The negotiation reply: actions and steps it asks for, macro lists (stage → names). */
  readonly actions?: number
  readonly steps?: number
  readonly macros?: Readonly<Record<number, string>>
  /** The answer to each packet after the negotiation; default: continue to every command that expects a reply. */
  readonly on?: (p: Received, connection: ReadonlyArray<Received>) => Action | undefined
  /** Turn Nagle off on the filter's side (default on, as libmilter leaves it). */
  readonly noDelay?: boolean
  /** Write every reply one byte at a time, each in its own segment (framing split at every byte). */
  readonly byteByByte?: boolean
}

export interface ScriptedMilter {
  readonly port: number
  readonly address: string
  /** The packets of each connection, in order (negotiation included). */
  readonly connections: ReadonlyArray<ReadonlyArray<Received>>
  /** Whether each connection has been closed by the client. */
  readonly closed: ReadonlyArray<boolean>
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}

/** One packet as a filter writes it. */
export const packet = (command: string, data: Buffer = Buffer.alloc(0)) => Buffer.concat([u32(data.length + 1), Buffer.from(command, "latin1"), data])
const z = (...strings: Array<string>) => Buffer.concat(strings.map((s) => Buffer.from(`${s}\0`)))

export const reply = {
  continue: packet("c"),
  accept: packet("a"),
  reject: packet("r"),
  tempfail: packet("t"),
  discard: packet("d"),
  progress: packet("p"),
  skip: packet("s"),
  code: (text: string) => packet("y", z(text)),
  addHeader: (name: string, value: string) => packet("h", z(name, value)),
  insertHeader: (index: number, name: string, value: string) => packet("i", Buffer.concat([u32(index), z(name, value)])),
  changeHeader: (index: number, name: string, value: string) => packet("m", Buffer.concat([u32(index), z(name, value)])),
  quarantine: (reason: string) => packet("q", z(reason)),
  /** One chunk of a replaced body (a filter sends several for a large one). */
  replaceBody: (chunk: string | Buffer) => packet("b", Buffer.from(chunk)),
  /** `+` (SMFIR_ADDRCPT), or `2` (SMFIR_ADDRCPT_PAR) with ESMTP arguments. */
  addRecipient: (rcpt: string, args?: string) => (args === undefined ? packet("+", z(`<${rcpt}>`)) : packet("2", z(`<${rcpt}>`, args))),
  deleteRecipient: (rcpt: string) => packet("-", z(`<${rcpt}>`)),
  changeFrom: (sender: string, args?: string) => packet("e", args === undefined ? z(`<${sender}>`) : z(`<${sender}>`, args))
}

/** A script answering end of message with `replies` (modifications, then a final reply), and everything else with continue. */
export const atEndOfMessage = (replies: ReadonlyArray<Buffer>) => (p: Received): Action | undefined => (p.command === "E" ? replies : undefined)

/** Every action of protocol version 6, for a filter that asks for them all in the negotiation. */
export const allActions = 0x1ff

/** Commands the MTA sends that get no reply: macros, abort, quit. */
const silent = new Set(["D", "A", "Q", "K"])

/** NUL-separated strings of a packet's data. */
export const strings = (data: Buffer): Array<string> => data.toString("utf8").split("\0").slice(0, -1)

/** The macros sent before `command` on a connection, as an object. */
export const macrosBefore = (connection: ReadonlyArray<Received>, command: string): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const p of connection) {
    if (p.command !== "D" || p.data.toString("latin1", 0, 1) !== command) continue
    const s = strings(p.data.subarray(1))
    for (let i = 0; i + 1 < s.length; i += 2) out[s[i]!] = s[i + 1]!
  }
  return out
}

/** Starts the scripted filter; closed with the scope. */
export const start = (script: Script = {}): Effect.Effect<ScriptedMilter, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ server: Server; state: ScriptedMilter; sockets: Set<Socket> }>((resolve) => {
        const connections: Array<Array<Received>> = []
        const closed: Array<boolean> = []
        const sockets = new Set<Socket>()
        const server = createServer((socket) => {
          sockets.add(socket)
          socket.setNoDelay(script.noDelay === true)
          const index = connections.length
          const received: Array<Received> = []
          connections.push(received)
          closed.push(false)
          let buffer = Buffer.alloc(0)
          // One byte per segment, in order: each waits for the previous one to leave.
          let trickle = Promise.resolve()
          const write = (b: Buffer) => {
            if (script.byteByByte !== true) return void socket.write(b)
            socket.setNoDelay(true)
            for (const byte of b) {
              trickle = trickle.then(() => new Promise<void>((done) => (socket.writable ? socket.write(Buffer.from([byte]), () => setTimeout(done, 1)) : done())))
            }
          }
          socket.on("error", () => {})
          socket.on("close", () => {
            closed[index] = true
            sockets.delete(socket)
          })
          socket.on("data", (chunk) => {
            buffer = Buffer.concat([buffer, chunk])
            while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
              const length = buffer.readUInt32BE(0)
              const p = { command: buffer.toString("latin1", 4, 5), data: buffer.subarray(5, 4 + length) }
              buffer = buffer.subarray(4 + length)
              received.push(p)
              if (p.command === "O") {
                const macros = Object.entries(script.macros ?? {}).map(([stage, names]) => Buffer.concat([u32(Number(stage)), z(names)]))
                write(packet("O", Buffer.concat([u32(6), u32(script.actions ?? 0x31), u32(script.steps ?? 0), ...macros])))
                continue
              }
              const action = script.on?.(p, received) ?? (silent.has(p.command) ? [] : [reply.continue])
              if (action === "close") {
                socket.destroy()
                return
              }
              for (const a of action) {
                if (Buffer.isBuffer(a)) write(a)
                else setTimeout(() => socket.writable && write(a.then), a.delayMs)
              }
            }
          })
        })
        server.listen(0, "127.0.0.1", () => {
          const port = (server.address() as { port: number }).port
          resolve({ server, sockets, state: { port, address: `inet:127.0.0.1:${port}`, connections, closed } })
        })
      })
    ),
    ({ server, sockets }) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy()
          server.close(() => resolve())
        })
      )
  ).pipe(Effect.map(({ state }) => state))
