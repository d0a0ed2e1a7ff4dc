/**
 * What a webhook POST carries: the JSON document describing a delivery (envelope, decoded
 * header fields, optionally the text/HTML bodies) and the request body around it, with the raw
 * message streamed in as base64 inside the JSON or as a `message/rfc822` part of a
 * multipart/form-data body.
 *
 * Only the header section is read unless bodies are asked for: then the whole message, up to
 * `maxPartsBytes`, is handed to postal-mime. The request body is a `Stream` that reads the
 * message from the queue each time it runs, so it can be measured and signed in one pass and
 * sent in another (and again after a redirect) without the message being held in memory.
 */
import type { Authentication } from "../../protocol/AuthenticationResults.ts"
import type { Quarantine } from "../../protocol/Envelope.ts"
import { randomBytes } from "node:crypto"
import PostalMime from "postal-mime"
import { Effect, Option, Stream } from "effect"
import type * as Dsn from "../../protocol/Dsn.ts"
import type { MailQueueError } from "../../queue/MailQueueError.ts"
import type * as DA from "../DeliveryAdapter.ts"
import * as Headers from "./internal/headers.ts"

/** The raw message: base64 in the JSON (default), a `message/rfc822` form part, or left out. */
export type RawMode = "base64" | "multipart" | "omit"

export interface PartsOptions {
  /** Decoded bodies to include: the text/plain and text/html of the message, attachments left out. */
  readonly parts?: { readonly text?: boolean; readonly html?: boolean }
  /** Messages larger than this are not parsed for `parts` (`partsOmitted: true`); default 10 MiB. */
  readonly maxPartsBytes?: number
}

export const defaultMaxPartsBytes = 10 * 1024 * 1024

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
    /** MAIL carried SMTPUTF8 (RFC 6531). */
    readonly smtpUtf8: boolean
    /** RFC 3461 parameters, or null when the client gave none for this delivery. */
    readonly dsn: WebhookDsn | null
  }
  readonly subject: string | null
  readonly messageId: string | null
  readonly headers: ReadonlyArray<{ readonly name: string; readonly value: string }>
  /**
   * The values of every `Authentication-Results:` field, top first: ours (when the
   * authentication rules ran) and those of hosts before us, which only they can vouch for.
   */
  readonly authenticationResults: ReadonlyArray<string>
  /** Our authentication results, typed (null when no authentication rule ran). */
  readonly authentication: Authentication | null
  /** Set when a rule quarantined the message. */
  readonly quarantine: Quarantine | null
  readonly text?: string
  readonly html?: string
  /** Bodies were asked for but the message is over `maxPartsBytes`, or could not be parsed. */
  readonly partsOmitted?: true
  /** Base64 of the stored message, in `raw: "base64"` mode. */
  readonly raw?: string
}

/** The DSN parameters in a payload: MAIL's, and those of this delivery's recipients that carried any. */
export interface WebhookDsn {
  readonly ret: Dsn.Ret | null
  readonly envid: string | null
  readonly recipients: { readonly [rcpt: string]: { readonly notify: ReadonlyArray<Dsn.Notify> | null; readonly orcpt: { readonly type: string; readonly address: string } | null } }
}

const dsnOf = (delivery: DA.Delivery): WebhookDsn | null => {
  const recipients: Record<string, WebhookDsn["recipients"][string]> = {}
  for (const { rcpt } of delivery.recipients) {
    const r = delivery.envelope.recipientDsn?.[rcpt]
    if (r !== undefined) recipients[rcpt] = { notify: r.notify ?? null, orcpt: r.orcpt ?? null }
  }
  const mail = delivery.envelope.dsn
  if (mail === undefined && Object.keys(recipients).length === 0) return null
  return { ret: mail?.ret ?? null, envid: mail?.envid ?? null, recipients }
}

/** A header section larger than this is cut here (a broken or hostile message, not mail). */
const maxHeaderBytes = 1024 * 1024

/** The header section from the start of the message: reading stops at the blank line. */
const readHead = <E>(body: Stream.Stream<Uint8Array, E>): Effect.Effect<Uint8Array, E> =>
  Effect.suspend(() => {
    let head: Uint8Array = new Uint8Array(0)
    return Stream.runForEachWhile(body, (chunk) =>
      Effect.sync(() => {
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
        const boundary = Headers.headerBoundary(head)
        if (boundary !== undefined) head = head.subarray(0, boundary.headerLength)
        else if (head.length >= maxHeaderBytes) head = head.subarray(0, maxHeaderBytes)
        else return true
        return false
      })).pipe(Effect.map(() => head))
  })

/**
 * The text and HTML bodies, as postal-mime assembles them (inline parts in order, attachments
 * and attached messages left out); none when the message cannot be parsed within its limits.
 */
const partsOf = (message: Uint8Array) =>
  Effect.tryPromise(() => PostalMime.parse(message, { forceRfc822Attachments: true })).pipe(
    Effect.map((email) => ({ text: email.text, html: email.html })),
    Effect.tapError((e) => Effect.logDebug(`webhook payload: the message's parts could not be read: ${e.message}`)),
    Effect.option
  )

export const build = (delivery: DA.Delivery, options: PartsOptions): Effect.Effect<WebhookPayload, MailQueueError> =>
  Effect.gen(function*() {
    const wantText = options.parts?.text === true
    const wantHtml = options.parts?.html === true
    const parse = (wantText || wantHtml) && delivery.size <= (options.maxPartsBytes ?? defaultMaxPartsBytes)
    const message = parse ? yield* Stream.mkUint8Array(delivery.body) : yield* readHead(delivery.body)
    const boundary = Headers.headerBoundary(message)
    const headers = Headers.decodedFields(boundary === undefined ? message : message.subarray(0, boundary.headerLength))
    const first = (name: string) => headers.find((h) => h.name.toLowerCase() === name)?.value ?? null
    const parts = parse ? yield* partsOf(message) : Option.none()
    const found = Option.getOrUndefined(parts)
    return {
      id: delivery.id,
      receivedAt: new Date(delivery.receivedAt).toISOString(),
      size: delivery.size,
      attempt: Math.max(1, ...delivery.recipients.map((r) => r.attempt)),
      envelope: {
        from: delivery.envelope.mailFrom,
        to: delivery.recipients.map((r) => r.rcpt),
        helo: delivery.envelope.helo,
        clientAddress: delivery.envelope.clientAddress,
        secure: delivery.envelope.secure,
        listener: delivery.envelope.listener,
        authenticatedUser: delivery.envelope.authenticatedUser ?? null,
        smtpUtf8: delivery.envelope.smtpUtf8 === true,
        dsn: dsnOf(delivery)
      },
      subject: first("subject"),
      messageId: first("message-id"),
      headers,
      authenticationResults: headers.filter((h) => h.name.toLowerCase() === "authentication-results").map((h) => h.value),
      authentication: delivery.envelope.authentication ?? null,
      quarantine: delivery.envelope.quarantine ?? null,
      ...(wantText && found?.text !== undefined ? { text: found.text } : {}),
      ...(wantHtml && found?.html !== undefined ? { html: found.html } : {}),
      ...((wantText || wantHtml) && found === undefined ? { partsOmitted: true as const } : {})
    }
  })

/** Base64 of a byte stream, chunk by chunk (the bytes of an unfinished 3-byte group carried over). */
const base64 = <E>(body: Stream.Stream<Uint8Array, E>): Stream.Stream<Uint8Array, E> =>
  Stream.mapAccum(
    body,
    (): Buffer => Buffer.alloc(0),
    (carry, chunk): readonly [Buffer, ReadonlyArray<Uint8Array>] => {
      const buf = carry.length > 0 ? Buffer.concat([carry, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
      const whole = buf.length - (buf.length % 3)
      // The carry is copied: it must not keep the whole chunk alive.
      return [Buffer.from(buf.subarray(whole)), whole > 0 ? [Buffer.from(buf.subarray(0, whole).toString("base64"), "latin1")] : []]
    },
    { onHalt: (carry) => (carry.length > 0 ? [Buffer.from(carry.toString("base64"), "latin1")] : []) }
  )

export interface RequestBody {
  readonly contentType: string
  /** The bytes to send; each run reads the message from the queue again. */
  readonly stream: Stream.Stream<Uint8Array, MailQueueError>
}

const utf8 = (text: string): Stream.Stream<Uint8Array> => Stream.succeed(Buffer.from(text, "utf8"))

export const requestBody = (delivery: DA.Delivery, payload: WebhookPayload, mode: RawMode): RequestBody => {
  const json = JSON.stringify(payload)
  switch (mode) {
    case "omit":
      return { contentType: "application/json", stream: utf8(json) }
    case "base64":
      // The raw message is spliced in as the last member, streamed as base64.
      return {
        contentType: "application/json",
        stream: Stream.concat(utf8(`${json.slice(0, -1)},"raw":"`), Stream.concat(base64(delivery.body), utf8("\"}")))
      }
    case "multipart": {
      // 128 random bits: the boundary cannot plausibly occur in the message.
      const boundary = `incoming-${randomBytes(16).toString("hex")}`
      const head = `--${boundary}\r\nContent-Disposition: form-data; name="payload"\r\nContent-Type: application/json\r\n\r\n${json}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="message"; filename="${delivery.id}.eml"\r\n` +
        `Content-Type: message/rfc822\r\n\r\n`
      return {
        contentType: `multipart/form-data; boundary=${boundary}`,
        stream: Stream.concat(utf8(head), Stream.concat(delivery.body, utf8(`\r\n--${boundary}--\r\n`)))
      }
    }
  }
}
