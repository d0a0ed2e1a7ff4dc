/**
 * The `spamd` rule: a bridge to SpamAssassin's daemon over its own protocol (SPAMC/1.5 over TCP,
 * what `spamc` speaks). After DATA and before the 250, the message is streamed to spamd with
 * `CHECK`, `SYMBOLS` (default: the score and the names of the rules that hit) or `REPORT` (the
 * score and the human-readable report); spamd's `Spam: True ; 1000.0 / 5.0` becomes the reply:
 *
 * | spamd says | default | reply |
 * |---|---|---|
 * | spam (score ≥ its required score) | `spam = "reject"` | 550 5.7.1 |
 * | score ≥ `reject_score` (when set) | reject | 550 5.7.1, whatever `spam` says |
 * | not spam | accept | accepted |
 *
 * `spam` may also be `defer` (451 4.7.1), `mark` (accepted, `X-Spam: Yes`), `quarantine` (marked,
 * `Envelope.quarantine` set) or `accept`. Every accepted message carries `X-Spam-Score` and
 * `X-Spam-Status` (SpamAssassin's own header: `Yes, score=7.2 required=5.0 tests=A,B`).
 *
 * A daemon that is down, slow (past `timeout`), answers an error code (`SPAMD/1.1 76 Bad header
 * line`) or something that is not its protocol lets the message through by default (`on_error =
 * "accept"`, with a warning), or defers it (`"tempfail"`: 451 4.7.1). Never a 5xx for spamd's
 * trouble (guarantee 4). Messages above `max_size` are not scanned (as `spamc`, default 500 KiB).
 * The npm clients of this protocol are unmaintained; this one is small and ours.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { Duration, Effect, Metric, Stream } from "effect"
import { Socket } from "effect/socket"
import * as SmtpReply from "../../../protocol/SmtpReply.ts"
import * as MessageEdit from "../../MessageEdit.ts"
import type { DataContext, Rule } from "../../Policy.ts"
import * as Verdict from "../../Verdict.ts"
import { exempt, type ExemptionOptions } from "./Exemption.ts"
import type { Treatment } from "./Rspamd.ts"

export type SpamdCommand = "check" | "symbols" | "report"

export interface SpamdOptions extends ExemptionOptions {
  readonly name?: string | undefined
  readonly observe?: boolean | undefined
  /** spamd's address (default 127.0.0.1:783). */
  readonly host?: string | undefined
  readonly port?: number | undefined
  /** Deadline of the whole exchange (default 8 s); keep it under the policy deadline. */
  readonly timeout?: Duration.Input | undefined
  /** What to do when spamd cannot answer: let the message through (default) or defer it. */
  readonly onError?: "accept" | "tempfail" | undefined
  /** What to ask (default `symbols`). */
  readonly command?: SpamdCommand | undefined
  /** The `User` header: whose preferences spamd applies (default: none, spamd's own user). */
  readonly user?: string | undefined
  /** What a message spamd calls spam gets (default `reject`). */
  readonly spam?: Treatment | undefined
  /** Refuse at or above this score, whatever `spam` says (default: not set). */
  readonly rejectScore?: number | undefined
  /** Larger messages are not scanned (default 500 KiB, as spamc). */
  readonly maxSize?: number | undefined
}

export const defaults = {
  host: "127.0.0.1",
  port: 783,
  timeoutMs: 8_000,
  onError: "accept",
  command: "symbols",
  spam: "reject",
  maxSize: 512_000
} as const

export const unavailable = SmtpReply.make(451, "4.7.1", "Spam filter unavailable, try again later")

/** What spamd said about one message. */
export interface SpamdResult {
  readonly spam: boolean
  readonly score: number
  readonly required: number
  /** The rules that hit (`SYMBOLS`). */
  readonly symbols: ReadonlyArray<string>
  /** The report (`REPORT`). */
  readonly report: string | undefined
}

/** Answers we read at most: a REPORT is a few KiB. */
const maxResponse = 1 << 20

/** The request's head; the message follows it, `size` bytes. */
export const requestHead = (command: SpamdCommand, size: number, user: string | undefined): string =>
  `${command.toUpperCase()} SPAMC/1.5\r\nContent-length: ${size}\r\n${user !== undefined ? `User: ${user}\r\n` : ""}\r\n`

/** spamd's answer, or why it is not one (an error code, not its protocol). */
export const parseResponse = (command: SpamdCommand, text: string): SpamdResult | string => {
  const end = text.indexOf("\r\n\r\n")
  const head = (end < 0 ? text : text.slice(0, end)).split("\r\n")
  const status = /^SPAMD\/(\d+\.\d+) (\d+) (.*)$/.exec(head[0] ?? "")
  if (status === null) return `not a spamd answer: ${JSON.stringify(printable(head[0] ?? ""))}`
  if (status[2] !== "0") return `spamd error ${status[2]}: ${printable(status[3]!)}`
  const spamLine = head.slice(1).find((l) => /^spam:/i.test(l))
  const spam = spamLine === undefined ? null : /^spam:\s*(true|false|yes|no)\s*;\s*(-?[\d.]+)\s*\/\s*(-?[\d.]+)\s*$/i.exec(spamLine)
  if (spam === null) return `no Spam header in spamd's answer`
  const body = end < 0 ? "" : text.slice(end + 4)
  return {
    spam: /^(true|yes)$/i.test(spam[1]!),
    score: Number(spam[2]),
    required: Number(spam[3]),
    symbols: command === "symbols" ? body.split(",").map((s) => s.trim()).filter((s) => /^[\w.-]+$/.test(s)) : [],
    report: command === "report" ? body : undefined
  }
}

/** Complete once the head and `Content-length` bytes of body are in (spamd also closes). */
const complete = (bytes: Buffer): boolean => {
  const end = bytes.indexOf("\r\n\r\n")
  if (end < 0) return false
  const length = /\r\ncontent-length:\s*(\d+)/i.exec(bytes.subarray(0, end).toString("latin1"))
  return length !== null && bytes.length - end - 4 >= Number(length[1])
}

const printable = (s: string) => s.replace(/[^\x20-\x7e]+/g, " ").trim().slice(0, 300)

/** The verdict for `result`: `spam` for spam, reject at `rejectScore`, else accepted with headers. */
export const verdictOf = (result: SpamdResult, options: Pick<SpamdOptions, "spam" | "rejectScore"> = {}): Verdict.Verdict => {
  const score = result.score.toFixed(1)
  const treatment: Treatment = options.rejectScore !== undefined && result.score >= options.rejectScore
    ? "reject"
    : result.spam ? options.spam ?? defaults.spam : "accept"
  switch (treatment) {
    case "reject":
      return Verdict.reject(SmtpReply.make(550, "5.7.1", `Message rejected as spam (score ${score}, required ${result.required.toFixed(1)})`))
    case "defer":
      return Verdict.defer(SmtpReply.make(451, "4.7.1", "Message looks like spam, try again later"))
  }
  const tests = result.symbols.length > 0 ? ` tests=${result.symbols.join(",")}` : ""
  const edits: Array<MessageEdit.MessageEdit> = [
    MessageEdit.prependHeader("X-Spam-Score", score),
    MessageEdit.prependHeader("X-Spam-Status", `${result.spam ? "Yes" : "No"}, score=${score} required=${result.required.toFixed(1)}${tests}`)
  ]
  if (treatment === "mark" || treatment === "quarantine") edits.push(MessageEdit.prependHeader("X-Spam", "Yes"))
  if (treatment === "quarantine") edits.push(MessageEdit.quarantine(`spamd: score ${score} (required ${result.required.toFixed(1)})`))
  edits.push(MessageEdit.annotate("spamd", {
    spam: result.spam,
    score: result.score,
    required: result.required,
    symbols: result.symbols,
    ...(result.report !== undefined ? { report: result.report } : {})
  }))
  return Verdict.continueWith(edits)
}

export const resultsTotal = Metric.counter("incoming_spamd_results_total", {
  description: "spamd scans by result: spam, ham, skipped (too large) and error (spamd could not answer)",
  incremental: true
})
export const scanSeconds = Metric.histogram("incoming_spamd_scan_seconds", {
  description: "round trip of one spamd scan",
  boundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
})

const counters = new Map<string, Metric.Metric<number, unknown>>()
const count = (result: "spam" | "ham" | "skipped" | "error") => {
  let m = counters.get(result)
  if (m === undefined) {
    m = resultsTotal.pipe(Metric.withAttributes({ result }))
    counters.set(result, m)
  }
  return Metric.update(m, 1)
}

const causeText = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))
const socketText = (error: Socket.SocketError): string =>
  error.reason._tag === "SocketCloseError" ? "connection closed" : "cause" in error.reason ? causeText(error.reason.cause) : error.reason._tag

/** Builds the rule; each scan is one connection (spamd answers one request per connection). */
export const make = (options: SpamdOptions = {}): Rule => {
  const host = options.host ?? defaults.host
  const port = options.port ?? defaults.port
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`
  const timeout = Duration.fromInputUnsafe(options.timeout ?? defaults.timeoutMs)
  const command = options.command ?? defaults.command
  const maxSize = options.maxSize ?? defaults.maxSize

  const scan = (ctx: DataContext, body: NonNullable<DataContext["body"]>): Effect.Effect<SpamdResult, string> =>
    Effect.gen(function*() {
      const socket = yield* NodeSocket.makeNet({ host, port, noDelay: true, openTimeout: Duration.toMillis(timeout) })
      const pull = yield* Socket.readerBytes(socket).pipe(Effect.mapError((e) => `cannot connect: ${socketText(e)}`))
      const writer = yield* socket.writer
      const write = (chunk: Uint8Array | string) => Effect.mapError(writer.write(chunk), (e) => `sending: ${socketText(e)}`)
      yield* write(requestHead(command, ctx.size, options.user))
      yield* Stream.runForEach(Stream.mapError(body, (e) => `reading the message: ${e.message}`), write)
      const chunks: Array<Uint8Array> = []
      let received = Buffer.alloc(0)
      while (!complete(received)) {
        const more = yield* Effect.result(pull)
        if (more._tag === "Failure") {
          // spamd closes the connection after its answer: the end is the answer's end.
          if (more.failure.reason._tag === "SocketCloseError") break
          return yield* Effect.fail(`reading the answer: ${socketText(more.failure)}`)
        }
        chunks.push(...more.success)
        received = Buffer.concat(chunks)
        if (received.length > maxResponse) return yield* Effect.fail(`answer larger than ${maxResponse} bytes`)
      }
      const result = parseResponse(command, received.toString("utf8"))
      return typeof result === "string" ? yield* Effect.fail(result) : result
    }).pipe(
      Effect.scoped,
      Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(`no answer within ${Duration.format(timeout)}`) })
    )

  const onData = (ctx: DataContext): Effect.Effect<Verdict.Verdict> => {
    if (exempt(options, ctx) || ctx.body === undefined) return Effect.succeed(Verdict.Continue)
    if (ctx.size > maxSize) return Effect.as(count("skipped"), Verdict.Continue)
    const body = ctx.body
    return Effect.gen(function*() {
      const started = yield* Effect.clockWith((c) => c.currentTimeMillis)
      const result = yield* Effect.result(scan(ctx, body))
      yield* Metric.update(scanSeconds, ((yield* Effect.clockWith((c) => c.currentTimeMillis)) - started) / 1000)
      if (result._tag === "Failure") {
        yield* count("error")
        yield* Effect.logWarning(`spamd at ${where} did not answer (${result.failure}): ${options.onError === "tempfail" ? "deferring" : "letting the message through"}`)
        return options.onError === "tempfail" ? Verdict.defer(unavailable) : Verdict.Continue
      }
      yield* count(result.success.spam ? "spam" : "ham")
      return verdictOf(result.success, options)
    })
  }

  return { name: options.name ?? "spamd", observe: options.observe, onData }
}
