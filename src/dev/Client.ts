/**
 * A typed client for a dev inbox's JSON API — the one `DevInbox.layer` in
 * `incoming-smtp/testing` provides, or any running `incoming dev` (`InboxClient.make(url)`).
 * App tests send mail through their own code, then `wait` for it instead of sleeping:
 *
 * ```ts
 * const message = yield* client.wait("to:alice@example.com subject:Welcome", { timeout: "5 seconds" })
 * assert.include(message.text, "Confirm your address")
 * ```
 *
 * Answers are decoded with the API's Schemas (`Message.ts`); a failure says what went wrong
 * (`Timeout` for a `wait` that saw nothing, `NotFound`, the HTTP status, or the transport).
 */
import { Data, Duration, Effect, Redacted, Schema } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest, type HttpClientResponse } from "effect/http"
import * as Message from "./Message.ts"

export const ListResult = Schema.Struct({
  total: Schema.Number,
  unread: Schema.Number,
  messages: Schema.Array(Message.MessageSummary)
})
export type ListResult = typeof ListResult.Type

const Released = Schema.Struct({ recipients: Schema.Array(Schema.String), replies: Schema.Array(Schema.String) })
const Deleted = Schema.Struct({ deleted: Schema.Number })

export type InboxClientErrorReason =
  | { readonly _tag: "Timeout"; readonly query: string; readonly timeoutMs: number }
  | { readonly _tag: "NotFound"; readonly path: string }
  | { readonly _tag: "Http"; readonly status: number; readonly detail: string }
  | { readonly _tag: "Transport"; readonly detail: string }
  | { readonly _tag: "Decode"; readonly detail: string }

export class InboxClientError extends Data.TaggedError("InboxClientError")<{
  readonly reason: InboxClientErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    switch (r._tag) {
      case "Timeout":
        return `no message matching "${r.query}" arrived within ${r.timeoutMs} ms`
      case "NotFound":
        return `not found: ${r.path}`
      case "Http":
        return `dev inbox answered ${r.status}: ${r.detail}`
      case "Transport":
        return `dev inbox unreachable: ${r.detail}`
      case "Decode":
        return `unexpected answer from the dev inbox: ${r.detail}`
    }
  }
}

export interface InboxClient {
  readonly url: string
  /** Summaries, newest first (the page's search syntax). */
  readonly list: (
    query?: string,
    options?: { readonly limit?: number; readonly offset?: number; readonly since?: Date | number }
  ) => Effect.Effect<ListResult, InboxClientError>
  readonly get: (id: string) => Effect.Effect<Message.MessageDetail, InboxClientError>
  /**
   * The newest message matching `query` (received after `since`, when given), as soon as one
   * is stored; fails with reason `Timeout` when none arrives within `timeout` (default 10 s).
   */
  readonly wait: (
    query?: string,
    options?: { readonly timeout?: Duration.Input; readonly since?: Date | number }
  ) => Effect.Effect<Message.MessageDetail, InboxClientError>
  /** The message as stored. */
  readonly raw: (id: string) => Effect.Effect<Uint8Array, InboxClientError>
  /** Attachment `n`'s bytes. */
  readonly part: (id: string, n: number) => Effect.Effect<Uint8Array, InboxClientError>
  readonly setUnread: (id: string, unread: boolean) => Effect.Effect<Message.MessageSummary, InboxClientError>
  readonly remove: (id: string) => Effect.Effect<void, InboxClientError>
  /** Deletes every message; answers how many there were. */
  readonly clear: Effect.Effect<number, InboxClientError>
  readonly release: (id: string, to: ReadonlyArray<string>) => Effect.Effect<typeof Released.Type, InboxClientError>
}

export interface ClientOptions {
  readonly basicAuth?: { readonly user: string; readonly password: string | Redacted.Redacted<string> } | undefined
}

const since = (s: Date | number | undefined) => (s === undefined ? {} : { since: String(typeof s === "number" ? s : s.getTime()) })

export const make = (url: string, options: ClientOptions = {}): InboxClient => {
  const base = url.replace(/\/+$/, "")
  const auth = options.basicAuth
  const request = (r: HttpClientRequest.HttpClientRequest) =>
    auth === undefined ? r : HttpClientRequest.basicAuth(r, auth.user, typeof auth.password === "string" ? auth.password : Redacted.value(auth.password))

  /** Runs a request; 2xx answers go to `onOk`, the rest become `InboxClientError`. */
  const run = <A>(
    req: HttpClientRequest.HttpClientRequest,
    onOk: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, InboxClientError>,
    onNotFound?: (detail: string) => InboxClientError
  ): Effect.Effect<A, InboxClientError> =>
    Effect.gen(function*() {
      const client = yield* HttpClient.HttpClient
      const response = yield* client.execute(request(req)).pipe(
        Effect.mapError((cause) => new InboxClientError({ reason: { _tag: "Transport", detail: cause.message }, cause }))
      )
      if (response.status >= 200 && response.status < 300) return yield* onOk(response)
      const text = yield* Effect.orElseSucceed(response.text, () => "")
      const detail = (() => {
        try {
          const parsed: unknown = JSON.parse(text)
          return typeof parsed === "object" && parsed !== null && "error" in parsed ? String(parsed.error) : text
        } catch {
          return text
        }
      })()
      if (response.status === 404) return yield* Effect.fail(onNotFound?.(detail) ?? new InboxClientError({ reason: { _tag: "NotFound", path: new URL(req.url).pathname } }))
      return yield* Effect.fail(new InboxClientError({ reason: { _tag: "Http", status: response.status, detail } }))
    }).pipe(Effect.provide(FetchHttpClient.layer))

  const decode = <S extends Schema.Decoder<unknown>>(schema: S) => (response: HttpClientResponse.HttpClientResponse) =>
    response.json.pipe(
      Effect.flatMap(Schema.decodeUnknownEffect(schema)),
      Effect.mapError((cause) => new InboxClientError({ reason: { _tag: "Decode", detail: cause.message }, cause }))
    )

  const bytes = (response: HttpClientResponse.HttpClientResponse) =>
    Effect.map(
      Effect.mapError(response.arrayBuffer, (cause) => new InboxClientError({ reason: { _tag: "Transport", detail: cause.message }, cause })),
      (b) => new Uint8Array(b)
    )

  const messageUrl = (id: string) => `${base}/api/messages/${encodeURIComponent(id)}`

  return {
    url: base,
    list: (query = "", o = {}) =>
      run(
        HttpClientRequest.get(`${base}/api/messages`, {
          urlParams: { query, limit: String(o.limit ?? 50), offset: String(o.offset ?? 0), ...since(o.since) }
        }),
        decode(ListResult)
      ),
    get: (id) => run(HttpClientRequest.get(messageUrl(id)), decode(Message.MessageDetail)),
    wait: (query = "", o = {}) => {
      const timeoutMs = Duration.toMillis(Duration.fromInputUnsafe(o.timeout ?? "10 seconds"))
      return run(
        HttpClientRequest.get(`${base}/api/messages/wait`, { urlParams: { query, timeout: String(timeoutMs), ...since(o.since) } }),
        decode(Message.MessageDetail),
        () => new InboxClientError({ reason: { _tag: "Timeout", query, timeoutMs } })
      )
    },
    raw: (id) => run(HttpClientRequest.get(`${messageUrl(id)}/raw`), bytes),
    part: (id, n) => run(HttpClientRequest.get(`${messageUrl(id)}/parts/${n}`), bytes),
    setUnread: (id, unread) => run(HttpClientRequest.patch(messageUrl(id)).pipe(HttpClientRequest.bodyJsonUnsafe({ unread })), decode(Message.MessageSummary)),
    remove: (id) => run(HttpClientRequest.delete(messageUrl(id)), () => Effect.void),
    clear: run(HttpClientRequest.delete(`${base}/api/messages`), (r) => Effect.map(decode(Deleted)(r), (d) => d.deleted)),
    release: (id, to) => run(HttpClientRequest.post(`${messageUrl(id)}/release`).pipe(HttpClientRequest.bodyJsonUnsafe({ to })), decode(Released))
  }
}
