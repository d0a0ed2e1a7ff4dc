/**
 * One connection to a milter, on `effect/socket` (TCP or a Unix socket): open it, negotiate
 * options, send commands and read the filter's replies, each read and write under the deadline.
 * It knows the wire (Codec.ts) and the negotiated steps, not the SMTP session: the milter rule
 * (rules/Milter.ts) decides what to send when.
 *
 * A `Progress` reply restarts the deadline (the filter is still working); modification requests
 * are collected until the final reply to end of message. After any failure the connection is
 * unusable (the byte stream cannot be resynchronised): the caller closes its scope.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { Data, Effect, type Scope } from "effect"
import { Socket } from "effect/socket"
import * as Codec from "./Codec.ts"

/** `inet:HOST:PORT` (IPv6 in brackets) or `unix:/path` (also `local:/path`), as Postfix writes them. */
export type Address =
  | { readonly _tag: "inet"; readonly host: string; readonly port: number }
  | { readonly _tag: "unix"; readonly path: string }

/** The address, or why it is not one. */
export const parseAddress = (text: string): Address | string => {
  const unix = /^(?:unix|local):(\/.+)$/.exec(text)
  if (unix !== null) return { _tag: "unix", path: unix[1]! }
  const inet = /^inet6?:(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text)
  if (inet !== null) {
    const port = Number(inet[3])
    if (port < 1 || port > 65535) return `port ${port} out of range in ${JSON.stringify(text)}`
    return { _tag: "inet", host: (inet[1] ?? inet[2])!, port }
  }
  return `not a milter address: ${JSON.stringify(text)} (expected "inet:HOST:PORT" or "unix:/path")`
}

export const formatAddress = (a: Address): string => (a._tag === "unix" ? `unix:${a.path}` : `inet:${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}`)

export type MilterErrorReason =
  | { readonly _tag: "Unavailable"; readonly detail: string }
  | { readonly _tag: "Timeout"; readonly detail: string }
  | { readonly _tag: "Protocol"; readonly detail: string }
  | { readonly _tag: "Closed"; readonly detail: string }

/** The filter could not be talked to; the rule turns it into its `on_error` verdict. */
export class MilterError extends Data.TaggedError("MilterError")<{
  readonly address: string
  readonly reason: MilterErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    return `milter ${this.address}: ${this.reason._tag}: ${this.reason.detail}`
  }
}

/** What we let a filter do at end of message: every modification of protocol version 6. */
export const offeredActions = Codec.Action.AddHeaders | Codec.Action.ChangeHeaders | Codec.Action.ChangeBody | Codec.Action.AddRecipient |
  Codec.Action.AddRecipientWithArgs | Codec.Action.DeleteRecipient | Codec.Action.ChangeFrom | Codec.Action.Quarantine |
  Codec.Action.SetSymbolList

/** Every step a filter may skip or leave unanswered, `Skip`, and the header value as received (leading space). */
export const offeredSteps = Object.values(Codec.Step).reduce((a, b) => a | b, 0) & ~Codec.Step.RejectedRcpt

/** The final reply to a command and, at end of message, the modifications that came before it. */
export interface Answer {
  readonly reply: Exclude<Codec.Reply, { readonly _tag: "Modify" | "Progress" | "Shutdown" }>
  readonly modifications: ReadonlyArray<Codec.Modification>
}

export interface Connection {
  readonly negotiated: Codec.Negotiated
  /** Writes packets that get no reply (macros, skipped replies, abort, quit). */
  readonly send: (packets: ReadonlyArray<Uint8Array>) => Effect.Effect<void, MilterError>
  /**
   * Writes packets, then reads replies up to the final one; modifications only when
   * `endOfMessage`. Replace-body chunks go to `onBody` as they arrive (a replaced body is never
   * collected in memory); without it they are collected with the other modifications.
   */
  readonly ask: (
    packets: ReadonlyArray<Uint8Array>,
    endOfMessage?: boolean,
    onBody?: (chunk: Uint8Array) => Effect.Effect<void>
  ) => Effect.Effect<Answer, MilterError>
}

const causeText = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** Opens a connection and negotiates; the scope closes it. */
export const open = (address: Address, timeoutMs: number): Effect.Effect<Connection, MilterError, Scope.Scope> =>
  Effect.gen(function*() {
    const where = formatAddress(address)
    const fail = (reason: MilterErrorReason, cause?: unknown) => new MilterError({ address: where, reason, cause })
    const deadline = (what: string) =>
      Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.fail(fail({ _tag: "Timeout", detail: `${what}: no answer within ${timeoutMs} ms` })) })
    const fromSocket = (error: Socket.SocketError): MilterError =>
      error.reason._tag === "SocketCloseError"
        ? fail({ _tag: "Closed", detail: "connection closed by the filter" }, error)
        : fail({ _tag: "Closed", detail: `connection failed: ${"cause" in error.reason ? causeText(error.reason.cause) : error.reason._tag}` }, error)

    // No Nagle: every command is a small write awaiting a small reply, and Nagle's wait for the
    // previous segment's (delayed) ACK made each message ~70 ms slower against a local OpenDKIM.
    const socket = yield* NodeSocket.makeNet({
      ...(address._tag === "unix" ? { path: address.path } : { host: address.host, port: address.port, noDelay: true }),
      openTimeout: timeoutMs
    })
    // Acquiring the reader connects.
    const pull = yield* Socket.readerBytes(socket).pipe(
      Effect.mapError((error) =>
        fail({
          _tag: "Unavailable",
          detail: error.reason._tag === "SocketOpenError" && error.reason.kind === "Timeout"
            ? `connecting timed out after ${timeoutMs} ms`
            : `cannot connect: ${"cause" in error.reason ? causeText(error.reason.cause) : error.reason._tag}`
        }, error)
      )
    )
    const writer = yield* socket.writer
    const decoder = Codec.makeDecoder()
    const received: Array<Codec.Packet> = []

    const nextPacket: Effect.Effect<Codec.Packet, MilterError> = Effect.suspend(() => {
      const p = received.shift()
      if (p !== undefined) return Effect.succeed(p)
      return Effect.flatMap(Effect.mapError(pull, fromSocket), (chunks) => {
        for (const chunk of chunks) {
          const packets = decoder.push(chunk)
          if (packets instanceof Codec.CodecError) return Effect.fail(fail({ _tag: "Protocol", detail: packets.message }))
          received.push(...packets)
        }
        return nextPacket
      })
    })

    // The packets of one step (macros, then the command) go out in one write: one segment.
    const send = (packets: ReadonlyArray<Uint8Array>) =>
      packets.length === 0
        ? Effect.void
        : writer.write(packets.length === 1 ? packets[0]! : Buffer.concat(packets)).pipe(Effect.mapError(fromSocket), deadline("sending"))

    // Over TCP, a filter whose answer to end of message is several writes (libmilter: one per
    // modification, then the final reply) has all but the first held by Nagle's algorithm on its
    // side until we ACK, and our kernel delays that ACK 40 ms or more (we are in interactive
    // mode). Node cannot set TCP_QUICKACK, so we write instead: the end-of-message macros once
    // more (the same values: a no-op for the filter, read after its answer), which carries the
    // ACK at once. Measured: ~50 ms less per message against OpenDKIM (docs/milter.md).
    const nudges = address._tag === "inet"
    const ack = (eom: ReadonlyArray<Uint8Array>) => {
      const first = eom[0]
      const again = eom.length > 1 && first !== undefined && first[4] === Codec.Command.Macro.charCodeAt(0)
        ? first
        : Codec.macros(Codec.Command.EndOfMessage, [])
      return send([again])
    }

    const ask = (
      packets: ReadonlyArray<Uint8Array>,
      endOfMessage = false,
      onBody?: (chunk: Uint8Array) => Effect.Effect<void>
    ): Effect.Effect<Answer, MilterError> =>
      Effect.gen(function*() {
        yield* send(packets)
        const modifications: Array<Codec.Modification> = []
        while (true) {
          // Each packet has its own deadline: a `Progress` starts it again.
          const p = yield* deadline("waiting for a reply")(nextPacket)
          const reply = Codec.parseReply(p)
          if (reply instanceof Codec.CodecError) return yield* fail({ _tag: "Protocol", detail: reply.message })
          switch (reply._tag) {
            case "Progress":
              continue
            case "Modify":
              if (!endOfMessage) return yield* fail({ _tag: "Protocol", detail: `${reply.modification._tag} before end of message` })
              if (reply.modification._tag === "ReplaceBody" && onBody !== undefined) yield* onBody(reply.modification.chunk)
              else modifications.push(reply.modification)
              // Only when nothing more has arrived: the rest is held back, waiting for our ACK.
              if (nudges && received.length === 0) yield* ack(packets)
              continue
            case "Shutdown":
              return yield* fail({ _tag: "Closed", detail: "the filter is shutting down" })
            default:
              return { reply, modifications }
          }
        }
      })

    yield* send([Codec.negotiate(offeredActions, offeredSteps)])
    const first = yield* deadline("option negotiation")(nextPacket)
    const negotiated = Codec.parseNegotiation(first)
    if (negotiated instanceof Codec.CodecError) return yield* fail({ _tag: "Protocol", detail: negotiated.message })
    if (negotiated.version < 2 || negotiated.version > Codec.version) {
      return yield* fail({ _tag: "Protocol", detail: `filter speaks milter version ${negotiated.version}; we speak 2 to ${Codec.version}` })
    }
    // What it asks beyond our offer it does not get (Postfix does the same).
    return {
      negotiated: { ...negotiated, actions: negotiated.actions & offeredActions, steps: negotiated.steps & offeredSteps },
      send,
      ask
    } satisfies Connection
  })
