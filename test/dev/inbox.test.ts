/**
 * The dev inbox as a whole, each case with an inbox of its own: pruning beyond the cap, caught
 * mail surviving a restart, basic auth, the loopback host check, Release to a second inbox over
 * SMTP (and its allow-list), STARTTLS with a certificate.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { DevInbox, InboxClient, TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"
import { sendMail } from "./helpers.ts"

const start = (options: DevInbox.DevInboxOptions = {}) =>
  Effect.map(Layer.build(DevInbox.layer(options)), (ctx) => Context.get(ctx, DevInbox.TestInbox))

describe("dev inbox", () => {
  it.live("keeps at most max-messages, deleting the oldest", () =>
    Effect.gen(function*() {
      const inbox = yield* start({ maxMessages: 3 })
      for (let i = 1; i <= 5; i++) {
        yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "b@example.com", subject: `n${i}`, text: String(i) })
        yield* inbox.client.wait(`subject:n${i}`)
      }
      const all = yield* inbox.client.list()
      assert.strictEqual(all.total, 3)
      assert.deepStrictEqual(all.messages.map((m) => m.subject), ["n5", "n4", "n3"])
    }))

  it.live("caught mail survives a restart on the same data directory", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-dev-durable-")
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const inbox = yield* start({ dataDir: dir })
        yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "b@example.com", subject: "Keep me", text: "durable" })
        const m = yield* inbox.client.wait("subject:\"keep me\"")
        yield* inbox.client.setUnread(m.id, false)
        return m
      }))
      const inbox = yield* start({ dataDir: dir })
      const again = yield* inbox.client.get(first.id)
      assert.strictEqual(again.subject, "Keep me")
      assert.strictEqual(again.text?.trimEnd(), "durable")
      assert.isFalse(again.unread)
    }))

  it.live("basic auth guards the page, the API and the event stream", () =>
    Effect.gen(function*() {
      const basicAuth = { user: "dev", password: Redacted.make("s3cret") }
      const inbox = yield* start({ http: { basicAuth } })
      for (const path of ["/", "/api/messages", "/api/events", "/assets/app.js"]) {
        const r = yield* Effect.promise(() => fetch(`${inbox.url}${path}`))
        assert.strictEqual(r.status, 401, path)
        assert.match(r.headers.get("www-authenticate") ?? "", /^Basic realm=/)
        yield* Effect.promise(() => r.body?.cancel() ?? Promise.resolve())
      }
      const wrong = InboxClient.make(inbox.url, { basicAuth: { user: "dev", password: "guess" } })
      assert.strictEqual((yield* Effect.flip(wrong.list())).reason._tag, "Http")
      // The client of the test layer carries the credentials.
      assert.strictEqual((yield* inbox.client.list()).total, 0)
    }))

  it.live("on loopback, a request must name a loopback host (no DNS rebinding)", () =>
    Effect.gen(function*() {
      const inbox = yield* start()
      const port = new URL(inbox.url).port
      const status = (host: string) =>
        Effect.promise(() =>
          new Promise<number>((resolve, reject) => {
            import("node:http").then(({ request }) => {
              const req = request({ host: "127.0.0.1", port, path: "/api/messages", headers: { host } }, (res) => {
                res.resume()
                resolve(res.statusCode ?? 0)
              })
              req.on("error", reject)
              req.end()
            }, reject)
          })
        )
      assert.strictEqual(yield* status(`localhost:${port}`), 200)
      assert.strictEqual(yield* status(`127.0.0.1:${port}`), 200)
      assert.strictEqual(yield* status(`[::1]:${port}`), 200)
      assert.strictEqual(yield* status(`attacker.example:${port}`), 403)
    }))

  it.live("Release forwards a message unchanged to the configured server, only to allowed recipients", () =>
    Effect.gen(function*() {
      const target = yield* start()
      const inbox = yield* start({
        release: { smtp: { host: "127.0.0.1", port: target.smtpPort, startTls: "disabled" }, allow: ["*@allowed.test", "boss@corp.test"] }
      })
      yield* sendMail(inbox.smtpPort, { from: "app@app.test", to: "user@example.com", subject: "Release me", text: "for real" })
      const m = yield* inbox.client.wait("subject:\"release me\"")
      const refused = yield* Effect.flip(inbox.client.release(m.id, ["ann@allowed.test", "eve@other.test"]))
      assert.deepStrictEqual(refused.reason, { _tag: "Http", status: 403, detail: "not on the release allow-list: eve@other.test" })
      const bad = yield* Effect.flip(inbox.client.release(m.id, ["not an address"]))
      assert.strictEqual(bad.reason._tag === "Http" ? bad.reason.status : 0, 400)
      const released = yield* inbox.client.release(m.id, ["ann@allowed.test", "BOSS@corp.test"])
      assert.deepStrictEqual(released.recipients, ["ann@allowed.test", "BOSS@corp.test"])
      const arrived = yield* target.client.wait("subject:\"release me\"")
      assert.deepStrictEqual(arrived.envelope.to, ["ann@allowed.test", "BOSS@corp.test"])
      assert.strictEqual(arrived.envelope.from, "app@app.test")
      // Unchanged: the original message, our first trace header included, below the target's own.
      const original = Buffer.from(yield* inbox.client.raw(m.id)).toString("utf8")
      const forwarded = Buffer.from(yield* target.client.raw(arrived.id)).toString("utf8")
      assert.isTrue(forwarded.endsWith(original), "the released message ends with the caught one")
      assert.strictEqual((yield* target.client.list()).total, 1)
    }))

  it.live("a release whose server refuses is reported, not lost", () =>
    Effect.gen(function*() {
      // A port with nothing listening: the connection is refused.
      const closed = yield* Effect.scoped(Effect.map(start(), (i) => i.smtpPort))
      const inbox = yield* start({ release: { smtp: { host: "127.0.0.1", port: closed, startTls: "disabled", connectTimeoutMs: 2000 }, allow: ["*"] } })
      yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "b@example.com", subject: "nowhere", text: "x" })
      const m = yield* inbox.client.wait("subject:nowhere")
      const failed = yield* Effect.flip(inbox.client.release(m.id, ["x@y.test"]))
      assert.strictEqual(failed.reason._tag === "Http" ? failed.reason.status : 0, 502)
      assert.strictEqual((yield* inbox.client.get(m.id)).id, m.id)
    }))

  describe.skipIf(!hasOpenssl)("with a certificate", () => {
    it.live("offers STARTTLS; mail sent over TLS says so in its envelope", () =>
      Effect.gen(function*() {
        const dir = yield* TestIncoming.tempDir()
        const tls = selfSignedCert(dir)
        const inbox = yield* start({ tls })
        yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "b@example.com", subject: "secret", text: "x" }, {
          requireTLS: true,
          auth: { user: "u", pass: "p" }
        })
        const m = yield* inbox.client.wait("subject:secret")
        assert.isTrue(m.envelope.secure)
        assert.strictEqual(m.envelope.authenticatedUser, "u")
        // Plain connections still work: STARTTLS is optional.
        yield* sendMail(inbox.smtpPort, { from: "a@app.test", to: "b@example.com", subject: "plain", text: "x" })
        assert.isFalse((yield* inbox.client.wait("subject:plain")).envelope.secure)
      }))
  })
})
