/**
 * The dev inbox's JSON API, what the page and app tests use:
 *
 * - `GET /api/messages?query=…&limit=…&offset=…&since=…` — summaries, newest first, with the
 *   number matching and the number unread.
 * - `GET /api/messages/wait?query=…&timeout=…&since=…` — the newest message matching `query`
 *   (received after `since`, when given), answered as soon as one is stored: 200 with the parsed
 *   message, or 404 when none arrived within `timeout` (ms, or `5s`, `2m`; default 30 s, at most
 *   5 minutes). App tests wait on it instead of sleeping.
 * - `GET /api/messages/:id` — parsed: headers, text, HTML, attachment metadata.
 * - `GET /api/messages/:id/raw` — the message as stored (`?download=1`: as `<id>.eml`).
 * - `GET /api/messages/:id/html` — the HTML body for the page's sandboxed frame (CSP, `cid:`
 *   images embedded).
 * - `GET /api/messages/:id/parts/:n` — attachment `n` (`?download=1` forces a download).
 * - `PATCH /api/messages/:id` `{ "unread": bool }`, `DELETE /api/messages/:id`, `DELETE /api/messages`.
 * - `POST /api/messages/:id/release` `{ "to": ["a@b"] }` — see `Release.ts`.
 * - `GET /api/events` — Server-Sent Events: `ready` once subscribed, then `added`, `updated`,
 *   `removed`, `cleared`.
 * - `GET /api/info` — the SMTP address, limits and the release configuration.
 *
 * Every handler answers: a storage failure is a 500 with a JSON `error`, never a dropped request.
 */
import { Deferred, Effect, Layer, Option, Schema, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as MessageId from "../queue/MessageId.ts"
import * as Message from "./Message.ts"
import type { Releaser } from "./Release.ts"
import * as Search from "./Search.ts"
import { type InboxEvent, InboxStore } from "./Store.ts"

export interface ApiContext {
  readonly releaser: Releaser
  /** What `GET /api/info` answers (addresses are known once bound). */
  readonly info: () => object
  /** Completed when the server starts shutting down: event streams and waits end then. */
  readonly closing: Deferred.Deferred<void>
}

const noStore = { "cache-control": "no-store" }

export const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status, headers: noStore })
export const problem = (status: number, error: string) => json({ error }, status)

const maxWaitMs = 5 * 60_000
const defaultWaitMs = 30_000

/** `500`, `500ms`, `5s`, `2m` → milliseconds. */
export const parseTimeout = (text: string | undefined): number | string => {
  if (text === undefined || text === "") return defaultWaitMs
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/.exec(text.trim())
  if (m === null) return `timeout "${text}" is not a duration (milliseconds, or 5s, 2m)`
  const ms = Number(m[1]) * (m[2] === "s" ? 1000 : m[2] === "m" ? 60_000 : 1)
  return Math.min(Math.round(ms), maxWaitMs)
}

/** `since`: epoch milliseconds or an ISO 8601 instant. */
export const parseSince = (text: string | undefined): number | undefined | string => {
  if (text === undefined || text === "") return undefined
  const n = /^\d+$/.test(text) ? Number(text) : Date.parse(text)
  return Number.isFinite(n) ? n : `since "${text}" is neither epoch milliseconds nor an ISO 8601 time`
}

const intParam = (text: string | undefined, fallback: number, max: number): number => {
  const n = text === undefined ? NaN : Number(text)
  return Number.isInteger(n) && n >= 0 ? Math.min(n, max) : fallback
}

const first = (v: string | ReadonlyArray<string> | undefined): string | undefined => (typeof v === "string" ? v : v?.[0])

const searchParam = (name: string) => HttpServerRequest.ParsedSearchParams.use((p) => Effect.succeed(first(p[name])))

const idParam = Effect.map(HttpRouter.params, (p) => {
  const id = p["id"] ?? ""
  return MessageId.isValid(id) ? Option.some(id) : Option.none<string>()
})

const notFound = problem(404, "no such message")

const eventFrame = (event: InboxEvent): string => {
  switch (event._tag) {
    case "Added":
      return `event: added\ndata: ${JSON.stringify(event.message)}\n\n`
    case "Updated":
      return `event: updated\ndata: ${JSON.stringify(event.message)}\n\n`
    case "Removed":
      return `event: removed\ndata: ${JSON.stringify({ ids: event.ids })}\n\n`
    case "Cleared":
      return "event: cleared\ndata: {}\n\n"
  }
}

/** A header-safe content type: the part's own when it is a plain `type/subtype`, else bytes. */
const safeType = (t: string) => (/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/i.test(t) ? t.toLowerCase() : "application/octet-stream")

/**
 * The message's HTML runs nowhere: no scripts, no forms, no plugins, opened in the frame or on
 * its own (the CSP sandbox applies either way); images, styles and fonts may load, as in a
 * mail client that shows remote content.
 */
export const messageCsp = [
  "default-src 'none'",
  "img-src 'self' data: http: https:",
  "style-src 'unsafe-inline' http: https:",
  "font-src data: http: https:",
  "media-src 'self' data:",
  "script-src 'none'",
  "form-action 'none'",
  "base-uri 'none'",
  "frame-ancestors 'self'",
  "sandbox allow-popups allow-popups-to-escape-sandbox"
].join("; ")

/** What a part URL may carry besides its bytes: nothing active (an SVG or HTML part opened directly stays inert). */
const partCsp = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"

const UpdateBody = Schema.Struct({ unread: Schema.Boolean })
const ReleaseBody = Schema.Struct({ to: Schema.Union([Schema.String, Schema.Array(Schema.String)]) })

/** POST/PATCH bodies must say they are JSON: a cross-site form cannot send that without a CORS preflight. */
const jsonRequest = HttpServerRequest.HttpServerRequest.use((r) =>
  Effect.succeed((r.headers["content-type"] ?? "").toLowerCase().startsWith("application/json")))

export const routes = (ctx: ApiContext) =>
  Layer.unwrap(Effect.gen(function*() {
    const store = yield* InboxStore

    const withParsed = (f: (parsed: { summary: Message.MessageSummary; email: Parameters<typeof Message.detail>[1] }) => HttpServerResponse.HttpServerResponse) =>
      Effect.gen(function*() {
        const id = yield* idParam
        if (Option.isNone(id)) return notFound
        const parsed = yield* store.parsed(id.value)
        return Option.isNone(parsed) ? notFound : f(parsed.value)
      })

    const list = Effect.gen(function*() {
      const since = parseSince(yield* searchParam("since"))
      if (typeof since === "string") return problem(400, since)
      const result = yield* store.list({
        query: Search.parse((yield* searchParam("query")) ?? ""),
        since,
        limit: intParam(yield* searchParam("limit"), 50, 5000),
        offset: intParam(yield* searchParam("offset"), 0, Number.MAX_SAFE_INTEGER)
      })
      return json(result)
    })

    const wait = Effect.gen(function*() {
      const timeoutMs = parseTimeout(yield* searchParam("timeout"))
      if (typeof timeoutMs === "string") return problem(400, timeoutMs)
      const since = parseSince(yield* searchParam("since"))
      if (typeof since === "string") return problem(400, since)
      const text = (yield* searchParam("query")) ?? ""
      const found = yield* store.wait(Search.parse(text), { timeoutMs, since }).pipe(
        Effect.map((m) => ({ _tag: "Waited" as const, message: m })),
        Effect.raceFirst(Effect.as(Deferred.await(ctx.closing), { _tag: "Closing" as const }))
      )
      if (found._tag === "Closing") return problem(503, "the dev inbox is shutting down")
      if (Option.isNone(found.message)) {
        return problem(404, `no message matching "${text}" arrived within ${timeoutMs} ms`)
      }
      const parsed = yield* store.parsed(found.message.value.id)
      return Option.isNone(parsed) ? notFound : json(Message.detail(parsed.value.summary, parsed.value.email))
    })

    const raw = Effect.gen(function*() {
      const id = yield* idParam
      if (Option.isNone(id)) return notFound
      const bytes = yield* store.raw(id.value)
      if (Option.isNone(bytes)) return notFound
      const download = (yield* searchParam("download")) === "1"
      return HttpServerResponse.uint8Array(bytes.value, {
        contentType: "message/rfc822",
        headers: { ...noStore, "content-disposition": Message.contentDisposition(download ? "attachment" : "inline", `${id.value}.eml`) }
      })
    })

    const part = Effect.gen(function*() {
      const n = Number((yield* HttpRouter.params)["n"])
      const download = (yield* searchParam("download")) === "1"
      return yield* withParsed(({ summary, email }) => {
        const bytes = Number.isInteger(n) ? Message.partContent(email, n) : undefined
        const info = Message.attachmentsOf(summary.id, email)[n]
        if (bytes === undefined || info === undefined) return problem(404, "no such part")
        const inline = !download && Message.previewable.has(info.contentType.toLowerCase())
        return HttpServerResponse.uint8Array(bytes, {
          contentType: safeType(info.contentType),
          headers: {
            "cache-control": "private, max-age=300",
            "content-disposition": Message.contentDisposition(inline ? "inline" : "attachment", info.filename),
            "content-security-policy": partCsp
          }
        })
      })
    })

    const html = withParsed(({ summary, email }) => {
      const body = Message.htmlForFrame(summary.id, email)
      if (body === undefined) return problem(404, "this message has no HTML body")
      return HttpServerResponse.text(body, {
        contentType: "text/html; charset=utf-8",
        headers: { ...noStore, "content-security-policy": messageCsp, "referrer-policy": "no-referrer" }
      })
    })

    const update = Effect.gen(function*() {
      const id = yield* idParam
      if (Option.isNone(id)) return notFound
      if (!(yield* jsonRequest)) return problem(415, "send the body as application/json")
      const body = yield* Effect.result(HttpServerRequest.schemaBodyJson(UpdateBody))
      if (body._tag === "Failure") return problem(400, "the body must be {\"unread\": true|false}")
      const summary = yield* store.setUnread(id.value, body.success.unread)
      return Option.isNone(summary) ? notFound : json(summary.value)
    })

    const release = Effect.gen(function*() {
      const id = yield* idParam
      if (Option.isNone(id)) return notFound
      if (!(yield* jsonRequest)) return problem(415, "send the body as application/json")
      const body = yield* Effect.result(HttpServerRequest.schemaBodyJson(ReleaseBody))
      if (body._tag === "Failure") return problem(400, "the body must be {\"to\": [\"address\", …]}")
      const summary = yield* store.get(id.value)
      const bytes = yield* store.raw(id.value)
      if (Option.isNone(summary) || Option.isNone(bytes)) return notFound
      const to = typeof body.success.to === "string" ? body.success.to.split(/[\s,;]+/).filter((s) => s !== "") : body.success.to
      const outcome = yield* Effect.result(ctx.releaser.release({ summary: summary.value, raw: bytes.value }, to))
      if (outcome._tag === "Success") return json(outcome.success)
      const reason = outcome.failure.reason
      const status = reason._tag === "NotConfigured" ? 501 : reason._tag === "NotAllowed" ? 403 : reason._tag === "Failed" ? 502 : 400
      return problem(status, outcome.failure.message)
    })

    const remove = Effect.gen(function*() {
      const id = yield* idParam
      if (Option.isNone(id)) return notFound
      return (yield* store.remove(id.value)) ? json({ deleted: 1 }) : notFound
    })

    const events = Effect.sync(() => {
      const frames = Stream.unwrap(Effect.map(store.subscribe, (subscription) =>
        // `ready` goes out once subscribed: a page that loads its list then misses nothing.
        Stream.make("retry: 1000\nevent: ready\ndata: {}\n\n").pipe(
          Stream.concat(Stream.merge(
            Stream.fromSubscription(subscription).pipe(Stream.map(eventFrame)),
            // Keeps proxies and idle timeouts from closing a quiet stream.
            Stream.tick("15 seconds").pipe(Stream.drop(1), Stream.map(() => ": keep-alive\n\n"))
          ))
        )))
      return HttpServerResponse.stream(frames.pipe(Stream.interruptWhen(Deferred.await(ctx.closing)), Stream.encodeText), {
        contentType: "text/event-stream; charset=utf-8",
        headers: { ...noStore, "x-accel-buffering": "no" }
      })
    })

    const handle = <E>(handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, HttpRouter.RouteContext | HttpServerRequest.HttpServerRequest | HttpServerRequest.ParsedSearchParams>) =>
      handler.pipe(
        Effect.catchCause((cause) =>
          Effect.as(Effect.logError("dev inbox: a request failed", cause), problem(500, "the dev inbox could not answer (see its log)"))
        )
      )

    return HttpRouter.addAll([
      HttpRouter.route("GET", "/api/info", Effect.sync(() => json(ctx.info()))),
      HttpRouter.route("GET", "/api/events", events),
      HttpRouter.route("GET", "/api/messages", handle(list)),
      HttpRouter.route("DELETE", "/api/messages", handle(Effect.map(store.clear, (n) => json({ deleted: n })))),
      HttpRouter.route("GET", "/api/messages/wait", handle(wait)),
      HttpRouter.route("GET", "/api/messages/:id", handle(withParsed(({ summary, email }) => json(Message.detail(summary, email))))),
      HttpRouter.route("PATCH", "/api/messages/:id", handle(update)),
      HttpRouter.route("DELETE", "/api/messages/:id", handle(remove)),
      HttpRouter.route("GET", "/api/messages/:id/raw", handle(raw)),
      HttpRouter.route("GET", "/api/messages/:id/html", handle(html)),
      HttpRouter.route("GET", "/api/messages/:id/parts/:n", handle(part)),
      HttpRouter.route("POST", "/api/messages/:id/release", handle(release))
    ])
  }))
