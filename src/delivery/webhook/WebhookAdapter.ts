/**
 * Delivery to an HTTP(S) endpoint: one signed POST per delivery (`Payload.ts` says what it
 * carries, `Signature.ts` how receivers check it). 2xx is delivered; 4xx is permanent except
 * 408/429; 5xx, timeouts and connection failures are retried (`Retry-After` honoured) — all
 * configurable.
 *
 * Built on `effect/http`'s `HttpClient` with Node's `http`/`https` client underneath (client
 * spans, interruption aborts the request). The request body is streamed from the queue with an
 * explicit `Content-Length`: it is read once to measure and sign it, and once per hop to send
 * it. Redirects are followed here, hop by hop with a fresh request, rather than by the client:
 * a 301/302 must re-POST the same signed payload (the client's rule would turn it into a GET),
 * an https → http hop is refused, and credentials stay with their origin.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Clock, Effect, Layer, Redacted, Stream } from "effect"
import { type HttpClient, type HttpClientError, HttpClientRequest, type HttpClientResponse } from "effect/http"
import { http } from "../../internal/nodeHttp.ts"
import * as TrustedCa from "../../internal/trustedCa.ts"
import * as DA from "../DeliveryAdapter.ts"
import * as Payload from "./Payload.ts"
import * as Signature from "./Signature.ts"

export type Decision = "ok" | "retry" | "reject"

/** A status (`"404"`) or a class (`"4xx"`); an exact status wins over its class. */
export type StatusKey = `${number}` | "1xx" | "2xx" | "3xx" | "4xx" | "5xx"

export interface WebhookOptions extends Payload.PartsOptions {
  /** Adapter name in events and logs (default `webhook`). */
  readonly name?: string
  readonly url: string
  /** HMAC key; without one the request carries no signature headers. */
  readonly secret?: string | Redacted.Redacted<string>
  /** Extra request headers (an `Authorization` for the endpoint, say). */
  readonly headers?: Readonly<Record<string, string>>
  /** Deadline for the whole exchange, redirects included (default 30 s). */
  readonly timeoutMs?: number
  /** Redirects to follow, re-POSTing the same signed payload (default 0: a redirect is not followed). */
  readonly maxRedirects?: number
  /** The raw message: base64 in the JSON (default), a `message/rfc822` form part, or left out. */
  readonly raw?: Payload.RawMode
  /** Overrides of the response mapping, e.g. `{ "404": "retry", "3xx": "reject" }`. */
  readonly responses?: Partial<Readonly<Record<StatusKey, Decision>>>
  /** `ca`: extra trusted CA certificates (PEM), besides Node's default set. */
  readonly tls?: { readonly rejectUnauthorized?: boolean; readonly ca?: string | Buffer }
}

const defaultDecision = (status: number): Decision => {
  if (status >= 200 && status < 300) return "ok"
  if (status === 408 || status === 429) return "retry"
  if (status >= 400 && status < 500) return "reject"
  return "retry"
}

export const decide = (status: number, overrides: WebhookOptions["responses"]): Decision =>
  overrides?.[`${status}`] ?? overrides?.[`${Math.floor(status / 100)}xx` as StatusKey] ?? defaultDecision(status)

/** Epoch ms named by a `Retry-After` value (seconds or an HTTP date), if it is in the future. */
export const retryAfter = (value: string | undefined, now: number): number | undefined => {
  if (value === undefined) return undefined
  const trimmed = value.trim()
  const at = /^\d+$/.test(trimmed) ? now + Number(trimmed) * 1000 : Date.parse(trimmed)
  return Number.isFinite(at) && at > now ? at : undefined
}

/** What an option left out means; the config schema shows these (`check-config`). */
export const defaults = {
  timeoutMs: 30_000,
  maxRedirects: 0,
  raw: "base64",
  maxPartsBytes: Payload.defaultMaxPartsBytes
} as const satisfies Pick<WebhookOptions, "timeoutMs" | "maxRedirects" | "raw" | "maxPartsBytes">

interface Answer {
  readonly status: number
  readonly headers: Readonly<Record<string, string | undefined>>
  /** The start of the response body, for the outcome's reason. */
  readonly excerpt: string
}

const excerptBytes = 512
const redirects = new Set([301, 302, 303, 307, 308])
const credentialHeaders = new Set(["authorization", "cookie", "proxy-authorization"])

const causeText = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** An exchange that produced no answer, as the reason its recipients are retried with. */
const noAnswer = (error: HttpClientError.HttpClientError): DA.DeliveryError => {
  const reason = error.reason
  switch (reason._tag) {
    case "TransportError":
      return new DA.DeliveryError({ reason: { _tag: "Refused", detail: causeText(reason.cause ?? reason.description) }, cause: error })
    case "EncodeError":
      // The request body failed: the message could not be read from the queue.
      return new DA.DeliveryError({ reason: { _tag: "Failed", detail: `reading the message failed: ${causeText(reason.cause)}` }, cause: error })
    case "DecodeError":
      return new DA.DeliveryError({ reason: { _tag: "Refused", detail: `reading the answer failed: ${causeText(reason.cause)}` }, cause: error })
    default:
      return new DA.DeliveryError({ reason: { _tag: "Failed", detail: error.message }, cause: error })
  }
}

/** The start of the answer; reading stops there, and the rest is not worth holding. */
const excerptOf = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.suspend(() => {
    const chunks: Array<Uint8Array> = []
    let size = 0
    return Stream.runForEachWhile(response.stream, (chunk) =>
      Effect.sync(() => {
        chunks.push(chunk)
        size += chunk.length
        return size < excerptBytes
      })).pipe(
        Effect.map(() => Buffer.concat(chunks).toString("utf8").slice(0, excerptBytes).replace(/\s+/g, " ").trim())
      )
  })

export const make = Effect.fnUntraced(function*(options: WebhookOptions) {
  const name = options.name ?? "webhook"
  const target = new URL(options.url)
  const mode = options.raw ?? defaults.raw
  const timeoutMs = options.timeoutMs ?? defaults.timeoutMs
  const maxRedirects = options.maxRedirects ?? defaults.maxRedirects
  const secret = options.secret === undefined ? undefined : typeof options.secret === "string" ? options.secret : Redacted.value(options.secret)
  // Keep-alive sockets are ours: closing the adapter's scope destroys the agents and their sockets.
  const agent = yield* NodeHttpClient.makeAgent({
    keepAlive: true,
    ...(options.tls?.rejectUnauthorized !== undefined ? { rejectUnauthorized: options.tls.rejectUnauthorized } : {}),
    // Added to Node's default CAs, not instead of them (see `trustedCa.ts`).
    ...(options.tls?.ca !== undefined ? { ca: TrustedCa.withDefaults(options.tls.ca) } : {})
  })
  const client: HttpClient.HttpClient = yield* NodeHttpClient.makeNodeHttp.pipe(Effect.provideService(NodeHttpClient.HttpAgent, agent))

  /** One POST, as a fresh request (the body is read from the queue again). */
  const post = (url: URL, headers: Readonly<Record<string, string>>, body: Payload.RequestBody, length: number) =>
    client.execute(
      HttpClientRequest.post(url.href, { headers }).pipe(
        HttpClientRequest.bodyStream(body.stream, { contentType: body.contentType, contentLength: length })
      )
    ).pipe(
      Effect.flatMap((response) =>
        Effect.map(excerptOf(response), (excerpt): Answer => ({ status: response.status, headers: response.headers, excerpt }))
      ),
      Effect.mapError(noAnswer)
    )

  const exchange = (delivery: DA.Delivery, body: Payload.RequestBody, length: number, headers: Readonly<Record<string, string>>) =>
    Effect.gen(function*() {
      let url = target
      let sendHeaders = headers
      for (let hop = 0; ; hop++) {
        const answer = yield* post(url, sendHeaders, body, length)
        const location = answer.headers["location"]
        if (!redirects.has(answer.status) || location === undefined || hop >= maxRedirects || !URL.canParse(location, url.href)) {
          return { answer, url }
        }
        const next = new URL(location, url)
        if (url.protocol === "https:" && next.protocol !== "https:") {
          return yield* new DA.DeliveryError({
            reason: { _tag: "Refused", detail: `refused to follow a redirect from ${url.href} to ${next.href} (https to plain http)` }
          })
        }
        if (next.origin !== url.origin) {
          // The payload and its signature may go on; credentials meant for the first origin may not.
          sendHeaders = Object.fromEntries(Object.entries(sendHeaders).filter(([k]) => !credentialHeaders.has(k.toLowerCase())))
        }
        yield* Effect.logDebug(`webhook for ${delivery.id} redirected (${answer.status}) to ${next.href}`)
        url = next
      }
    })

  /** One pass over the body: its exact length, and its signature when there is a secret. */
  const measure = (body: Payload.RequestBody, timestamp: string) =>
    Effect.suspend(() => {
      const signer = secret === undefined ? undefined : Signature.signer(secret, timestamp)
      let length = 0
      return Stream.runForEachArray(body.stream, (chunks) =>
        Effect.sync(() => {
          for (const chunk of chunks) {
            signer?.update(chunk)
            length += chunk.length
          }
        })).pipe(Effect.map(() => ({ length, signature: signer?.digest() })))
    })

  const deliver = Effect.fn("WebhookAdapter.deliver")(function*(delivery: DA.Delivery) {
    const timestamp = String(Math.floor((yield* Clock.currentTimeMillis) / 1000))
    const readFailed = (e: { readonly message: string }) =>
      new DA.DeliveryError({ reason: { _tag: "Failed", detail: `reading message ${delivery.id} failed: ${e.message}` }, cause: e })
    const payload = yield* Payload.build(delivery, options).pipe(Effect.mapError(readFailed))
    const body = Payload.requestBody(delivery, payload, mode)
    const measured = yield* measure(body, timestamp).pipe(Effect.mapError(readFailed))
    const headers: Record<string, string> = {
      "user-agent": "incoming-smtp",
      ...options.headers,
      [Signature.headerNames.idempotencyKey]: Signature.idempotencyKey(delivery),
      [Signature.headerNames.timestamp]: timestamp,
      ...(measured.signature !== undefined ? { [Signature.headerNames.signature]: measured.signature } : {})
    }
    const result = yield* exchange(delivery, body, measured.length, headers).pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(new DA.DeliveryError({ reason: { _tag: "Timeout", detail: `no answer within ${timeoutMs} ms` } }))
      }),
      Effect.result
    )
    if (result._tag === "Failure") {
      const reason = `webhook ${target.href}: ${result.failure.message}`
      yield* Effect.logWarning(reason)
      return DA.all(delivery, (rcpt) => DA.retry(rcpt, reason))
    }
    const { answer, url } = result.success
    const decision = decide(answer.status, options.responses)
    const statusText = http.STATUS_CODES[answer.status]
    const summary = `webhook ${url.href} answered ${answer.status}${statusText !== undefined ? ` ${statusText}` : ""}`
    const detail = redirects.has(answer.status)
      ? `${summary} (to ${String(answer.headers["location"])}; ${maxRedirects === 0 ? "redirects are not followed" : `more than ${maxRedirects} redirects`})`
      : answer.excerpt.length > 0 ? `${summary}: ${answer.excerpt}` : summary
    switch (decision) {
      case "ok":
        return DA.all(delivery, (rcpt) => DA.ok(rcpt, summary))
      case "reject":
        return DA.all(delivery, (rcpt) => DA.reject(rcpt, detail))
      case "retry": {
        const at = retryAfter(answer.headers["retry-after"], yield* Clock.currentTimeMillis)
        return DA.all(delivery, (rcpt) => DA.retry(rcpt, detail, at))
      }
    }
  }, Effect.annotateLogs({ adapter: name }))

  return DA.DeliveryAdapter.of({ name, deliver })
})

export const layer = (options: WebhookOptions): Layer.Layer<DA.DeliveryAdapter> => Layer.effect(DA.DeliveryAdapter, make(options))
