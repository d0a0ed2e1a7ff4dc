/**
 * Delivery to an HTTP(S) endpoint: one signed POST per delivery, carrying the envelope, the
 * decoded header fields, optionally the text/HTML bodies, and the raw message (base64 inside the
 * JSON, or as a `message/rfc822` part of a multipart/form-data body).
 *
 * Receivers authenticate us with an HMAC-SHA256 over `timestamp + "." + body`
 * (`X-Incoming-Timestamp`, `X-Incoming-Signature: sha256=<hex>`) and de-duplicate retries with
 * `Idempotency-Key: <message id>/<hash of the recipient set>`, which stays the same for every
 * attempt at the same recipients. 2xx is delivered; 4xx is permanent except 408/429; 5xx,
 * timeouts and connection failures are retried (`Retry-After` honoured) — all configurable.
 *
 * Built on `node:http`/`node:https` rather than `fetch`: the body is generated twice from the
 * queue's re-readable stream (once to sign and measure it, once to send it) so a large message
 * is never held in memory, and a redirect can be re-POSTed with a fresh body stream, which
 * `fetch` cannot do with a streamed body; we also get a real `Content-Length` and plain
 * socket-level errors to report.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto"
import * as http from "node:http"
import * as https from "node:https"
import type { Readable } from "node:stream"
import { Clock, Data, Effect, Layer, Redacted } from "effect"
import * as DA from "./DeliveryAdapter.ts"
import * as Mime from "./internal/mime.ts"

export type Decision = "ok" | "retry" | "reject"

/** A status (`"404"`) or a class (`"4xx"`); an exact status wins over its class. */
export type StatusKey = `${number}` | "1xx" | "2xx" | "3xx" | "4xx" | "5xx"

export interface WebhookOptions {
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
  readonly raw?: "base64" | "multipart" | "omit"
  /** Decoded bodies to include: the first text/plain and text/html parts that are not attachments. */
  readonly parts?: { readonly text?: boolean; readonly html?: boolean }
  /** Messages larger than this are not parsed for `parts` (`partsOmitted: true`); default 10 MiB. */
  readonly maxPartsBytes?: number
  /** Overrides of the response mapping, e.g. `{ "404": "retry", "3xx": "reject" }`. */
  readonly responses?: Partial<Readonly<Record<StatusKey, Decision>>>
  readonly tls?: { readonly rejectUnauthorized?: boolean; readonly ca?: string | Buffer }
}

export const headerNames = {
  timestamp: "X-Incoming-Timestamp",
  signature: "X-Incoming-Signature",
  idempotencyKey: "Idempotency-Key"
} as const

/** The JSON document posted (the `payload` form field in multipart mode). */
export interface WebhookPayload {
  readonly id: string
  readonly receivedAt: string
  /** Bytes of the stored message (our `Received:` header included). */
  readonly size: number
  /** The highest attempt number among the recipients of this delivery (1 on the first try). */
  readonly attempt: number
  readonly envelope: {
    readonly from: string
    readonly to: ReadonlyArray<string>
    readonly helo: string
    readonly clientAddress: string
    readonly secure: boolean
    readonly listener: string
    readonly authenticatedUser: string | null
  }
  readonly subject: string | null
  readonly messageId: string | null
  readonly headers: ReadonlyArray<Mime.Header>
  readonly authenticationResults: ReadonlyArray<string>
  readonly text?: string
  readonly html?: string
  readonly partsOmitted?: true
  /** Base64 of the stored message, in `raw: "base64"` mode. */
  readonly raw?: string
}

/** `sha256=<hex>` of the HMAC-SHA256 over `timestamp + "." + body`. */
export const signature = (secret: string, timestamp: string, body: string | Uint8Array): string =>
  `sha256=${createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex")}`

/**
 * The receiver's check: the signature matches and the timestamp is within `toleranceSec` of
 * `nowSec` (replays of old requests are refused). Constant-time comparison.
 */
export const verify = (input: {
  readonly secret: string
  readonly timestamp: string
  readonly signature: string
  readonly body: string | Uint8Array
  readonly nowSec?: number
  readonly toleranceSec?: number
}): boolean => {
  const ts = Number(input.timestamp)
  if (!Number.isInteger(ts)) return false
  const now = input.nowSec ?? Math.floor(Date.now() / 1000)
  if (Math.abs(now - ts) > (input.toleranceSec ?? 300)) return false
  const expected = Buffer.from(signature(input.secret, input.timestamp, input.body))
  const given = Buffer.from(input.signature)
  return expected.length === given.length && timingSafeEqual(expected, given)
}

/** `<message id>/<hash of the sorted recipients>`: the same for every attempt at the same recipients. */
export const idempotencyKey = (delivery: Pick<DA.Delivery, "id" | "recipients">): string => {
  const rcpts = delivery.recipients.map((r) => r.rcpt.toLowerCase()).sort().join("\n")
  return `${delivery.id}/${createHash("sha256").update(rcpts).digest("hex").slice(0, 32)}`
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

const toBuffer = (chunk: unknown): Buffer =>
  Buffer.isBuffer(chunk) ? chunk : typeof chunk === "string" ? Buffer.from(chunk, "utf8") : Buffer.from(chunk as Uint8Array)

/** Base64 of a stream, chunk by chunk (3-byte groups carried across chunk edges). */
async function* base64Of(stream: Readable): AsyncGenerator<Buffer> {
  let carry: Buffer = Buffer.alloc(0)
  for await (const chunk of stream) {
    const buf: Buffer = carry.length > 0 ? Buffer.concat([carry, toBuffer(chunk)]) : toBuffer(chunk)
    const whole = buf.length - (buf.length % 3)
    if (whole > 0) yield Buffer.from(buf.subarray(0, whole).toString("base64"), "latin1")
    carry = Buffer.from(buf.subarray(whole))
  }
  if (carry.length > 0) yield Buffer.from(carry.toString("base64"), "latin1")
}

async function* raw(stream: Readable): AsyncGenerator<Buffer> {
  for await (const chunk of stream) yield toBuffer(chunk)
}

/** The header section of the message, read from the start of its stream (at most `max` bytes). */
const readHead = async (stream: Readable, max: number): Promise<Buffer> => {
  const parts: Array<Buffer> = []
  let length = 0
  try {
    for await (const chunk of stream) {
      const buf = toBuffer(chunk)
      parts.push(buf)
      length += buf.length
      const all = Buffer.concat(parts)
      const boundary = Mime.headerBoundary(all)
      if (boundary !== undefined) return all.subarray(0, boundary.headerLength)
      if (length >= max) return all.subarray(0, max)
    }
    return Buffer.concat(parts)
  } finally {
    stream.destroy()
  }
}

const readAll = async (stream: Readable): Promise<Buffer> => {
  const parts: Array<Buffer> = []
  for await (const chunk of stream) parts.push(toBuffer(chunk))
  return Buffer.concat(parts)
}

const maxHeaderBytes = 1024 * 1024

interface Body {
  readonly contentType: string
  /** A fresh copy of the request body each call (the message is re-read from the queue). */
  readonly chunks: () => AsyncIterable<Buffer>
}

const buildPayload = async (delivery: DA.Delivery, options: WebhookOptions): Promise<WebhookPayload> => {
  const wantText = options.parts?.text === true
  const wantHtml = options.parts?.html === true
  const parse = (wantText || wantHtml) && delivery.body.size <= (options.maxPartsBytes ?? defaults.maxPartsBytes)
  const message = parse ? await readAll(delivery.body.stream()) : await readHead(delivery.body.stream(), maxHeaderBytes)
  const boundary = Mime.headerBoundary(message)
  const headerBytes = boundary === undefined ? message : message.subarray(0, boundary.headerLength)
  const headers = Mime.parseHeaders(Mime.headerText(headerBytes)).map((h) => ({ name: h.name, value: Mime.decodeWords(h.value) }))
  const first = (name: string) => headers.find((h) => h.name.toLowerCase() === name)?.value ?? null
  const parts = parse ? Mime.extractParts(message) : {}
  const payload: WebhookPayload = {
    id: delivery.id,
    receivedAt: new Date(delivery.receivedAt).toISOString(),
    size: delivery.body.size,
    attempt: Math.max(1, ...delivery.recipients.map((r) => r.attempt)),
    envelope: {
      from: delivery.envelope.mailFrom,
      to: delivery.recipients.map((r) => r.rcpt),
      helo: delivery.envelope.helo,
      clientAddress: delivery.envelope.clientAddress,
      secure: delivery.envelope.secure,
      listener: delivery.envelope.listener,
      authenticatedUser: delivery.envelope.authenticatedUser ?? null
    },
    subject: first("subject"),
    messageId: first("message-id"),
    headers,
    authenticationResults: headers.filter((h) => h.name.toLowerCase() === "authentication-results").map((h) => h.value),
    ...(wantText && parts.text !== undefined ? { text: parts.text } : {}),
    ...(wantHtml && parts.html !== undefined ? { html: parts.html } : {}),
    ...((wantText || wantHtml) && !parse ? { partsOmitted: true as const } : {})
  }
  return payload
}

const bodyFor = (delivery: DA.Delivery, payload: WebhookPayload, mode: NonNullable<WebhookOptions["raw"]>): Body => {
  const json = JSON.stringify(payload)
  if (mode === "omit") {
    const bytes = Buffer.from(json, "utf8")
    return { contentType: "application/json", chunks: async function*() { yield bytes } }
  }
  if (mode === "base64") {
    // The raw message is spliced in as the last member, streamed as base64.
    const prefix = Buffer.from(`${json.slice(0, -1)},"raw":"`, "utf8")
    const suffix = Buffer.from("\"}", "utf8")
    return {
      contentType: "application/json",
      chunks: async function*() {
        yield prefix
        yield* base64Of(delivery.body.stream())
        yield suffix
      }
    }
  }
  // 128 random bits: the boundary cannot plausibly occur in the message.
  const boundary = `incoming-${randomBytes(16).toString("hex")}`
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="payload"\r\nContent-Type: application/json\r\n\r\n${json}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="message"; filename="${delivery.id}.eml"\r\n` +
      `Content-Type: message/rfc822\r\n\r\n`,
    "utf8"
  )
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, "utf8")
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    chunks: async function*() {
      yield head
      yield* raw(delivery.body.stream())
      yield tail
    }
  }
}

/** One pass over the body: its exact length, and its signature when there is a secret. */
const measure = async (body: Body, secret: string | undefined, timestamp: string) => {
  const hmac = secret === undefined ? undefined : createHmac("sha256", secret).update(`${timestamp}.`)
  let length = 0
  for await (const chunk of body.chunks()) {
    hmac?.update(chunk)
    length += chunk.length
  }
  return { length, signature: hmac === undefined ? undefined : `sha256=${hmac.digest("hex")}` }
}

interface HttpAnswer {
  readonly status: number
  readonly statusText: string
  readonly headers: http.IncomingHttpHeaders
  /** The start of the response body, for the outcome's reason. */
  readonly excerpt: string
}

/** The exchange did not produce an answer: connection refused or reset, TLS, timeout, a refused redirect. */
class TransportError extends Data.TaggedError("WebhookTransportError")<{ readonly reason: string }> {}

const excerptBytes = 512

/** Resolves when the request can take more (or is gone: the loop then stops on its own). */
const drained = (request: http.ClientRequest) =>
  new Promise<void>((resolve) => {
    const done = () => {
      request.off("drain", done)
      request.off("close", done)
      resolve()
    }
    request.on("drain", done)
    request.on("close", done)
  })

const post = (url: URL, headers: http.OutgoingHttpHeaders, body: Body, agents: Agents) =>
  Effect.callback<HttpAnswer, TransportError>((resume) => {
    const secure = url.protocol === "https:"
    const request = (secure ? https : http).request(url, { method: "POST", headers, agent: secure ? agents.https : agents.http })
    let answered = false
    const fail = (reason: string) => {
      if (answered) return
      answered = true
      resume(Effect.fail(new TransportError({ reason })))
    }
    request.on("error", (e) => fail(e.message))
    request.on("response", (response) => {
      const chunks: Array<Buffer> = []
      let size = 0
      const done = () => {
        if (answered) return
        answered = true
        resume(Effect.succeed({
          status: response.statusCode ?? 0,
          statusText: response.statusMessage ?? "",
          headers: response.headers,
          excerpt: Buffer.concat(chunks).toString("utf8").slice(0, excerptBytes).replace(/\s+/g, " ").trim()
        }))
      }
      response.on("data", (chunk: Buffer) => {
        chunks.push(chunk)
        size += chunk.length
        // We only quote the start of the answer; the rest is not worth holding.
        if (size >= excerptBytes) {
          done()
          response.destroy()
        }
      })
      response.on("end", done)
      response.on("error", (e) => fail(e.message))
      response.on("close", done)
    })
    const source = body.chunks()
    void (async () => {
      try {
        for await (const chunk of source) {
          // Answered before we finished sending (a 413, say): the rest is not wanted, and the
          // half-sent request cannot go back to the keep-alive pool.
          if (answered || request.destroyed) return void request.destroy()
          if (!request.write(chunk)) await drained(request)
        }
        request.end()
      } catch (e) {
        request.destroy()
        fail(`reading the message failed: ${e instanceof Error ? e.message : String(e)}`)
      }
    })()
    return Effect.sync(() => request.destroy())
  })

interface Agents {
  readonly http: http.Agent
  readonly https: https.Agent
}

const redirects = new Set([301, 302, 303, 307, 308])
const credentialHeaders = new Set(["authorization", "cookie", "proxy-authorization"])

/** What an option left out means; the config schema shows these (`check-config`). */
export const defaults = {
  timeoutMs: 30_000,
  maxRedirects: 0,
  raw: "base64",
  maxPartsBytes: 10 * 1024 * 1024
} as const satisfies Pick<WebhookOptions, "timeoutMs" | "maxRedirects" | "raw" | "maxPartsBytes">

export const make = Effect.fnUntraced(function*(options: WebhookOptions) {
  const name = options.name ?? "webhook"
  const target = new URL(options.url)
  const mode = options.raw ?? defaults.raw
  const timeoutMs = options.timeoutMs ?? defaults.timeoutMs
  const maxRedirects = options.maxRedirects ?? defaults.maxRedirects
  const secret = options.secret === undefined ? undefined : typeof options.secret === "string" ? options.secret : Redacted.value(options.secret)
  // Keep-alive sockets are ours: closing the adapter's scope closes them (no stray sockets in tests).
  const agents: Agents = yield* Effect.acquireRelease(
    Effect.sync(() => ({
      http: new http.Agent({ keepAlive: true }),
      https: new https.Agent({
        keepAlive: true,
        ...(options.tls?.rejectUnauthorized !== undefined ? { rejectUnauthorized: options.tls.rejectUnauthorized } : {}),
        ...(options.tls?.ca !== undefined ? { ca: options.tls.ca } : {})
      })
    })),
    (a) => Effect.sync(() => {
      a.http.destroy()
      a.https.destroy()
    })
  )

  const exchange = (delivery: DA.Delivery, body: Body, headers: http.OutgoingHttpHeaders) =>
    Effect.gen(function*() {
      let url = target
      let sendHeaders = headers
      for (let hop = 0; ; hop++) {
        const answer = yield* post(url, sendHeaders, body, agents)
        const location = answer.headers.location
        if (!redirects.has(answer.status) || location === undefined || hop >= maxRedirects) return { answer, url }
        const next = new URL(location, url)
        if (url.protocol === "https:" && next.protocol !== "https:") {
          return yield* Effect.fail(new TransportError({ reason: `refused to follow a redirect from ${url.href} to ${next.href} (https to plain http)` }))
        }
        if (next.origin !== url.origin) {
          // The payload and its signature may go on; credentials meant for the first origin may not.
          sendHeaders = Object.fromEntries(Object.entries(sendHeaders).filter(([k]) => !credentialHeaders.has(k.toLowerCase())))
        }
        yield* Effect.logDebug(`webhook for ${delivery.id} redirected (${answer.status}) to ${next.href}`)
        url = next
      }
    })

  const deliver = Effect.fn("WebhookAdapter.deliver")(function*(delivery: DA.Delivery) {
    const now = yield* Clock.currentTimeMillis
    const timestamp = String(Math.floor(now / 1000))
    const readFailed = (cause: unknown) =>
      new DA.DeliveryError({ reason: `reading message ${delivery.id} failed: ${cause instanceof Error ? cause.message : String(cause)}`, retryable: true, cause })
    const payload = yield* Effect.tryPromise({ try: () => buildPayload(delivery, options), catch: readFailed })
    const body = bodyFor(delivery, payload, mode)
    const measured = yield* Effect.tryPromise({ try: () => measure(body, secret, timestamp), catch: readFailed })
    const headers: http.OutgoingHttpHeaders = {
      "user-agent": "incoming-smtp",
      ...options.headers,
      "content-type": body.contentType,
      "content-length": measured.length,
      [headerNames.idempotencyKey]: idempotencyKey(delivery),
      [headerNames.timestamp]: timestamp,
      ...(measured.signature !== undefined ? { [headerNames.signature]: measured.signature } : {})
    }
    const result = yield* exchange(delivery, body, headers).pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(new TransportError({ reason: `no answer within ${timeoutMs} ms` }))
      }),
      Effect.result
    )
    if (result._tag === "Failure") {
      const reason = `webhook ${target.href}: ${result.failure.reason}`
      yield* Effect.logWarning(reason)
      return DA.all(delivery, (rcpt) => DA.retry(rcpt, reason))
    }
    const { answer, url } = result.success
    const decision = decide(answer.status, options.responses)
    const summary = `webhook ${url.href} answered ${answer.status}${answer.statusText ? ` ${answer.statusText}` : ""}`
    const detail = redirects.has(answer.status)
      ? `${summary} (to ${String(answer.headers.location)}; ${maxRedirects === 0 ? "redirects are not followed" : `more than ${maxRedirects} redirects`})`
      : answer.excerpt.length > 0 ? `${summary}: ${answer.excerpt}` : summary
    switch (decision) {
      case "ok":
        return DA.all(delivery, (rcpt) => DA.ok(rcpt, summary))
      case "reject":
        return DA.all(delivery, (rcpt) => DA.reject(rcpt, detail))
      case "retry": {
        const header = answer.headers["retry-after"]
        const at = retryAfter(Array.isArray(header) ? header[0] : header, yield* Clock.currentTimeMillis)
        return DA.all(delivery, (rcpt) => DA.retry(rcpt, detail, at))
      }
    }
  }, Effect.annotateLogs({ adapter: name }))

  return DA.DeliveryAdapter.of({ name, deliver })
})

export const layer = (options: WebhookOptions): Layer.Layer<DA.DeliveryAdapter> => Layer.effect(DA.DeliveryAdapter, make(options))
