/**
 * What the benchmark's reference servers (bare-server.ts, lean-server.ts) share: nodemailer's
 * `SMTPServer` without its 100 ms pre-greeting delay, configured like Incoming's listener, and
 * the process lifecycle the bench script expects.
 *
 * smtp-server 3.21 waits a hard-coded 100 ms before its 220 greeting (early-talker detection in
 * `SMTPConnection.init`), which would cap one-message-per-connection runs at ~10 msgs/s per
 * session. There is no option for it, so `connect` builds the `SMTPConnection` itself, makes that
 * connection's `connectionReady` idempotent and calls it right after `init()`; the library's own
 * timer still fires 100 ms later and does nothing.
 */
import type { Socket } from "node:net"
import { SMTPServer, type SMTPServerOptions } from "smtp-server"
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js"

type ConnectionOptions = ConstructorParameters<typeof SMTPConnection>[2]

export class PromptGreetingServer extends SMTPServer {
  override connect(socket: Socket, socketOptions?: ConnectionOptions): void {
    // What SMTPServer.connect does, plus the immediate greeting.
    const connection = new SMTPConnection(this, socket, socketOptions ?? undefined)
    this.connections.add(connection)
    // The library's own (underscored, but public in its typings) handlers, wired as it does.
    connection.on("error", (err: Error) => this._onError(err))
    connection.on("connect", (data) => this._onClientConnect(data))
    const ready = connection.connectionReady.bind(connection)
    let greeted = false
    connection.connectionReady = (next) => {
      if (greeted) return
      greeted = true
      ready(next)
    }
    // For a plain socket, init() sets up the listeners synchronously and arms the 100 ms timer.
    connection.init()
    connection.connectionReady()
  }
}

/** Options both reference servers share, as Incoming's listener sets them (authOptional, no AUTH or STARTTLS, no reverse lookup, no logger). */
export const referenceOptions = {
  secure: false,
  authOptional: true,
  disabledCommands: ["AUTH", "STARTTLS"],
  disableReverseLookup: true,
  logger: false,
  size: 0
} satisfies SMTPServerOptions

/**
 * Listens on 127.0.0.1 only, and exits on SIGTERM/SIGINT and when stdin closes — the bench script
 * keeps a pipe to it, so a server cannot outlive it — saying how many messages it accepted.
 */
export const serve = (server: SMTPServer, name: string, port: number, accepted: () => number): void => {
  server.on("error", (err) => process.stderr.write(`${name}: ${err.message}\n`))
  server.listen(port, "127.0.0.1", () => process.stderr.write(`${name} listening on 127.0.0.1:${port} pid ${process.pid}\n`))
  const stop = (why: string): void => {
    process.stderr.write(`${name}: ${why}, accepted=${accepted()}\n`)
    process.exit(0)
  }
  process.on("SIGTERM", () => stop("SIGTERM"))
  process.on("SIGINT", () => stop("SIGINT"))
  process.stdin.on("end", () => stop("stdin closed"))
  process.stdin.on("error", () => stop("stdin error"))
  process.stdin.resume()
}
