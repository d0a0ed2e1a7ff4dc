/**
 * Delivery over LMTP (RFC 2033) to a local delivery agent — Dovecot, Cyrus — on a Unix socket
 * or TCP: LHLO, MAIL, one RCPT per recipient, DATA, then one reply per accepted recipient, so
 * each recipient gets its own outcome (one mailbox over quota does not hold back the others).
 *
 * 2xx is delivered, 5xx is dead-lettered with the server's reply, 4xx and anything unexpected
 * is retried. A connection that fails or times out part-way retries every recipient that has no
 * final reply yet; recipients already answered keep their answers, so nothing delivered is
 * delivered again.
 *
 * Our own client (`internal/ReplyClient.ts`, on `effect/socket`) rather than nodemailer's: its
 * LMTP mode reports a connection that drops after DATA as one error for the whole message, and
 * the per-recipient answers already received would be lost with it.
 */
import { hostname } from "node:os"
import { Effect, Layer } from "effect"
import * as Dsn from "../protocol/Dsn.ts"
import * as DA from "./DeliveryAdapter.ts"
import { dotStuffed } from "./internal/dotStuff.ts"
import * as ReplyClient from "./internal/ReplyClient.ts"
import { fillRetry, fromReply } from "./internal/replyOutcome.ts"

export interface LmtpOptions {
  /** Adapter name in events and logs (default `lmtp`). */
  readonly name?: string
  /** A Unix socket (`{ path }`) or a TCP address (`{ host, port }`). */
  readonly target: ReplyClient.Target
  /** Our name in LHLO (default: the host name). */
  readonly lhlo?: string
  /** Deadline for connecting (default 10 s). */
  readonly connectTimeoutMs?: number
  /** Deadline for each command's reply (default 60 s). */
  readonly commandTimeoutMs?: number
  /**
   * Deadline for sending the message and for each per-recipient reply after it (default 90 s,
   * inside the dispatcher's default 2 min deadline for a whole delivery: raise both together).
   */
  readonly dataTimeoutMs?: number
}

/** What an option left out means (`port`: of a TCP target given without one); shown by `check-config`. */
export const defaults = {
  port: 24,
  connectTimeoutMs: 10_000,
  commandTimeoutMs: 60_000,
  dataTimeoutMs: 90_000
} as const

const angle = (address: string) => `<${address}>`

export const make = (options: LmtpOptions): DA.DeliveryAdapter["Service"] => {
  const name = options.name ?? "lmtp"
  const lhlo = options.lhlo ?? hostname()
  const connectTimeout = options.connectTimeoutMs ?? defaults.connectTimeoutMs
  const commandTimeout = options.commandTimeoutMs ?? defaults.commandTimeoutMs
  const dataTimeout = options.dataTimeoutMs ?? defaults.dataTimeoutMs
  const where = ReplyClient.describeTarget(options.target)

  const deliver = Effect.fn("LmtpAdapter.deliver")(function*(delivery: DA.Delivery) {
    const decided = new Map<string, DA.RecipientOutcome>()
    const decideAll = (rcpts: ReadonlyArray<string>, code: number, text: string) => {
      for (const rcpt of rcpts) decided.set(rcpt, fromReply(rcpt, code, text))
    }

    const conversation = Effect.gen(function*() {
      const client = yield* ReplyClient.connect(options.target, connectTimeout)
      const greeting = yield* client.read(commandTimeout)
      if (greeting.code !== 220) {
        return yield* new ReplyClient.ReplyClientError({ reason: `LMTP greeting from ${where}: ${ReplyClient.format(greeting)}` })
      }
      const hello = yield* client.command(`LHLO ${lhlo}`, commandTimeout)
      if (hello.code !== 250) {
        return yield* new ReplyClient.ReplyClientError({ reason: `LHLO refused by ${where}: ${ReplyClient.format(hello)}` })
      }
      const extensions = new Set(hello.lines.slice(1).map((l) => l.slice(4).split(" ")[0]!.toUpperCase()))
      const dsn = extensions.has("DSN")
      const mailParams = [
        extensions.has("8BITMIME") ? " BODY=8BITMIME" : "",
        extensions.has("SIZE") ? ` SIZE=${delivery.size}` : "",
        extensions.has("SMTPUTF8") && /[^\x00-\x7f]/.test([delivery.envelope.mailFrom, ...delivery.recipients.map((r) => r.rcpt)].join("")) ? " SMTPUTF8" : "",
        // RFC 3461's parameters go on to a server that takes them (Dovecot does not advertise DSN).
        dsn ? Dsn.mailParameters(delivery.envelope.dsn) : ""
      ].join("")
      const mail = yield* client.command(`MAIL FROM:${angle(delivery.envelope.mailFrom)}${mailParams}`, commandTimeout)
      if (mail.code !== 250) {
        decideAll(delivery.recipients.map((r) => r.rcpt), mail.code, ReplyClient.format(mail))
        return
      }
      const accepted: Array<string> = []
      for (const { rcpt } of delivery.recipients) {
        const rcptParams = dsn ? Dsn.recipientParameters(delivery.envelope.recipientDsn?.[rcpt]) : ""
        const reply = yield* client.command(`RCPT TO:${angle(rcpt)}${rcptParams}`, commandTimeout)
        if (reply.code >= 200 && reply.code < 300) accepted.push(rcpt)
        else decided.set(rcpt, fromReply(rcpt, reply.code, ReplyClient.format(reply)))
      }
      if (accepted.length === 0) {
        yield* client.command("QUIT", commandTimeout).pipe(Effect.ignore)
        return
      }
      const data = yield* client.command("DATA", commandTimeout)
      if (data.code !== 354) {
        decideAll(accepted, data.code, ReplyClient.format(data))
        return
      }
      yield* client.send(dotStuffed(delivery.body), dataTimeout)
      // RFC 2033 §4.2: one reply per recipient that was accepted at RCPT, in RCPT order.
      for (const rcpt of accepted) {
        const reply = yield* client.read(dataTimeout)
        decided.set(rcpt, fromReply(rcpt, reply.code, ReplyClient.format(reply)))
      }
      yield* client.command("QUIT", commandTimeout).pipe(Effect.ignore)
    }).pipe(Effect.scoped)

    const failure = yield* conversation.pipe(
      Effect.as(undefined),
      Effect.catchTag("ReplyClientError", (e) => Effect.succeed(`LMTP ${where}: ${e.reason}`))
    )
    if (failure !== undefined) yield* Effect.logWarning(failure)
    return fillRetry(delivery.recipients, decided, failure ?? "LMTP server gave no reply")
  }, Effect.annotateLogs({ adapter: name }))

  return DA.DeliveryAdapter.of({ name, deliver })
}

export const layer = (options: LmtpOptions): Layer.Layer<DA.DeliveryAdapter> => Layer.succeed(DA.DeliveryAdapter, make(options))
