/**
 * Incoming's subclass of smtp-server's `SMTPServer`: the few protocol-engine behaviours the
 * library has no option for, added per connection without forking it.
 *
 * - Pre-greeting delay: the library waits a hard-coded 100 ms before its 220 (an early-talker
 *   check). We construct each `SMTPConnection` ourselves in `connect`, turn its
 *   `connectionReady` into a no-op for the library's timer, and start the session after our own
 *   delay (0 by default). With a positive delay, a client that
 *   talks before the greeting gets the library's own "talk too soon" 421 and is disconnected.
 * - Per-command deadline on top of the idle timeout: the idle timer restarts on every byte, so a
 *   client trickling a byte a second would hold a connection forever. Each command must
 *   complete within `commandTimeoutMs` of the previous one (and DATA within `dataTimeoutMs`).
 * - A total connection time limit, command and error budgets (421 4.7.0).
 * - Our enhanced status codes: a reply text that already starts with `x.y.z` is sent without
 *   the library's table-derived code, so every reply carries exactly one.
 * - One shutdown reply: while the server closes, the library answers a command with its own
 *   "421 Server shutting down" (4.4.2 from its table, a timeout's code); we send ours,
 *   `421 4.3.2`, the one the drain sends to idle sessions and the README documents.
 * - The library's other 421s get the code that says why (its table gives every 421 4.4.2, a
 *   timeout's): a command line too long `4.5.2`, an HTTP request, too many unrecognized or
 *   unauthenticated commands and an early talker `4.7.0` (the early talker's had none at all).
 * - MAIL/RCPT through our address parser, and 502/503/538 for commands that are known but not
 *   available, instead of 500 (commands.ts).
 *
 * - PROXY protocol v1/v2 (proxy.ts) in place of the library's v1-only `useProxy`: its
 *   pre-connect step (`_expectsProxyHeader`, `_handleProxy`) is ours, so a header's client
 *   address becomes the session's `remoteAddress` before the library's TLS handshake (implicit
 *   TLS) and session start, with its connection guard still around the socket.
 *
 * These reach into documented-by-source but unexported behaviour of smtp-server 3.21; the
 * tests in test/smtp/engine.test.ts fail if an upgrade changes it.
 */
import { createRequire } from "node:module"
import type { Socket } from "node:net"
import type * as SmtpServerModule from "smtp-server"
import type { SMTPServerOptions } from "smtp-server"
import type * as SmtpConnectionModule from "smtp-server/lib/smtp-connection.js"
import * as ProxyHeader from "../../protocol/ProxyHeader.ts"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import * as Commands from "./commands.ts"
import * as Proxy from "./proxy.ts"

// smtp-server's CommonJS build: its ES build imports nodemailer's, which imports node:http as an
// ES module and so loads undici (~5 MiB resident measured, for nothing; see internal/nodeHttp.ts).
const require = createRequire(import.meta.url)
const { SMTPServer } = require("smtp-server") as typeof SmtpServerModule
const { SMTPConnection } = require("smtp-server/lib/smtp-connection.js") as typeof SmtpConnectionModule

export interface EngineLimits {
  readonly greetingDelayMs: number
  readonly commandTimeoutMs: number
  readonly dataTimeoutMs: number
  readonly maxConnectionTimeMs: number
  readonly maxCommands: number
  readonly maxErrors: number
  /** PROXY protocol: who must send a header, and how long it may take. */
  readonly proxy?: Proxy.ProxySettings | undefined
}

/** What the engine reports that no smtp-server event carries. */
export interface EngineEvents {
  /** A PROXY header was refused (malformed, cut off, too slow) and the connection closed. */
  readonly proxyRefused?: (peer: string, reason: string) => void
}

type SocketOptions = NonNullable<ConstructorParameters<typeof SMTPConnection>[2]> & { id: string }

const enhanced = /^[245]\.\d{1,3}\.\d{1,3} /

/** smtp-server's text for commands arriving while it closes (3.21: `smtp-connection.js`, `smtp-server.js`). */
const libraryShutdown = "Server shutting down"
const shutdownText = `${SmtpReply.shuttingDown.enhanced} ${SmtpReply.shuttingDown.text}`

/**
 * The enhanced code for each 421 the library sends itself (3.21: `smtp-connection.js`), by its
 * text; any other 421 without a code of its own gets 4.4.2 as before.
 */
const library421: ReadonlyArray<readonly [RegExp, string]> = [
  [/^Error: too many unrecognized commands$/, "4.7.0"],
  [/^Error: too many unauthenticated commands$/, "4.7.0"],
  // The command parser's errors ("Command line too long"): a protocol violation by the client.
  [/^Error: /, "4.5.2"],
  [/ You talk too soon$/, "4.7.0"],
  [/^HTTP requests not allowed$/, "4.7.0"],
  [/Too many connected clients/, "4.7.0"],
  [/^Timeout - closing connection$/, "4.4.2"]
]

const with421Code = (text: string): string => {
  if (text === libraryShutdown) return shutdownText
  const known = library421.find(([re]) => re.test(text))
  return known === undefined ? text : `${known[1]} ${text}`
}

/** Per-connection guard state, reachable from the session by the connection's id. */
export interface ConnectionGuard {
  /** Switches the deadline to the DATA budget while a message streams in. */
  readonly enterData: () => void
  readonly leaveData: () => void
  /** Sends a final reply and closes (421). */
  readonly abort: (reply: SmtpReply.SmtpReply) => void
  /** The PROXY header the connection started with, if its peer is a trusted proxy. */
  readonly proxy: ProxyHeader.ProxyHeader | undefined
}

/** PROXY headers read, keyed by the socket options `_handleProxy` hands on to `connect` with them. */
const headers = new WeakMap<object, ProxyHeader.ProxyHeader>()

export class IncomingSmtpServer extends SMTPServer {
  /** Read at each new connection, so a reload applies to connections opened after it. */
  limits: EngineLimits
  readonly guards = new Map<string, ConnectionGuard>()
  readonly rules: Commands.CommandRules
  readonly events: EngineEvents

  constructor(
    options: SMTPServerOptions,
    limits: EngineLimits,
    rules: Commands.CommandRules = { unavailable: Commands.unimplemented },
    events: EngineEvents = {}
  ) {
    super(options)
    this.limits = limits
    this.rules = rules
    this.events = events
  }

  override _expectsProxyHeader(socket: Socket): boolean {
    return Proxy.expected(this.limits.proxy, socket.remoteAddress)
  }

  override _handleProxy(socket: Socket, callback: (err: Error | null, socketOptions?: SocketOptions) => void): void {
    const id = Proxy.connectionId()
    const settings = this.limits.proxy
    if (settings === undefined || !Proxy.expected(settings, socket.remoteAddress)) {
      // A Unix-socket peer has no address: it is on this host, as loopback is.
      const options: SocketOptions = socket.remoteAddress === undefined ? { id, remoteAddress: "127.0.0.1" } : { id }
      setImmediate(() => callback(null, options))
      return
    }
    const peer = socket.remoteAddress ?? "unknown"
    Proxy.read(socket, settings.timeoutMs, (result) => {
      if (result._tag === "Refused") {
        this.events.proxyRefused?.(peer, result.reason)
        return callback(new Error(`PROXY header refused: ${result.reason}`))
      }
      const client = ProxyHeader.clientOf(result.header)
      const options: SocketOptions = client === undefined ? { id } : { id, remoteAddress: client.address, remotePort: client.port }
      headers.set(options, result.header)
      callback(null, options)
    })
  }

  override connect(socket: Socket, socketOptions?: ConstructorParameters<typeof SMTPConnection>[2]): void {
    const connection = new SMTPConnection(this, socket, socketOptions ?? undefined)
    const limits = this.limits
    const proxy = socketOptions == null ? undefined : headers.get(socketOptions)
    this.connections.add(connection)
    connection.on("error", (err: Error) => this._onError(err))
    connection.on("connect", (data) => this._onClientConnect(data))
    Commands.install(connection)

    // Only our own timer starts the session. The library's 100 ms timer (set in `init`) calls
    // `connectionReady` too; it must not win, or a `greetingDelayMs` above 100 would be cut to
    // 100 ms (fixed: the earlier first-caller-wins guard let the library's timer start it).
    const ready = connection.connectionReady.bind(connection)
    let started = false
    const start = () => {
      if (started) return
      started = true
      ready()
    }
    connection.connectionReady = () => undefined

    const send = connection.send.bind(connection)
    let errors = 0
    let closed = false
    connection.send = (code, data, context) => {
      if (closed && code !== 421) return
      if (code === 421 && typeof data === "string" && !enhanced.test(data)) data = with421Code(data)
      const text = typeof data === "string" ? data : undefined
      send(code, data, text !== undefined && enhanced.test(text) ? false : context)
      if (code === 421) {
        closed = true
        return
      }
      if (code >= 400 && ++errors > limits.maxErrors) {
        connection.send(SmtpReply.tooManyErrors.code, `${SmtpReply.tooManyErrors.enhanced} ${SmtpReply.tooManyErrors.text}`)
      }
    }

    const abort = (reply: SmtpReply.SmtpReply) => connection.send(reply.code, `${reply.enhanced} ${reply.text}`)

    // One deadline timer per connection, re-armed per command; `unref` so it never holds the process.
    // Re-arming with the same duration refreshes the timer in place instead of allocating a new one.
    let deadline: NodeJS.Timeout | undefined
    let armedMs = 0
    const arm = (ms: number) => {
      if (closed || ms <= 0) {
        if (deadline !== undefined) clearTimeout(deadline)
        deadline = undefined
        return
      }
      if (deadline !== undefined && armedMs === ms) {
        deadline.refresh()
        return
      }
      if (deadline !== undefined) clearTimeout(deadline)
      armedMs = ms
      deadline = setTimeout(() => abort(SmtpReply.commandTimeout), ms)
      deadline.unref()
    }
    const total = limits.maxConnectionTimeMs > 0
      ? setTimeout(() => abort(SmtpReply.connectionTimeLimit), limits.maxConnectionTimeMs)
      : undefined
    total?.unref()

    let commands = 0
    const onCommand = connection._onCommand.bind(connection)
    connection._onCommand = (command, callback) => {
      if (++commands > limits.maxCommands) {
        abort(SmtpReply.tooManyCommands)
        callback?.()
        return
      }
      arm(limits.commandTimeoutMs)
      if (Commands.isDispatched(connection)) {
        const unavailable = this.rules.unavailable(Commands.commandName(command), {
          secure: connection.secure,
          greeted: Boolean(connection.hostNameAppearsAs)
        })
        if (unavailable !== undefined) {
          connection.send(unavailable.code, `${unavailable.enhanced} ${unavailable.text}`)
          setImmediate(() => callback?.())
          return
        }
      }
      onCommand(command, callback)
    }

    // Extra EHLO keywords: the engine builds its list and sends it in one synchronous call, so the
    // next 250 with a list after EHLO starts is that reply (an error reply is a string: left alone).
    const extensions = this.rules.ehloExtensions
    if (extensions !== undefined) {
      const ehlo = connection.handler_EHLO.bind(connection)
      connection.handler_EHLO = (command, callback) => {
        const extra = extensions({ remoteAddress: connection.remoteAddress, secure: connection.secure })
        if (extra.length === 0) return ehlo(command, callback)
        const sendNow = connection.send
        connection.send = (code, data, context) => {
          connection.send = sendNow
          sendNow.call(connection, code, code === 250 && Array.isArray(data) ? [...data, ...extra] : data, context)
        }
        try {
          ehlo(command, callback)
        } finally {
          connection.send = sendNow
        }
      }
    }

    const id = connection.id
    this.guards.set(id, {
      enterData: () => arm(limits.dataTimeoutMs),
      leaveData: () => arm(limits.commandTimeoutMs),
      abort,
      proxy
    })
    // Cleanup hangs off the connection's own close handler, not off `socket`'s 'close': STARTTLS
    // calls `removeAllListeners()` on the plain socket, so a listener there never ran for a
    // STARTTLS session, which kept its timers and guard until `maxConnectionTimeMs` (fixed).
    // `_onClose` runs for the plain and the TLS socket alike; the socket listener stays as a
    // fallback for the other paths, and the cleanup is idempotent.
    const release = () => {
      if (deadline !== undefined) clearTimeout(deadline)
      if (total !== undefined) clearTimeout(total)
      this.guards.delete(id)
    }
    const onClose = connection._onClose.bind(connection)
    connection._onClose = () => {
      release()
      onClose()
    }
    socket.once("close", release)

    connection.init()
    arm(limits.commandTimeoutMs)
    if (limits.greetingDelayMs <= 0) {
      start()
    } else {
      const t = setTimeout(start, limits.greetingDelayMs)
      t.unref()
    }
  }
}
