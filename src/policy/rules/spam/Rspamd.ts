/**
 * The `rspamd` rule: after DATA and before the 250, the message is streamed to rspamd's HTTP
 * `/checkv2` (`effect/http` HttpClient over Node's http client), with the envelope in the
 * request headers rspamd reads (`IP`, `Helo`, `Hostname`, `From`, `Rcpt`, `Queue-Id`, `User`),
 * and rspamd's action becomes the reply:
 *
 * | action | default | reply |
 * |---|---|---|
 * | `reject` | reject | 550 5.7.1 (rspamd's `smtp_message` when it gives one) |
 * | `soft reject`, `greylist` | defer | 451 4.7.1 |
 * | `add header`, `rewrite subject` | mark | accepted, `X-Spam: Yes` (and the new Subject) |
 * | `no action` | accept | accepted |
 *
 * `actions` overrides the mapping (`{ greylist = "accept" }`); `quarantine` accepts and marks the
 * envelope (`Envelope.quarantine`), which a route can match. Every accepted message carries
 * `X-Rspamd-Score` and `X-Rspamd-Action`, and the headers rspamd asks to add or remove
 * (`milter.add_headers` / `remove_headers`).
 *
 * A daemon that is down, slow (past `timeout`), answers an HTTP error or something that is not its
 * JSON lets the message through by default (`on_error = "accept"`, with a warning), or defers it
 * (`"tempfail"`: 451 4.7.1). Never a 5xx for rspamd's trouble (guarantee 4).
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Duration, Effect, Metric, Schema, type Scope } from "effect"
import { type HttpClient, HttpClientRequest } from "effect/http"
import * as SmtpReply from "../../../protocol/SmtpReply.ts"
import * as MessageEdit from "../../MessageEdit.ts"
import type { DataContext, Rule } from "../../Policy.ts"
import * as Verdict from "../../Verdict.ts"
import { exempt, type ExemptionOptions } from "./Exemption.ts"

export type RspamdAction = "reject" | "soft reject" | "greylist" | "add header" | "rewrite subject" | "no action"
export type Treatment = "reject" | "defer" | "mark" | "quarantine" | "accept"

export interface RspamdOptions extends ExemptionOptions {
  readonly name?: string | undefined
  readonly observe?: boolean | undefined
  /** rspamd's normal worker (default `http://127.0.0.1:11333`). */
  readonly url?: string | undefined
  /** Deadline of the whole exchange (default 8 s); keep it under the policy deadline. */
  readonly timeout?: Duration.Input | undefined
  /** What to do when rspamd cannot answer: let the message through (default) or defer it. */
  readonly onError?: "accept" | "tempfail" | undefined
  /** Overrides of the action → treatment mapping. */
  readonly actions?: Partial<Record<RspamdAction, Treatment>> | undefined
  /** Our host name, sent as `MTA-Name`. */
  readonly hostname?: string | undefined
}

export const defaults = {
  url: "http://127.0.0.1:11333",
  timeoutMs: 8_000,
  onError: "accept"
} as const

export const defaultActions: Readonly<Record<RspamdAction, Treatment>> = {
  "reject": "reject",
  "soft reject": "defer",
  "greylist": "defer",
  "add header": "mark",
  "rewrite subject": "mark",
  "no action": "accept"
}

export const unavailable = SmtpReply.make(451, "4.7.1", "Spam filter unavailable, try again later")

/** The part of `/checkv2`'s answer we read. */
const HeaderValue = Schema.Union([Schema.String, Schema.Struct({ value: Schema.String })])
export const CheckResult = Schema.Struct({
  action: Schema.String,
  score: Schema.Number,
  required_score: Schema.optional(Schema.Number),
  subject: Schema.optional(Schema.String),
  messages: Schema.optional(Schema.Struct({ smtp_message: Schema.optional(Schema.String) })),
  milter: Schema.optional(Schema.Struct({
    add_headers: Schema.optional(Schema.Record(Schema.String, Schema.Union([HeaderValue, Schema.Array(HeaderValue)]))),
    remove_headers: Schema.optional(Schema.Record(Schema.String, Schema.Number))
  }))
})
export type CheckResult = typeof CheckResult.Type

export const resultsTotal = Metric.counter("incoming_rspamd_results_total", {
  description: "rspamd scans by action (and error when rspamd could not answer)",
  incremental: true
})
export const scanSeconds = Metric.histogram("incoming_rspamd_scan_seconds", {
  description: "round trip of one rspamd /checkv2 scan",
  boundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
})

const printable = (s: string) => s.replace(/[^\x20-\x7e]+/g, " ").trim().slice(0, 300)

/** What `result` means for the message, as a verdict with its edits. */
export const verdictOf = (result: CheckResult, actions: Readonly<Record<string, Treatment>>): Verdict.Verdict => {
  const treatment = actions[result.action] ?? "accept"
  const said = result.messages?.smtp_message
  switch (treatment) {
    case "reject":
      return Verdict.reject(SmtpReply.make(550, "5.7.1", said !== undefined ? printable(said) : "Message rejected as spam"))
    case "defer":
      return Verdict.defer(SmtpReply.make(451, "4.7.1", said !== undefined ? printable(said) : "Try again later"))
  }
  const edits: Array<MessageEdit.MessageEdit> = [
    MessageEdit.prependHeader("X-Rspamd-Score", result.score.toFixed(2)),
    MessageEdit.prependHeader("X-Rspamd-Action", result.action)
  ]
  for (const [name, count] of Object.entries(result.milter?.remove_headers ?? {})) {
    edits.push(MessageEdit.removeHeader(name, count > 0 ? { occurrence: count } : {}))
  }
  for (const [name, value] of Object.entries(result.milter?.add_headers ?? {})) {
    for (const v of Array.isArray(value) ? value : [value]) edits.push(MessageEdit.prependHeader(name, typeof v === "string" ? v : v.value))
  }
  if (treatment === "mark" || treatment === "quarantine") {
    edits.push(MessageEdit.prependHeader("X-Spam", "Yes"))
    if (result.action === "rewrite subject" && result.subject !== undefined) edits.push(MessageEdit.changeHeader("Subject", 1, result.subject))
  }
  if (treatment === "quarantine") edits.push(MessageEdit.quarantine(`rspamd: ${result.action} (score ${result.score.toFixed(2)})`))
  edits.push(MessageEdit.annotate("rspamd", { action: result.action, score: result.score }))
  return Verdict.continueWith(edits)
}

const counters = new Map<string, Metric.Metric<number, unknown>>()
const count = (action: string) => {
  let m = counters.get(action)
  if (m === undefined) {
    m = resultsTotal.pipe(Metric.withAttributes({ action }))
    counters.set(action, m)
  }
  return Metric.update(m, 1)
}

/** Builds the rule; its HTTP agent (keep-alive sockets) lives in the scope. */
export const make = Effect.fnUntraced(function*(options: RspamdOptions = {}): Effect.fn.Return<Rule, never, Scope.Scope> {
  const url = new URL("/checkv2", options.url ?? defaults.url).href
  const timeout = Duration.fromInputUnsafe(options.timeout ?? defaults.timeoutMs)
  const actions = { ...defaultActions, ...options.actions }
  const agent = yield* NodeHttpClient.makeAgent({ keepAlive: true })
  const client: HttpClient.HttpClient = yield* NodeHttpClient.makeNodeHttp.pipe(Effect.provideService(NodeHttpClient.HttpAgent, agent))
  const decodeResult = Schema.decodeUnknownEffect(CheckResult)

  const scan = (ctx: DataContext, body: NonNullable<DataContext["body"]>) =>
    Effect.gen(function*() {
      const headers: Record<string, string> = {
        "IP": ctx.clientAddress,
        "From": ctx.mailFrom,
        // rspamd reads one address per Rcpt header; Node's client sends one header per name,
        // so several recipients go comma-separated (rspamd takes the first as the recipient).
        "Rcpt": ctx.recipients.join(", "),
        ...(ctx.helo !== undefined ? { "Helo": ctx.helo } : {}),
        ...(ctx.clientHostname !== undefined ? { "Hostname": ctx.clientHostname } : {}),
        ...(ctx.messageId !== undefined ? { "Queue-Id": ctx.messageId } : {}),
        ...(ctx.user !== undefined ? { "User": ctx.user } : {}),
        ...(options.hostname !== undefined ? { "MTA-Name": options.hostname } : {})
      }
      const response = yield* client.execute(
        HttpClientRequest.post(url, { headers }).pipe(HttpClientRequest.bodyStream(body, { contentType: "message/rfc822", contentLength: ctx.size }))
      )
      if (response.status !== 200) return yield* Effect.fail(`HTTP ${response.status}`)
      return yield* Effect.flatMap(response.json, decodeResult)
    }).pipe(Effect.timeout(timeout), Effect.scoped)

  const onData = (ctx: DataContext): Effect.Effect<Verdict.Verdict> => {
    if (exempt(options, ctx) || ctx.body === undefined) return Effect.succeed(Verdict.Continue)
    const body = ctx.body
    return Effect.gen(function*() {
      const started = yield* Effect.clockWith((c) => c.currentTimeMillis)
      const result = yield* Effect.result(scan(ctx, body))
      yield* Metric.update(scanSeconds, ((yield* Effect.clockWith((c) => c.currentTimeMillis)) - started) / 1000)
      if (result._tag === "Failure") {
        yield* count("error")
        const detail = typeof result.failure === "string" ? result.failure : String((result.failure as { message?: unknown }).message ?? result.failure)
        yield* Effect.logWarning(`rspamd at ${url} did not answer (${detail}): ${options.onError === "tempfail" ? "deferring" : "letting the message through"}`)
        return options.onError === "tempfail" ? Verdict.defer(unavailable) : Verdict.Continue
      }
      yield* count(result.success.action)
      return verdictOf(result.success, actions)
    })
  }

  return { name: options.name ?? "rspamd", observe: options.observe, onData }
})
