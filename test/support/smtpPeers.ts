/**
 * SMTP servers (smtp-server) standing in for other domains' MX hosts in outbound tests: bound
 * on loopback addresses of the test's choice (127.0.0.x, all local on Linux) and one shared
 * port, as real MXes share port 25. Each records its connections and what it accepted; local
 * parts steer its answers (`busy…` 451 at RCPT, `gone…` 550 at RCPT, `datafail4…`/`datafail5…`
 * at the final dot, `drop…` drops the connection mid-DATA).
 */
import type { AddressInfo } from "node:net"
import { Effect, type Scope } from "effect"
import { SMTPServer, type SMTPServerOptions } from "smtp-server"

export interface Seen {
  readonly from: string
  readonly to: ReadonlyArray<string>
  readonly body: string
  readonly secure: boolean
  readonly helo: string
  /** The client's address as this server saw it (the sender's `local_address`). */
  readonly remote: string
}

export interface Peer {
  readonly host: string
  readonly port: number
  readonly seen: Array<Seen>
  /** Connections accepted so far. */
  readonly connections: () => number
  /** The most transactions in DATA at the same time. */
  readonly maxConcurrentData: () => number
}

const error = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code })

/**
 * An smtp-server on `host:port` (port 0: any). `dataDelayMs` holds each final reply back, so
 * overlapping transactions can be observed.
 */
export const start = (
  host: string,
  port: number,
  options: Partial<SMTPServerOptions> & { readonly dataDelayMs?: number } = {}
): Effect.Effect<Peer, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ server: SMTPServer; peer: Peer }, Error>((resume) => {
      const seen: Array<Seen> = []
      const busyOnce = new Set<string>()
      let connections = 0
      let inData = 0
      let maxData = 0
      const { dataDelayMs, ...rest } = options
      const server = new SMTPServer({
        authOptional: true,
        logger: false,
        disableReverseLookup: true,
        disabledCommands: options.key === undefined ? ["STARTTLS"] : [],
        onConnect(_session, callback) {
          connections++
          callback()
        },
        onData(stream, session, callback) {
          const to = session.envelope.rcptTo.map((r) => r.address)
          inData++
          maxData = Math.max(maxData, inData)
          const chunks: Array<Buffer> = []
          stream.on("data", (c: Buffer) => {
            chunks.push(c)
            // Drop the connection mid-DATA: nothing is accepted.
            // smtp-server does not hand hooks the socket: its connection set is the way to it.
            if (to.some((r) => r.startsWith("drop"))) {
              stream.removeAllListeners("end")
              inData--
              for (const c of (server as unknown as { connections: Set<{ _socket: { destroy: () => void } }> }).connections) c._socket.destroy()
            }
          })
          stream.on("end", () => {
            const finish = () => {
              inData--
              seen.push({
                from: session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address,
                to,
                body: Buffer.concat(chunks).toString("utf8"),
                secure: session.secure,
                helo: session.hostNameAppearsAs,
                remote: session.remoteAddress
              })
              if (to.some((r) => r.startsWith("datafail4"))) return callback(error(452, "4.3.0 queue full, later"))
              if (to.some((r) => r.startsWith("datafail5"))) return callback(error(554, "5.7.1 content refused"))
              callback(null, "2.0.0 queued as PEER1")
            }
            if (dataDelayMs === undefined) finish()
            else setTimeout(finish, dataDelayMs)
          })
        },
        onRcptTo(address, _session, callback) {
          if (address.address.startsWith("busy") && !busyOnce.has(address.address)) {
            busyOnce.add(address.address)
            return callback(error(451, "4.2.1 mailbox busy"))
          }
          if (address.address.startsWith("gone")) return callback(error(550, "5.1.1 no such user"))
          callback()
        },
        ...rest
      })
      server.on("error", () => undefined)
      server.listen(port, host, () => {
        const bound = (server.server.address() as AddressInfo).port
        resume(Effect.succeed({
          server,
          peer: { host, port: bound, seen, connections: () => connections, maxConcurrentData: () => maxData }
        }))
      })
      server.server.once("error", (e: Error) => resume(Effect.fail(e)))
    }),
    ({ server }) => Effect.callback<void>((resume) => server.close(() => resume(Effect.void)))
  ).pipe(Effect.map(({ peer }) => peer))
