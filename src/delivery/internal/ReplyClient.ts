/**
 * A minimal client for the SMTP family of protocols on one socket (TCP or Unix), on
 * `effect/socket` (Node's implementation): send command lines, stream DATA with the socket's
 * backpressure, and read replies (multi-line replies joined). It knows nothing of the
 * protocol's states; the LMTP adapter drives it. Every read and every write has a deadline, and
 * the connection is closed when the scope closes, whatever state it is in.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { Data, Effect, type Scope, Stream } from "effect"
import { Socket } from "effect/socket"

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
  /** Writes the whole stream, waiting for the socket to drain when its buffer is full. */
  readonly send: <E>(body: Stream.Stream<Uint8Array, E>, timeoutMs: number) => Effect.Effect<void, ReplyClientError>
}

/** A reply line longer than this (without a line break) is a broken peer, not a reply. */
const maxLine = 64 * 1024

const causeText = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** What went wrong underneath a socket error, in words. */
const socketDetail = (error: Socket.SocketError): string => {
  const reason = error.reason
  switch (reason._tag) {
    case "SocketCloseError":
      return "connection closed by the server"
    case "SocketOpenError":
    case "SocketReadError":
    case "SocketWriteError":
    case "SocketUpgradeError":
      return causeText(reason.cause)
  }
}

/** What a socket failure means to the conversation, in the words the outcomes carry. */
const fromSocketError = (error: Socket.SocketError): ReplyClientError => {
  switch (error.reason._tag) {
    case "SocketCloseError":
      return new ReplyClientError({ reason: socketDetail(error), cause: error })
    case "SocketWriteError":
      return new ReplyClientError({ reason: `write failed: ${socketDetail(error)}`, cause: error })
    default:
      return new ReplyClientError({ reason: `connection failed: ${socketDetail(error)}`, cause: error })
  }
}

const deadline = (timeoutMs: number, reason: string) =>
  Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.fail(new ReplyClientError({ reason })) })

export const connect = (target: Target, timeoutMs: number): Effect.Effect<ReplyClient, ReplyClientError, Scope.Scope> =>
  Effect.gen(function*() {
    const where = describeTarget(target)
    const socket = yield* NodeSocket.makeNet({ ...target, openTimeout: timeoutMs })
    // Acquiring the reader connects; the scope closes the connection.
    const pull = yield* Socket.readerString(socket, "utf-8").pipe(
      Effect.mapError((error) => {
        if (error.reason._tag === "SocketOpenError" && error.reason.kind === "Timeout") {
          return new ReplyClientError({ reason: `connecting to ${where} timed out after ${timeoutMs} ms`, cause: error })
        }
        return new ReplyClientError({ reason: `cannot connect to ${where}: ${socketDetail(error)}`, cause: error })
      })
    )
    const writer = yield* socket.writer
    return make(Effect.mapError(pull, fromSocketError), writer)
  })

const make = (pull: Effect.Effect<ReadonlyArray<string>, ReplyClientError>, writer: Socket.Writer): ReplyClient => {
  // Text received and not yet part of a reply, and the lines of a multi-line reply so far.
  let buffer = ""
  let pending: Array<string> = []

  /** The next complete reply in what was received, if there is one. */
  const takeReply = (): Reply | undefined => {
    let i: number
    while ((i = buffer.indexOf("\n")) !== -1) {
      const line = buffer.slice(0, i).replace(/\r$/, "")
      buffer = buffer.slice(i + 1)
      pending.push(line)
      if (line.length < 4 || line[3] !== "-") {
        const code = Number(line.slice(0, 3))
        const reply = { code: Number.isInteger(code) ? code : 0, lines: pending }
        pending = []
        return reply
      }
    }
    return undefined
  }

  const nextReply: Effect.Effect<Reply, ReplyClientError> = Effect.suspend(() => {
    const reply = takeReply()
    if (reply !== undefined) return Effect.succeed(reply)
    if (buffer.length > maxLine) return Effect.fail(new ReplyClientError({ reason: "reply line too long" }))
    return Effect.flatMap(pull, (texts) => {
      buffer += texts.join("")
      return nextReply
    })
  })

  const read = (timeoutMs: number) => nextReply.pipe(deadline(timeoutMs, `no reply within ${timeoutMs} ms`))

  const write = (line: string, timeoutMs: number) =>
    writer.write(`${line}\r\n`).pipe(Effect.mapError(fromSocketError), deadline(timeoutMs, `could not send a command within ${timeoutMs} ms`))

  const send = <E>(body: Stream.Stream<Uint8Array, E>, timeoutMs: number) =>
    Stream.runForEachArray(
      Stream.mapError(body, (e) => new ReplyClientError({ reason: `sending the message failed: ${causeText(e)}`, cause: e })),
      (chunks) => Effect.mapError(writer.writeAll(chunks), fromSocketError)
    ).pipe(deadline(timeoutMs, `sending the message took longer than ${timeoutMs} ms`))

  return {
    read,
    command: (line, timeoutMs) => Effect.andThen(write(line, timeoutMs), read(timeoutMs)),
    send
  }
}
