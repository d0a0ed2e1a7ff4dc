/**
 * A minimal client for the SMTP family of protocols on one socket (TCP or Unix): send command
 * lines, stream DATA with backpressure, and read replies (multi-line replies joined). It knows
 * nothing of the protocol's states; the LMTP adapter drives it. Every read and every write has a
 * deadline, and the socket is destroyed when the scope closes, whatever state it is in.
 */
import { connect as netConnect, type Socket } from "node:net"
import { Data, Effect, type Scope } from "effect"

export interface Reply {
  readonly code: number
  /** The reply lines, codes included. */
  readonly lines: ReadonlyArray<string>
}

/** The reply as one line of text (multi-line replies joined with a space), for outcomes and logs. */
export const format = (reply: Reply): string =>
  reply.lines.map((l, i) => (i === 0 ? l : l.slice(4))).join(" ")

export class ReplyClientError extends Data.TaggedError("ReplyClientError")<{
  readonly reason: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return this.reason
  }
}

export type Target =
  | { readonly path: string }
  | { readonly host: string; readonly port: number }

export const describeTarget = (target: Target): string =>
  "path" in target ? `unix:${target.path}` : `${target.host}:${target.port}`

export interface ReplyClient {
  readonly read: (timeoutMs: number) => Effect.Effect<Reply, ReplyClientError>
  readonly command: (line: string, timeoutMs: number) => Effect.Effect<Reply, ReplyClientError>
  /** Writes every chunk, waiting for the socket to drain when its buffer is full. */
  readonly send: (source: AsyncIterable<Buffer>, timeoutMs: number) => Effect.Effect<void, ReplyClientError>
}

/** A reply line longer than this (without a line break) is a broken peer, not a reply. */
const maxLine = 64 * 1024

export const connect = (target: Target, timeoutMs: number): Effect.Effect<ReplyClient, ReplyClientError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Socket, ReplyClientError>((resume) => {
      const socket = "path" in target ? netConnect({ path: target.path }) : netConnect({ host: target.host, port: target.port })
      const timer = setTimeout(() => {
        socket.destroy()
        resume(Effect.fail(new ReplyClientError({ reason: `connecting to ${describeTarget(target)} timed out after ${timeoutMs} ms` })))
      }, timeoutMs)
      socket.once("connect", () => {
        clearTimeout(timer)
        resume(Effect.succeed(socket))
      })
      socket.once("error", (cause) => {
        clearTimeout(timer)
        resume(Effect.fail(new ReplyClientError({ reason: `cannot connect to ${describeTarget(target)}: ${cause.message}`, cause })))
      })
      return Effect.sync(() => {
        clearTimeout(timer)
        socket.destroy()
      })
    }),
    (socket) => Effect.sync(() => socket.destroy())
  ).pipe(Effect.map((socket) => make(socket)))

const make = (socket: Socket): ReplyClient => {
  const replies: Array<Reply> = []
  const waiting: Array<() => void> = []
  let buffer = ""
  let pending: Array<string> = []
  let failure: ReplyClientError | undefined

  const wake = () => {
    for (const w of waiting.splice(0)) w()
  }
  socket.setEncoding("utf8")
  socket.on("data", (chunk: string) => {
    buffer += chunk
    let i: number
    while ((i = buffer.indexOf("\n")) !== -1) {
      const line = buffer.slice(0, i).replace(/\r$/, "")
      buffer = buffer.slice(i + 1)
      pending.push(line)
      if (line.length < 4 || line[3] !== "-") {
        const code = Number(line.slice(0, 3))
        replies.push({ code: Number.isInteger(code) ? code : 0, lines: pending })
        pending = []
      }
    }
    if (buffer.length > maxLine) {
      failure = new ReplyClientError({ reason: "reply line too long" })
      socket.destroy()
    }
    wake()
  })
  socket.on("error", (cause) => {
    failure ??= new ReplyClientError({ reason: `connection failed: ${cause.message}`, cause })
    wake()
  })
  socket.on("close", () => {
    failure ??= new ReplyClientError({ reason: "connection closed by the server" })
    wake()
  })

  const read = (timeoutMs: number): Effect.Effect<Reply, ReplyClientError> =>
    Effect.callback<Reply, ReplyClientError>((resume) => {
      const attempt = () => {
        const r = replies.shift()
        if (r !== undefined) return resume(Effect.succeed(r))
        if (failure !== undefined) return resume(Effect.fail(failure))
        waiting.push(attempt)
      }
      attempt()
      return Effect.sync(() => {
        const i = waiting.indexOf(attempt)
        if (i >= 0) waiting.splice(i, 1)
      })
    }).pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(new ReplyClientError({ reason: `no reply within ${timeoutMs} ms` }))
      })
    )

  const write = (data: string | Buffer) =>
    Effect.callback<void, ReplyClientError>((resume) => {
      if (failure !== undefined) return resume(Effect.fail(failure))
      socket.write(data, (err) =>
        resume(err ? Effect.fail(new ReplyClientError({ reason: `write failed: ${err.message}`, cause: err })) : Effect.void))
    })

  const send = (source: AsyncIterable<Buffer>, timeoutMs: number) =>
    Effect.tryPromise({
      try: async (signal) => {
        for await (const chunk of source) {
          if (signal.aborted) return
          if (failure !== undefined) throw failure
          if (!socket.write(chunk)) {
            await new Promise<void>((resolve, reject) => {
              const done = (err?: Error) => {
                socket.off("drain", onDrain)
                socket.off("close", onClose)
                signal.removeEventListener("abort", onAbort)
                if (err !== undefined) reject(err)
                else resolve()
              }
              const onDrain = () => done()
              const onClose = () => done(failure ?? new ReplyClientError({ reason: "connection closed while sending" }))
              const onAbort = () => done(new ReplyClientError({ reason: "aborted" }))
              socket.on("drain", onDrain)
              socket.on("close", onClose)
              signal.addEventListener("abort", onAbort)
            })
          }
        }
      },
      catch: (cause) =>
        cause instanceof ReplyClientError
          ? cause
          : new ReplyClientError({ reason: `sending the message failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
    }).pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(new ReplyClientError({ reason: `sending the message took longer than ${timeoutMs} ms` }))
      })
    )

  return {
    read,
    command: (line, timeoutMs) => Effect.andThen(write(`${line}\r\n`), read(timeoutMs)),
    send
  }
}
