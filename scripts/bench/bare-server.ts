/**
 * The "bare" benchmark target: nodemailer's smtp-server with nothing behind it, DATA drained and
 * discarded, configured like Incoming's listener (authOptional, AUTH and STARTTLS disabled, no
 * reverse lookup, no logger). It is the ceiling of our stack: whatever Incoming adds on top of
 * smtp-server shows as the distance to this target in `npm run bench`.
 *
 * smtp-server 3.21 waits a hard-coded 100 ms before its 220 greeting (early-talker detection in
 * `SMTPConnection.init`), which would cap one-message-per-connection runs at ~10 msgs/s per
 * session and make the ceiling meaningless. There is no option for it, so `connect` is overridden
 * to build the `SMTPConnection` itself, make that connection's `connectionReady` idempotent and
 * call it right after `init()`; the library's own timer still fires 100 ms later and does nothing.
 *
 *   node scripts/bench/bare-server.ts --port 2560     (listens on 127.0.0.1 only)
 *
 * It exits on SIGTERM/SIGINT, and also when its stdin closes, so that it cannot outlive the
 * benchmark script that started it (that script keeps a pipe to its stdin).
 */
import type { Socket } from "node:net"
import { parseArgs } from "node:util"
import { SMTPServer } from "smtp-server"
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js"

type ConnectionOptions = ConstructorParameters<typeof SMTPConnection>[2]

class PromptGreetingServer extends SMTPServer {
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

const { values } = parseArgs({ options: { port: { type: "string" } }, strict: true })
const port = Number(values.port)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write("bare-server: --port PORT is required\n")
  process.exit(2)
}

let accepted = 0
const server = new PromptGreetingServer({
  secure: false,
  authOptional: true,
  disabledCommands: ["AUTH", "STARTTLS"],
  disableReverseLookup: true,
  logger: false,
  banner: "bare",
  size: 0,
  onData(stream, _session, callback) {
    stream.on("data", () => undefined) // drain to nowhere
    stream.on("end", () => {
      accepted++
      callback()
    })
  }
})
server.on("error", (err) => process.stderr.write(`bare-server: ${err.message}\n`))
server.listen(port, "127.0.0.1", () => process.stderr.write(`bare-server listening on 127.0.0.1:${port} pid ${process.pid}\n`))

const stop = (why: string): void => {
  process.stderr.write(`bare-server: ${why}, accepted=${accepted}\n`)
  process.exit(0)
}
process.on("SIGTERM", () => stop("SIGTERM"))
process.on("SIGINT", () => stop("SIGINT"))
process.stdin.on("end", () => stop("stdin closed"))
process.stdin.on("error", () => stop("stdin error"))
process.stdin.resume()
