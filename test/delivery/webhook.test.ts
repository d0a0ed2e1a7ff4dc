/**
 * The webhook adapter against a real HTTP server on loopback: the JSON payload (envelope,
 * decoded headers, authentication results, text/HTML parts, raw message) and the multipart
 * form, a signature the receiver can check, an idempotency key stable across retries, the
 * response mapping (Retry-After, redirects, overrides), and — through a real listener, queue and
 * dispatcher — 500-then-200 delivered exactly once, 410 dead-lettered, a timeout retried.
 */
import { createHmac } from "node:crypto"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, type Scope, Stream } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as Headers from "../../src/delivery/webhook/internal/headers.ts"
import * as Payload from "../../src/delivery/webhook/Payload.ts"
import * as Signature from "../../src/delivery/webhook/Signature.ts"
import * as WebhookAdapter from "../../src/delivery/webhook/WebhookAdapter.ts"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import { MailQueueError } from "../../src/queue/MailQueueError.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { envelope } from "../support/fixtures.ts"

interface Received {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

type Handler = (request: Received, response: http.ServerResponse, index: number) => void

/** An HTTP server on 127.0.0.1 that records every request and answers with `handler`. */
const receiver = (handler: Handler): Effect.Effect<{ readonly url: string; readonly requests: Array<Received> }, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ server: http.Server; url: string; requests: Array<Received> }>((resume) => {
      const requests: Array<Received> = []
      const server = http.createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (c: Buffer) => chunks.push(c))
        req.on("end", () => {
          const received = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) }
          requests.push(received)
          handler(received, res, requests.length - 1)
        })
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests })))
    }),
    ({ server }) =>
      Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

const answer = (res: http.ServerResponse, status: number, body = "", headers: http.OutgoingHttpHeaders = {}) => {
  res.writeHead(status, { "content-type": "text/plain", ...headers })
  res.end(body)
}

const secret = "s3cret-for-tests"

/** What a receiver does, written independently of the adapter: HMAC over `timestamp + "." + body`. */
const receiverAccepts = (r: Received): boolean => {
  const timestamp = String(r.headers["x-incoming-timestamp"])
  const expected = `sha256=${createHmac("sha256", secret).update(`${timestamp}.`).update(r.body).digest("hex")}`
  return r.headers["x-incoming-signature"] === expected
}

const rawMessage = [
  "Received: from client.test by mx.test; Sat, 21 Nov 2026 06:00:00 +0000",
  "Authentication-Results: mx.test; spf=pass smtp.mailfrom=sender@remote.test;",
  "\tdkim=pass header.d=remote.test",
  "From: =?UTF-8?Q?Ren=C3=A9e?= <renee@remote.test>",
  "To: user@example.test",
  "Subject: =?UTF-8?B?SMOpbGxv?= =?UTF-8?Q?_w=C3=B6rld?= and",
  " a folded tail",
  "Message-ID: <m1@remote.test>",
  "MIME-Version: 1.0",
  "Content-Type: multipart/mixed; boundary=\"outer\"",
  "",
  "preamble",
  "--outer",
  "Content-Type: multipart/alternative; boundary=inner",
  "",
  "--inner",
  "Content-Type: text/plain; charset=utf-8",
  "Content-Transfer-Encoding: quoted-printable",
  "",
  "Caf=C3=A9 cr=C3=A8me, a long line that is =",
  "softly broken.",
  ".dot at line start",
  "--inner",
  "Content-Type: text/html; charset=iso-8859-1",
  "Content-Transfer-Encoding: base64",
  "",
  Buffer.from("<p>Caf\u00e9</p>", "latin1").toString("base64"),
  "--inner--",
  "--outer",
  "Content-Type: text/plain; name=notes.txt",
  "Content-Disposition: attachment; filename=notes.txt",
  "",
  "attached text is not the body",
  "--outer--",
  ""
].join("\r\n")

const delivery = (text: string, recipients: ReadonlyArray<readonly [string, number]> = [["user@example.test", 1]]): DA.Delivery => ({
  id: "01WEBHOOKTEST001",
  envelope: { ...envelope(recipients.map((r) => r[0])), secure: true, authenticatedUser: undefined },
  receivedAt: Date.UTC(2026, 10, 21, 6, 0, 0),
  recipients: recipients.map(([rcpt, attempt]) => ({ rcpt, attempt })),
  size: Buffer.byteLength(text),
  body: DA.bodyStream(() => BodyStream.fromParts("", [Buffer.from(text)]))
})

/** Runs a whole Incoming (listener, memory queue, dispatcher with a 100 ms backoff) delivering to the webhook. */
const incomingWith = (options: WebhookAdapter.WebhookOptions) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(
      TestIncoming.layerWith({ dispatcher: { backoff: { baseMs: 100, maxMs: 100, jitter: 0 }, idlePollMs: 50 } }).pipe(
        Layer.provideMerge(WebhookAdapter.layer(options))
      )
    )
    const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe
    const port = Context.get(ctx, Listeners).all[0]!.port
    const result = Telemetry.awaitEvent(sub, Telemetry.is("DeliveryResult")).pipe(Effect.timeout("5 seconds"), Effect.orDie)
    const send = (subject: string) =>
      Effect.gen(function*() {
        const reply = yield* SmtpClient.send({
          port,
          from: "sender@remote.test",
          to: ["user@example.test"],
          data: `From: sender@remote.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@remote.test>\r\n\r\nbody of ${subject}\r\n`
        })
        assert.strictEqual(reply.code, 250, reply.text)
        return /queued as (\w+)/.exec(reply.text)![1]!
      })
    return { queue: Context.get(ctx, MailQueue), admin: Context.get(ctx, QueueAdmin), result, send }
  })

describe("WebhookAdapter", () => {
  it.live("posts envelope, decoded headers, authentication results, text/html and the raw message, signed", () =>
    Effect.gen(function*() {
      const server = yield* receiver((_, res) => answer(res, 200, "thanks"))
      const adapter = yield* WebhookAdapter.make({ url: `${server.url}/hook`, secret, parts: { text: true, html: true } })
      const d = delivery(rawMessage, [["user@example.test", 2], ["other@example.test", 1]])
      const out = yield* adapter.deliver(d)
      assert.deepStrictEqual(out.map((o) => o._tag), ["Ok", "Ok"])
      assert.include(out[0]!._tag === "Ok" ? out[0]!.reply : "", "answered 200")

      const [request] = server.requests
      assert.strictEqual(request!.method, "POST")
      assert.strictEqual(request!.url, "/hook")
      assert.strictEqual(request!.headers["content-type"], "application/json")
      assert.strictEqual(Number(request!.headers["content-length"]), request!.body.length)
      assert.isTrue(receiverAccepts(request!), "the receiver's own HMAC check passes")
      assert.isTrue(Signature.verify({
        secret,
        timestamp: String(request!.headers["x-incoming-timestamp"]),
        signature: String(request!.headers["x-incoming-signature"]),
        body: request!.body
      }))
      assert.isFalse(Signature.verify({
        secret: "wrong",
        timestamp: String(request!.headers["x-incoming-timestamp"]),
        signature: String(request!.headers["x-incoming-signature"]),
        body: request!.body
      }))
      assert.match(String(request!.headers["idempotency-key"]), /^01WEBHOOKTEST001\/[0-9a-f]{32}$/)

      const payload = JSON.parse(request!.body.toString("utf8")) as Payload.WebhookPayload
      assert.deepStrictEqual(payload.envelope, {
        from: "sender@remote.test",
        to: ["user@example.test", "other@example.test"],
        helo: "client.test",
        clientAddress: "127.0.0.1",
        secure: true,
        listener: "test",
        authenticatedUser: null,
        smtpUtf8: false,
        dsn: null
      })
      assert.strictEqual(payload.id, "01WEBHOOKTEST001")
      assert.strictEqual(payload.receivedAt, "2026-11-21T06:00:00.000Z")
      assert.strictEqual(payload.size, Buffer.byteLength(rawMessage))
      assert.strictEqual(payload.attempt, 2)
      assert.strictEqual(payload.subject, "Héllo wörld and a folded tail")
      assert.strictEqual(payload.messageId, "<m1@remote.test>")
      assert.deepStrictEqual(payload.headers.find((h) => h.name === "From"), { name: "From", value: "Renée <renee@remote.test>" })
      assert.deepStrictEqual(payload.authenticationResults, ["mx.test; spf=pass smtp.mailfrom=sender@remote.test;\tdkim=pass header.d=remote.test"])
      // postal-mime gives decoded text with LF line breaks.
      assert.strictEqual(payload.text, "Café crème, a long line that is softly broken.\n.dot at line start")
      assert.strictEqual(payload.html, "<p>Café</p>")
      assert.strictEqual(Buffer.from(payload.raw!, "base64").toString("utf8"), rawMessage)
    }))

  it.live("carries SMTPUTF8 and the RFC 3461 parameters of MAIL and of this delivery's recipients", () =>
    Effect.gen(function*() {
      const server = yield* receiver((_, res) => answer(res, 200, "thanks"))
      const adapter = yield* WebhookAdapter.make({ url: `${server.url}/hook` })
      const base = delivery(rawMessage, [["user@example.test", 1]])
      yield* adapter.deliver({
        ...base,
        envelope: {
          ...base.envelope,
          rcptTo: ["user@example.test", "other@example.test"],
          smtpUtf8: true,
          dsn: { ret: "HDRS", envid: "QQ314159" },
          recipientDsn: {
            "user@example.test": { notify: ["FAILURE", "DELAY"], orcpt: { type: "rfc822", address: "User@example.test" } },
            // Not a recipient of this delivery (another route): not in its payload.
            "other@example.test": { notify: ["NEVER"] }
          }
        }
      })
      const payload = JSON.parse(server.requests[0]!.body.toString("utf8")) as Payload.WebhookPayload
      assert.isTrue(payload.envelope.smtpUtf8)
      assert.deepStrictEqual(payload.envelope.dsn, {
        ret: "HDRS",
        envid: "QQ314159",
        recipients: { "user@example.test": { notify: ["FAILURE", "DELAY"], orcpt: { type: "rfc822", address: "User@example.test" } } }
      })
    }))

  it.live("multipart mode: a JSON `payload` field and the message as a message/rfc822 part", () =>
    Effect.gen(function*() {
      const server = yield* receiver((_, res) => answer(res, 204))
      const adapter = yield* WebhookAdapter.make({ url: server.url, secret, raw: "multipart" })
      // Large enough to cross chunk boundaries, and not a multiple of 3 (base64 carry is not involved here, bytes are).
      const big = `${rawMessage}${"x".repeat(200_001)}\r\n`
      const out = yield* adapter.deliver(delivery(big))
      assert.strictEqual(out[0]!._tag, "Ok")
      const request = server.requests[0]!
      assert.isTrue(receiverAccepts(request))
      const form = yield* Effect.promise(() =>
        new Response(request.body, { headers: { "content-type": String(request.headers["content-type"]) } }).formData())
      const payload = JSON.parse(String(form.get("payload"))) as Payload.WebhookPayload
      assert.strictEqual(payload.subject, "Héllo wörld and a folded tail")
      assert.isUndefined(payload.raw)
      assert.isUndefined(payload.text, "parts only when asked for")
      const file = form.get("message") as File
      assert.strictEqual(file.type, "message/rfc822")
      assert.strictEqual(Buffer.from(yield* Effect.promise(() => file.arrayBuffer())).toString("utf8"), big)
    }))

  it.live("base64 of a large streamed body decodes to the exact bytes", () =>
    Effect.gen(function*() {
      const server = yield* receiver((_, res) => answer(res, 200))
      const adapter = yield* WebhookAdapter.make({ url: server.url })
      const chunks = [Buffer.from("Subject: big\r\n\r\n"), ...Array.from({ length: 40 }, (_, i) => Buffer.alloc(65_537, 97 + (i % 26)))]
      const total = Buffer.concat(chunks)
      const d: DA.Delivery = { ...delivery(""), size: total.length, body: DA.bodyStream(() => BodyStream.fromParts("", chunks)) }
      assert.strictEqual((yield* adapter.deliver(d))[0]!._tag, "Ok")
      const request = server.requests[0]!
      assert.isUndefined(request.headers["x-incoming-signature"], "no secret, no signature")
      const payload = JSON.parse(request.body.toString("utf8")) as Payload.WebhookPayload
      assert.isTrue(Buffer.from(payload.raw!, "base64").equals(total))
    }))

  it.live("response mapping: Retry-After, 408/429/5xx retried, 4xx rejected, overrides, redirects not followed by default", () =>
    Effect.gen(function*() {
      const replies: Array<(res: http.ServerResponse) => void> = [
        (res) => answer(res, 429, "slow down", { "retry-after": "120" }),
        (res) => answer(res, 503, "", { "retry-after": new Date(Date.now() + 3_600_000).toUTCString() }),
        (res) => answer(res, 408),
        (res) => answer(res, 404, "no such hook"),
        (res) => answer(res, 302, "", { location: "/elsewhere" })
      ]
      const server = yield* receiver((_, res, i) => replies[i]!(res))
      const adapter = yield* WebhookAdapter.make({ url: server.url })
      const one = Effect.map(adapter.deliver(delivery("Subject: s\r\n\r\nx\r\n")), (o) => o[0]!)

      const before = Date.now()
      const r429 = yield* one
      assert.strictEqual(r429._tag, "Retry")
      if (r429._tag === "Retry") {
        assert.include(r429.reason, "429")
        assert.include(r429.reason, "slow down")
        assert.isAtLeast(r429.at!, before + 119_000)
        assert.isAtMost(r429.at!, Date.now() + 121_000)
      }
      const r503 = yield* one
      assert.strictEqual(r503._tag, "Retry")
      if (r503._tag === "Retry") assert.isAtLeast(r503.at!, before + 3_590_000)
      assert.strictEqual((yield* one)._tag, "Retry")
      const r404 = yield* one
      assert.deepStrictEqual([r404._tag, r404._tag === "Reject" ? r404.reason : ""], ["Reject", `webhook ${server.url}/ answered 404 Not Found: no such hook`])
      const r302 = yield* one
      assert.strictEqual(r302._tag, "Retry")
      assert.include(r302._tag === "Retry" ? r302.reason : "", "redirects are not followed")
      assert.strictEqual(server.requests.length, 5, "the redirect was not followed")

      const overridden = yield* WebhookAdapter.make({ url: server.url, responses: { "404": "retry", "2xx": "reject" } })
      assert.strictEqual(WebhookAdapter.decide(404, { "404": "retry" }), "retry")
      assert.strictEqual(WebhookAdapter.decide(410, { "4xx": "retry" }), "retry")
      assert.strictEqual(WebhookAdapter.decide(410, undefined), "reject")
      assert.strictEqual(WebhookAdapter.decide(429, undefined), "retry")
      replies.push((res) => answer(res, 404))
      assert.strictEqual((yield* overridden.deliver(delivery("x")))[0]!._tag, "Retry")
    }))

  it.live("follows redirects up to maxRedirects, re-posting the same signed payload, without credentials across origins", () =>
    Effect.gen(function*() {
      const final = yield* receiver((_, res) => answer(res, 200))
      const first = yield* receiver((r, res) =>
        answer(res, r.url === "/start" ? 307 : 308, "", { location: r.url === "/start" ? "/next" : `${final.url}/done` }))
      const adapter = yield* WebhookAdapter.make({ url: `${first.url}/start`, secret, maxRedirects: 2, headers: { authorization: "Bearer t" } })
      const out = yield* adapter.deliver(delivery("Subject: r\r\n\r\nx\r\n"))
      assert.strictEqual(out[0]!._tag, "Ok")
      assert.deepStrictEqual(first.requests.map((r) => r.url), ["/start", "/next"])
      assert.deepStrictEqual(final.requests.map((r) => r.url), ["/done"])
      assert.isTrue(final.requests[0]!.body.equals(first.requests[0]!.body), "the same payload each hop")
      assert.isTrue(receiverAccepts(final.requests[0]!))
      assert.strictEqual(first.requests[1]!.headers.authorization, "Bearer t")
      assert.isUndefined(final.requests[0]!.headers.authorization, "credentials stay with their origin")

      const limited = yield* WebhookAdapter.make({ url: `${first.url}/start`, maxRedirects: 1 })
      const stopped = (yield* limited.deliver(delivery("x")))[0]!
      assert.include(stopped._tag === "Retry" ? stopped.reason : "", "more than 1 redirects")
    }))

  it.live("a refused connection is retried", () =>
    Effect.gen(function*() {
      // A port nobody listens on: bind, note, close.
      const free = yield* Effect.callback<number>((resume) => {
        const s = http.createServer().listen(0, "127.0.0.1", () => {
          const port = (s.address() as AddressInfo).port
          s.close(() => resume(Effect.succeed(port)))
        })
      })
      const adapter = yield* WebhookAdapter.make({ url: `http://127.0.0.1:${free}/hook` })
      const out = (yield* adapter.deliver(delivery("x")))[0]!
      assert.strictEqual(out._tag, "Retry")
      assert.include(out._tag === "Retry" ? out.reason : "", "ECONNREFUSED")
    }))

  it.live("an answer before the body is sent (413): rejected at once, the rest of the upload dropped", () =>
    Effect.gen(function*() {
      // A receiver that answers from the headers alone and never reads the body.
      const port = yield* Effect.acquireRelease(
        Effect.callback<http.Server>((resume) => {
          const server = http.createServer((_req, res) => answer(res, 413, "too large"))
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.callback<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
      ).pipe(Effect.map((server) => (server.address() as AddressInfo).port))
      const adapter = yield* WebhookAdapter.make({ url: `http://127.0.0.1:${port}/`, timeoutMs: 5_000 })
      // 16 MiB, counted per run: the third run is the upload.
      const chunk = Buffer.alloc(64 * 1024, 120)
      const pulled: Array<number> = []
      const body = Stream.suspend(() => {
        const run = pulled.push(0) - 1
        return Stream.fromIterable(Array.from({ length: 256 }, () => chunk)).pipe(Stream.tap(() => Effect.sync(() => pulled[run]!++)))
      })
      const out = (yield* adapter.deliver({ ...delivery(""), size: chunk.length * 256, body }))[0]!
      assert.deepStrictEqual([out._tag, out._tag === "Reject" ? out.reason : ""], ["Reject", `webhook http://127.0.0.1:${port}/ answered 413 Payload Too Large: too large`])
      assert.strictEqual(pulled.length, 3)
      assert.strictEqual(pulled[1], 256, "measured and signed whole")
      assert.isBelow(pulled[2]!, 256, "the upload stopped when the answer came")
    }))

  it.live("a message that cannot be read while it is sent: retried with the reason", () =>
    Effect.gen(function*() {
      const server = yield* receiver((_, res) => answer(res, 200))
      const adapter = yield* WebhookAdapter.make({ url: server.url })
      // Read once for the headers, once to measure and sign, then once to send: that one fails.
      let runs = 0
      const good = Stream.succeed(Buffer.from("Subject: s\r\n\r\nbody\r\n"))
      const body = Stream.suspend(() =>
        ++runs < 3 ? good : Stream.concat(good, Stream.fail(new MailQueueError({ reason: { _tag: "StorageFailed", detail: "spool file gone" } }))))
      const out = (yield* adapter.deliver({ ...delivery(""), size: 20, body }))[0]!
      assert.strictEqual(out._tag, "Retry")
      assert.include(out._tag === "Retry" ? out.reason : "", `webhook ${server.url}/: reading the message failed: storage failed: spool file gone`)
      assert.strictEqual(runs, 3)
    }))

  describe("through a real listener, queue and dispatcher", () => {
    it.live("500 then 200: retried, delivered exactly once, same idempotency key, every request verifiable", () =>
      Effect.gen(function*() {
        const server = yield* receiver((_, res, i) => answer(res, i === 0 ? 500 : 200, i === 0 ? "database down" : "ok"))
        const { admin, queue, result, send } = yield* incomingWith({ url: server.url, secret })
        const id = yield* send("first")
        const first = yield* result
        assert.deepStrictEqual([first.id, first.outcome], [id, "retry"])
        assert.include(first.reason, "answered 500 Internal Server Error: database down")
        const second = yield* result
        assert.deepStrictEqual([second.id, second.outcome], [id, "delivered"])

        // The memory queue forgets a message once every recipient is delivered: nothing is left to retry.
        assert.isTrue(Option.isNone(yield* admin.get(id)))
        assert.strictEqual(server.requests.length, 2, "one failed POST, one delivered POST")
        const [a, b] = server.requests
        assert.strictEqual(a!.headers["idempotency-key"], b!.headers["idempotency-key"])
        assert.isTrue(receiverAccepts(a!) && receiverAccepts(b!))
        const payloads = server.requests.map((r) => JSON.parse(r.body.toString("utf8")) as Payload.WebhookPayload)
        assert.deepStrictEqual(payloads.map((p) => [p.id, p.attempt, p.subject]), [[id, 1, "first"], [id, 2, "first"]])
        assert.deepStrictEqual(payloads[0]!.envelope.to, ["user@example.test"])
        assert.match(Buffer.from(payloads[1]!.raw!, "base64").toString("utf8"), /^Received: from client\.test[\s\S]*\r\n\r\nbody of first\r\n$/)
        assert.strictEqual(yield* queue.depth, 0)
      }))

    it.live("410 Gone: dead-lettered with the reason after one POST", () =>
      Effect.gen(function*() {
        const server = yield* receiver((_, res) => answer(res, 410, "hook deleted"))
        const { admin, result, send } = yield* incomingWith({ url: server.url, secret })
        const id = yield* send("gone")
        const r = yield* result
        assert.deepStrictEqual([r.id, r.outcome], [id, "dead"])
        assert.include(r.reason, "answered 410 Gone: hook deleted")
        const info = Option.getOrThrow(yield* admin.get(id))
        assert.strictEqual(info.state, "dead")
        assert.include(info.recipients[0]!.lastReply ?? "", "410 Gone")
        assert.strictEqual(server.requests.length, 1)
      }))

    it.live("a receiver that does not answer in time: retried, then delivered", () =>
      Effect.gen(function*() {
        const server = yield* receiver((_, res, i) => {
          // The first request is left hanging; the adapter gives up on it after 300 ms.
          if (i > 0) answer(res, 200)
        })
        const { admin, result, send } = yield* incomingWith({ url: server.url, secret, timeoutMs: 300 })
        const id = yield* send("slow")
        const first = yield* result
        assert.strictEqual(first.outcome, "retry")
        assert.include(first.reason, "no answer within 300 ms")
        const second = yield* result
        assert.strictEqual(second.outcome, "delivered")
        assert.strictEqual(server.requests.length, 2)
        assert.strictEqual(server.requests[0]!.headers["idempotency-key"], server.requests[1]!.headers["idempotency-key"])
        assert.isTrue(Option.isNone(yield* admin.get(id)), "delivered and forgotten by the memory queue")
      }))
  })

  describe("header and MIME decoding", () => {
    it("encoded words: adjacent words joined across a split character, Q underscores, unknown charsets survive", () => {
      const euro = Buffer.from("€", "utf8")
      const split = `=?utf-8?B?${euro.subarray(0, 2).toString("base64")}?= =?utf-8?B?${euro.subarray(2).toString("base64")}?=`
      assert.strictEqual(Headers.decodeWords(split), "€")
      assert.strictEqual(Headers.decodeWords("=?ISO-8859-1?Q?a_b=E9?= plain"), "a bé plain")
      assert.strictEqual(Headers.decodeWords("not =?encoded"), "not =?encoded")
      assert.strictEqual(Headers.decodeWords("=?x-unknown?Q?abc?="), "abc")
    })

    it.effect("parts (postal-mime): quoted boundaries, charsets; attached messages and a message without parts", () =>
      Effect.gen(function*() {
        const text = [
          "Subject: parts",
          "Content-Type: multipart/mixed; boundary=\"a;b\\\"c\"",
          "",
          "--a;b\"c",
          "Content-Type: text/plain; charset=iso-8859-1",
          "Content-Transfer-Encoding: quoted-printable",
          "",
          "na=EFve",
          "--a;b\"c",
          "Content-Type: message/rfc822",
          "",
          "Subject: inner",
          "",
          "the attached message's text is not ours",
          "--a;b\"c--",
          ""
        ].join("\r\n")
        const payload = yield* Payload.build(delivery(text), { parts: { text: true, html: true } })
        assert.deepStrictEqual([payload.subject, payload.text, payload.html, payload.partsOmitted], ["parts", "naïve", undefined, undefined])
        const plain = yield* Payload.build(delivery("Subject: x\r\n\r\nplain body"), { parts: { text: true } })
        assert.strictEqual(plain.text, "plain body\n")
      }))

    it.effect("bounded: over maxPartsBytes or past postal-mime's nesting limit the parts are omitted; headers need only the head", () =>
      Effect.gen(function*() {
        const big = yield* Payload.build(delivery(rawMessage), { parts: { text: true }, maxPartsBytes: 100 })
        assert.deepStrictEqual([big.subject, big.text, big.partsOmitted], ["Héllo wörld and a folded tail", undefined, true])

        let nested = "Subject: deep\r\n"
        for (let i = 0; i < 300; i++) nested += `Content-Type: multipart/mixed; boundary=b${i}\r\n\r\n--b${i}\r\n`
        nested += "Content-Type: text/plain\r\n\r\ndeep\r\n"
        for (let i = 299; i >= 0; i--) nested += `--b${i}--\r\n`
        const deep = yield* Payload.build(delivery(nested), { parts: { text: true } })
        assert.deepStrictEqual([deep.subject, deep.text, deep.partsOmitted], ["deep", undefined, true])

        // A body that fails after its header section: without parts, reading stops at the blank line.
        const broken: DA.Delivery = {
          ...delivery(""),
          size: 1_000_000,
          body: Stream.concat(
            Stream.succeed(Buffer.from("Subject: head only\r\n\r\nbody")),
            Stream.fail(new MailQueueError({ reason: { _tag: "StorageFailed", detail: "spool file gone" } }))
          )
        }
        assert.strictEqual((yield* Payload.build(broken, {})).subject, "head only")
        const failed = yield* Payload.build(broken, { parts: { text: true } }).pipe(Effect.flip)
        assert.strictEqual(failed.reason._tag, "StorageFailed")
      }))

    it("header sections: unfolding, raw UTF-8, no headers at all", () => {
      const msg = Buffer.from("Subject: caf\u00e9\r\n  folded\r\nX-Empty:\r\n\r\nbody", "utf8")
      const end = Headers.headerBoundary(msg)!
      const headers = Headers.parseHeaders(Headers.headerText(msg.subarray(0, end.headerLength)))
      assert.deepStrictEqual(headers, [{ name: "Subject", value: "café  folded" }, { name: "X-Empty", value: "" }])
      assert.strictEqual(msg.subarray(end.bodyStart).toString(), "body")
      assert.deepStrictEqual(Headers.headerBoundary(Buffer.from("\r\nbody")), { headerLength: 0, bodyStart: 2 })
    })
  })
})
