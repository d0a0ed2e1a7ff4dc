/**
 * The dev inbox's JSON API against a real inbox in-process (the layer host apps use from
 * `incoming-smtp/testing`), fed by nodemailer over SMTP: plain text, HTML with an inline image
 * and attachments, UTF-8 subjects, a 10 MiB message, search, `wait`, unread state, deletes,
 * the raw source and Server-Sent Events.
 */
import { createHash, randomBytes } from "node:crypto"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { DevInbox } from "../../src/testing/index.ts"
import { events, sendMail } from "./helpers.ts"

const png = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAYAAABytg0kAAAAFklEQVR42mNk+M9Qz0AEYBxVSF+FAP5FDvcfRYWgAAAAAElFTkSuQmCC",
  "base64"
)
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex")

const fetchText = (url: string, init?: RequestInit) =>
  Effect.promise(async () => {
    const r = await fetch(url, init)
    return { status: r.status, headers: r.headers, text: await r.text() }
  })

layer(DevInbox.layer(), { timeout: "60 seconds", excludeTestServices: true })("dev inbox API", (it) => {
  it.effect("a plain text message: parsed, listed, unread, with its envelope", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const sent = yield* sendMail(inbox.smtpPort, {
        from: "App <noreply@app.test>",
        to: "alice@example.com",
        cc: "ops@elsewhere.test",
        subject: "Plain hello",
        text: "Hello Alice,\nyour code is 123456.\n"
      })
      assert.match(sent.response, /^250 2\.0\.0 queued as /)
      assert.deepStrictEqual([...sent.accepted].sort(), ["alice@example.com", "ops@elsewhere.test"])
      const m = yield* inbox.client.wait("subject:\"Plain hello\"")
      assert.strictEqual(m.text, "Hello Alice,\nyour code is 123456.\n")
      assert.isNull(m.html)
      assert.deepStrictEqual(m.from, { name: "App", address: "noreply@app.test" })
      assert.deepStrictEqual(m.to, [{ name: "", address: "alice@example.com" }])
      assert.deepStrictEqual(m.cc, [{ name: "", address: "ops@elsewhere.test" }])
      assert.strictEqual(m.envelope.from, "noreply@app.test")
      assert.deepStrictEqual(m.envelope.to, ["alice@example.com", "ops@elsewhere.test"])
      assert.isTrue(m.unread)
      assert.strictEqual(m.headers[0]!.name, "Received")
      assert.include(m.headers[0]!.value, "by incoming-dev")
      const listed = yield* inbox.client.list("your code is")
      assert.deepStrictEqual(listed.messages.map((s) => s.id), [m.id])
      assert.strictEqual(listed.messages[0]!.snippet, "Hello Alice, your code is 123456.")
      const raw = Buffer.from(yield* inbox.client.raw(m.id)).toString("utf8")
      assert.match(raw, /^Received: from /)
      assert.include(raw, "Subject: Plain hello")
      assert.strictEqual(raw.length, m.size)
    }))

  it.effect("HTML with an inline cid: image and attachments: the frame's HTML, the parts, the names", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const report = randomBytes(3000)
      yield* sendMail(inbox.smtpPort, {
        from: "reports@app.test",
        to: "bob@example.com",
        subject: "Monthly report",
        html: "<!DOCTYPE html><html><body><h1>Report</h1><img src=\"cid:logo@app\" alt=\"logo\"></body></html>",
        text: "Report (see HTML)",
        attachments: [
          { filename: "logo.png", content: png, cid: "logo@app" },
          { filename: "../../etc/re\u202Eport.pdf", content: report, contentType: "application/pdf" }
        ]
      })
      const m = yield* inbox.client.wait("subject:report has:attachment")
      assert.include(m.html!, "cid:logo@app")
      assert.strictEqual(m.attachments.length, 2)
      const [logo, pdf] = m.attachments
      assert.deepStrictEqual([logo!.filename, logo!.contentType, logo!.size, logo!.contentId, logo!.related], ["logo.png", "image/png", png.length, "logo@app", true])
      // The directory and the right-to-left override are gone.
      assert.strictEqual(pdf!.filename, "report.pdf")
      assert.strictEqual(pdf!.size, report.length)

      const frame = yield* fetchText(`${inbox.url}${m.htmlUrl}`)
      assert.strictEqual(frame.status, 200)
      const csp = frame.headers.get("content-security-policy") ?? ""
      assert.include(csp, "script-src 'none'")
      assert.match(csp, /sandbox allow-popups allow-popups-to-escape-sandbox$/)
      // The inline image is in the frame's HTML itself (the sandboxed frame sends no credentials).
      assert.include(frame.text, `src="data:image/png;base64,${png.toString("base64")}"`)
      assert.match(frame.text, /^<!DOCTYPE html><base target="_blank">/)

      assert.strictEqual(sha(yield* inbox.client.part(m.id, 0)), sha(png))
      assert.strictEqual(sha(yield* inbox.client.part(m.id, 1)), sha(report))
      const download = yield* Effect.promise(() => fetch(`${inbox.url}${pdf!.url}`))
      assert.strictEqual(download.headers.get("content-disposition"), "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf")
      assert.strictEqual(download.headers.get("content-type"), "application/pdf")
      assert.include(download.headers.get("content-security-policy") ?? "", "sandbox")
      const image = yield* Effect.promise(() => fetch(`${inbox.url}${logo!.url}`))
      assert.match(image.headers.get("content-disposition") ?? "", /^inline;/)
      const missing = yield* Effect.flip(inbox.client.part(m.id, 7))
      assert.strictEqual(missing.reason._tag, "NotFound")
    }))

  it.effect("UTF-8 subjects (encoded words and SMTPUTF8 raw headers) are decoded and searchable", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const subject = "Grüße aus Köln — 日本語のテスト 🎉"
      yield* sendMail(inbox.smtpPort, { from: "jörg@app.test", to: "zoë@example.com", subject, text: "Schöne Grüße" })
      const encoded = yield* inbox.client.wait("subject:köln")
      assert.strictEqual(encoded.subject, subject)
      assert.strictEqual(encoded.text?.trimEnd(), "Schöne Grüße")
      assert.deepStrictEqual(encoded.envelope.to, ["zoë@example.com"])
      // Search folds case beyond ASCII: GRÜSSE is not grüße, but KÖLN is köln.
      assert.strictEqual((yield* inbox.client.list("subject:KÖLN")).total, 1)
      assert.strictEqual((yield* inbox.client.list("日本語")).total, 1)
      // An 8-bit header sent as is (SMTPUTF8, RFC 6532).
      yield* sendMail(inbox.smtpPort, {
        envelope: { from: "a@app.test", to: ["b@example.com"] },
        raw: Buffer.from("From: a@app.test\r\nTo: b@example.com\r\nSubject: Ünïcödé raw\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nß\r\n")
      })
      const raw = yield* inbox.client.wait("subject:ünïcödé")
      assert.strictEqual(raw.subject, "Ünïcödé raw")
    }))

  it.effect("a 10 MiB message is caught whole: size, parts and source byte for byte", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const big = randomBytes(10 * 1024 * 1024)
      const started = Date.now()
      yield* sendMail(inbox.smtpPort, {
        from: "exports@app.test",
        to: "carol@example.com",
        subject: "Big export",
        text: "The export is attached.",
        attachments: [{ filename: "export.bin", content: big }]
      })
      const accepted = Date.now()
      const m = yield* inbox.client.wait("subject:\"big export\"", { timeout: "30 seconds" })
      const shown = Date.now()
      assert.isAbove(m.size, 10 * 1024 * 1024 * 4 / 3)
      assert.strictEqual(m.attachments[0]!.size, big.length)
      assert.strictEqual(sha(yield* inbox.client.part(m.id, 0)), sha(big))
      assert.strictEqual((yield* inbox.client.raw(m.id)).byteLength, m.size)
      console.log(`10 MiB attachment (${m.size} bytes on the wire): SMTP ${accepted - started} ms, then in the inbox ${shown - accepted} ms later`)
    }))

  it.effect("wait answers when a matching message arrives, at once for one already there, 404 on timeout", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const waiting = yield* Effect.forkChild(inbox.client.wait("to:late@example.com subject:later", { timeout: "10 seconds" }))
      // Something else first: it must not wake the waiter.
      yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "late@example.com", subject: "not this one", text: "x" })
      yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "late@example.com", subject: "Later", text: "y" })
      const m = yield* Fiber.join(waiting)
      assert.strictEqual(m.subject, "Later")
      // Already there: answered from the store.
      assert.strictEqual((yield* inbox.client.wait("to:late@example.com subject:later", { timeout: "1 second" })).id, m.id)
      // `since` skips it.
      const timedOut = yield* Effect.flip(inbox.client.wait("subject:later", { timeout: "300 millis", since: Date.parse(m.receivedAt) }))
      assert.strictEqual(timedOut.reason._tag, "Timeout")
      const bad = yield* fetchText(`${inbox.url}/api/messages/wait?timeout=soon`)
      assert.strictEqual(bad.status, 400)
    }))

  it.effect("search: from:, to:, subject:, has:attachment, is:unread, free text and negation", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      yield* inbox.client.clear
      yield* sendMail(inbox.smtpPort, { from: "Billing <billing@shop.test>", to: "dana@example.com", subject: "Invoice 42", text: "Total: 10 EUR", attachments: [{ filename: "invoice.pdf", content: "pdf" }] })
      yield* sendMail(inbox.smtpPort, { from: "news@shop.test", to: "erik@example.com", subject: "Weekly news", text: "Nothing about invoices" })
      yield* inbox.client.wait("subject:weekly")
      const ids = (q: string) => Effect.map(inbox.client.list(q), (r) => r.messages.map((m) => m.subject))
      assert.deepStrictEqual(yield* ids("from:billing"), ["Invoice 42"])
      assert.deepStrictEqual(yield* ids("from:\"Billing\""), ["Invoice 42"])
      assert.deepStrictEqual(yield* ids("to:erik@"), ["Weekly news"])
      assert.deepStrictEqual(yield* ids("has:attachment"), ["Invoice 42"])
      assert.deepStrictEqual(yield* ids("-has:attachment"), ["Weekly news"])
      assert.deepStrictEqual(yield* ids("invoice"), ["Weekly news", "Invoice 42"])
      assert.deepStrictEqual(yield* ids("invoice -subject:invoice"), ["Weekly news"])
      assert.deepStrictEqual(yield* ids("invoice.pdf"), ["Invoice 42"])
      const weekly = (yield* inbox.client.list("subject:weekly")).messages[0]!
      yield* inbox.client.setUnread(weekly.id, false)
      assert.deepStrictEqual(yield* ids("is:unread"), ["Invoice 42"])
      assert.deepStrictEqual(yield* ids("is:read"), ["Weekly news"])
      const all = yield* inbox.client.list()
      assert.strictEqual(all.total, 2)
      assert.strictEqual(all.unread, 1)
    }))

  it.effect("live events: ready, then added / updated / removed / cleared", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const stream = yield* events(inbox.url)
      yield* stream.next("ready")
      yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "f@example.com", subject: "Live one", text: "x" })
      const added = JSON.parse(yield* stream.next("added")) as { id: string; subject: string; unread: boolean }
      assert.strictEqual(added.subject, "Live one")
      assert.isTrue(added.unread)
      yield* inbox.client.setUnread(added.id, false)
      assert.strictEqual((JSON.parse(yield* stream.next("updated")) as { unread: boolean }).unread, false)
      yield* inbox.client.remove(added.id)
      assert.deepStrictEqual(JSON.parse(yield* stream.next("removed")), { ids: [added.id] })
      const gone = yield* Effect.flip(inbox.client.get(added.id))
      assert.strictEqual(gone.reason._tag, "NotFound")
      yield* inbox.client.clear
      yield* stream.next("cleared")
      assert.strictEqual((yield* inbox.client.list()).total, 0)
    }))

  it.effect("AUTH with any credentials is accepted and recorded; nothing is refused or relayed", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const sent = yield* sendMail(
        inbox.smtpPort,
        { from: "app@app.test", to: ["x@gmail.test", "y@corp.test", "Root <root@localhost>"], subject: "With auth", text: "x" },
        { auth: { user: "whoever", pass: "whatever" } }
      )
      assert.strictEqual(sent.rejected.length, 0)
      const m = yield* inbox.client.wait("subject:\"with auth\"")
      assert.strictEqual(m.envelope.authenticatedUser, "whoever")
      assert.deepStrictEqual(m.envelope.to, ["x@gmail.test", "y@corp.test", "root@localhost"])
    }))

  it.effect("a second inbox in the same program keeps its own mail", () =>
    Effect.gen(function*() {
      const first = yield* DevInbox.TestInbox
      // Built inside the shared layer's scope: layers are memoised by identity there.
      const second = yield* Effect.map(Layer.build(DevInbox.layer()), (ctx) => Context.get(ctx, DevInbox.TestInbox))
      yield* sendMail(second.smtpPort, { from: "a@app.test", to: "b@example.com", subject: "For the second", text: "x" })
      assert.strictEqual((yield* second.client.wait("subject:\"for the second\"")).subject, "For the second")
      assert.strictEqual((yield* first.client.list("subject:\"for the second\"")).total, 0)
    }))

  it.effect("bad requests get clear answers", () =>
    Effect.gen(function*() {
      const inbox = yield* DevInbox.TestInbox
      const notAnId = yield* fetchText(`${inbox.url}/api/messages/..%2F..%2Fetc`)
      assert.strictEqual(notAnId.status, 404)
      yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "g@example.com", subject: "Target", text: "x" })
      const id = (yield* inbox.client.wait("subject:target")).id
      const form = yield* fetchText(`${inbox.url}/api/messages/${id}`, { method: "PATCH", body: "unread=false", headers: { "content-type": "text/plain" } })
      assert.strictEqual(form.status, 415)
      const badJson = yield* fetchText(`${inbox.url}/api/messages/${id}`, { method: "PATCH", body: "{\"unread\":\"no\"}", headers: { "content-type": "application/json" } })
      assert.strictEqual(badJson.status, 400)
      assert.include(JSON.parse(badJson.text).error, "unread")
      // Release is off unless configured.
      const release = yield* fetchText(`${inbox.url}/api/messages/${id}/release`, { method: "POST", body: "{\"to\":[\"a@b.test\"]}", headers: { "content-type": "application/json" } })
      assert.strictEqual(release.status, 501)
      assert.include(JSON.parse(release.text).error, "--release-smtp")
    }))
})
