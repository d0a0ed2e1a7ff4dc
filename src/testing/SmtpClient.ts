/**
 * A scripted SMTP client on a raw socket, for transcripts in tests: send exact bytes (pipelined
 * commands, bare LFs, half a line), read replies one by one, and keep the whole conversation.
 * It never interprets replies beyond splitting them, so tests see what a real client would.
 */
import { connect as netConnect, type Socket } from "node:net"
import { connect as tlsConnect } from "node:tls"
import { Data, Effect, type Scope } from "effect"

export interface Reply {
  readonly code: number
  readonly lines: ReadonlyArray<string>
  /** Text of the last line after the code (e.g. `2.0.0 queued as ...`). */
  readonly text: string
}

export class SmtpClientError extends Data.TaggedError("SmtpClientError")<{ readonly message: string }> {}

export interface SmtpClient {
  /** The reply that arrived first: the greeting. */
  readonly greeting: Reply
  readonly write: (data: string | Uint8Array) => Effect.Effect<void, SmtpClientError>
  /** Sends one command line (CRLF added) and reads its reply. */
  readonly command: (line: string) => Effect.Effect<Reply, SmtpClientError>
  readonly read: Effect.Effect<Reply, SmtpClientError>
  /** Resolves when the server closed the connection. */
  readonly closed: Effect.Effect<void>
  readonly transcript: () => ReadonlyArray<string>
  readonly socket: Socket
}

export interface ConnectOptions {
  readonly port: number
  /** A Unix socket to connect to instead of `host`/`port` (an `lmtp` listener's `path`). */
  readonly path?: string
  readonly host?: string
  /** Implicit TLS (accepts any certificate: tests use self-signed ones). */
  readonly tls?: boolean
  /** Reply timeout in ms (default 10 s). */
  readonly timeoutMs?: number
  /** The address to connect from (any of 127.0.0.0/8 on Linux: a client other than 127.0.0.1). */
  readonly localAddress?: string
  /**
   * Bytes sent as soon as TCP connects, before TLS and the greeting: a PROXY protocol header, as
   * a load balancer sends it. Several chunks are written one by one, each after the last was
   * flushed (a header split across packets).
   */
  readonly preamble?: Uint8Array | ReadonlyArray<Uint8Array>
}

export const connect = (options: ConnectOptions): Effect.Effect<SmtpClient, SmtpClientError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<SmtpClient, SmtpClientError>((resume) => {
      const host = options.host ?? "127.0.0.1"
      const chunks = options.preamble === undefined ? [] : options.preamble instanceof Uint8Array ? [options.preamble] : [...options.preamble]
      const local = options.localAddress === undefined ? {} : { localAddress: options.localAddress }
      let socket: Socket
      if (options.path !== undefined) {
        socket = netConnect({ path: options.path })
      } else if (chunks.length === 0) {
        socket = options.tls === true
          ? tlsConnect({ port: options.port, host, rejectUnauthorized: false, ...local })
          : netConnect({ port: options.port, host, ...local })
      } else if (options.tls === true) {
        // TLS starts after the preamble, which goes first and in clear (in one write: the
        // handshake must not overtake a later chunk).
        const tcp = netConnect({ port: options.port, host, ...local })
        tcp.once("connect", () => tcp.write(Buffer.concat(chunks)))
        socket = tlsConnect({ socket: tcp, rejectUnauthorized: false })
      } else {
        socket = netConnect({ port: options.port, host, ...local })
        socket.setNoDelay(true)
        socket.once("connect", () => {
          const next = (i: number) => {
            if (i < chunks.length) socket.write(chunks[i]!, () => setTimeout(() => next(i + 1), 1))
          }
          next(0)
        })
      }
      const transcript: Array<string> = []
      const replies: Array<Reply> = []
      const waiting: Array<(r: Reply | SmtpClientError) => void> = []
      let buffer = ""
      let pending: Array<string> = []
      let isClosed = false
      const closeWaiters: Array<() => void> = []

      const deliver = (r: Reply | SmtpClientError) => {
        const w = waiting.shift()
        if (w !== undefined) w(r)
        else if (!(r instanceof SmtpClientError)) replies.push(r)
      }
      socket.setEncoding("utf8")
      socket.on("data", (chunk: string) => {
        buffer += chunk
        let i: number
        while ((i = buffer.indexOf("\r\n")) !== -1) {
          const line = buffer.slice(0, i)
          buffer = buffer.slice(i + 2)
          transcript.push(`S: ${line}`)
          pending.push(line)
          if (line.length < 4 || line[3] !== "-") {
            const code = Number(line.slice(0, 3))
            deliver({ code, lines: pending, text: line.slice(4) })
            pending = []
          }
        }
      })
      const onGone = () => {
        if (isClosed) return
        isClosed = true
        transcript.push("-- closed")
        while (waiting.length > 0) deliver(new SmtpClientError({ message: "connection closed" }))
        for (const c of closeWaiters.splice(0)) c()
      }
      socket.on("close", onGone)
      socket.on("error", () => onGone())

      const read: Effect.Effect<Reply, SmtpClientError> = Effect.callback<Reply, SmtpClientError>((resume) => {
        const r = replies.shift()
        if (r !== undefined) return resume(Effect.succeed(r))
        if (isClosed) return resume(Effect.fail(new SmtpClientError({ message: "connection closed" })))
        const cb = (x: Reply | SmtpClientError) => resume(x instanceof SmtpClientError ? Effect.fail(x) : Effect.succeed(x))
        waiting.push(cb)
        return Effect.sync(() => {
          const i = waiting.indexOf(cb)
          if (i >= 0) waiting.splice(i, 1)
        })
      }).pipe(
        Effect.timeoutOrElse({
          duration: options.timeoutMs ?? 10_000,
          orElse: () => Effect.fail(new SmtpClientError({ message: "timed out waiting for a reply" }))
        })
      )
      const write = (data: string | Uint8Array) =>
        Effect.callback<void, SmtpClientError>((resume) => {
          const text = typeof data === "string" ? data : `<${data.length} bytes>`
          transcript.push(`C: ${text.length > 200 ? `${text.slice(0, 200)}... (${text.length} chars)` : text.replace(/\r\n$/, "")}`)
          if (isClosed) return resume(Effect.fail(new SmtpClientError({ message: "connection closed" })))
          socket.write(data, (err) => resume(err ? Effect.fail(new SmtpClientError({ message: err.message })) : Effect.void))
        })

      // The greeting is a reply too: without this bound a server that never greets (a plaintext
      // client on an implicit-TLS port, a stuck handshake) hung `connect` forever, and since
      // acquisition is uninterruptible, no timeout around it could help (fixed).
      const greetingTimer = setTimeout(() => {
        socket.destroy()
        resume(Effect.fail(new SmtpClientError({ message: "timed out waiting for the greeting" })))
      }, options.timeoutMs ?? 10_000)
      const ready = options.tls === true ? "secureConnect" : "connect"
      socket.once(ready, () => {
        // The first reply is the greeting; the client is handed out once it has arrived.
        waiting.push((greeting) => {
          clearTimeout(greetingTimer)
          if (greeting instanceof SmtpClientError) return resume(Effect.fail(greeting))
          resume(Effect.succeed({
            greeting,
            write,
            read,
            command: (line) => Effect.andThen(write(`${line}\r\n`), read),
            closed: Effect.callback<void>((r) => {
              if (isClosed) return r(Effect.void)
              closeWaiters.push(() => r(Effect.void))
            }),
            transcript: () => transcript,
            socket
          }))
        })
      })
      socket.once("error", (e) => {
        clearTimeout(greetingTimer)
        resume(Effect.fail(new SmtpClientError({ message: e.message })))
      })
    }),
    (c) => Effect.sync(() => c.socket.destroy())
  )

export interface SendOptions {
  readonly port: number
  readonly host?: string
  readonly from: string
  readonly to: ReadonlyArray<string>
  /** The message; a plain string gets CRLF line endings and dot-stuffing. */
  readonly data: string
  readonly helo?: string
  readonly localAddress?: string
  /** Parameters for MAIL FROM after the address, such as `MT-PRIORITY=9` or `SIZE=100`. */
  readonly mailParameters?: ReadonlyArray<string>
}

/** One whole transaction; returns the reply to the final dot (or the first refusal). */
export const send = (o: SendOptions): Effect.Effect<Reply, SmtpClientError> =>
  Effect.scoped(Effect.gen(function*() {
    const c = yield* connect({
      port: o.port,
      ...(o.host !== undefined ? { host: o.host } : {}),
      ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {})
    })
    const ehlo = yield* c.command(`EHLO ${o.helo ?? "client.test"}`)
    if (ehlo.code !== 250) return ehlo
    const mail = yield* c.command(`MAIL FROM:<${o.from}>${(o.mailParameters ?? []).map((p) => ` ${p}`).join("")}`)
    if (mail.code !== 250) return mail
    let accepted = 0
    let last: Reply = mail
    for (const rcpt of o.to) {
      last = yield* c.command(`RCPT TO:<${rcpt}>`)
      if (last.code === 250) accepted++
    }
    if (accepted === 0) return last
    const data = yield* c.command("DATA")
    if (data.code !== 354) return data
    yield* c.write(`${dotStuff(o.data)}.\r\n`)
    const reply = yield* c.read
    yield* c.command("QUIT").pipe(Effect.ignore)
    return reply
  }))

export const dotStuff = (text: string): string => {
  const crlf = text.replace(/\r?\n/g, "\r\n")
  const body = crlf.endsWith("\r\n") ? crlf : `${crlf}\r\n`
  return body.replace(/^\./gm, "..")
}
