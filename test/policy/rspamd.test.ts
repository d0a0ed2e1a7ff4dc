/**
 * The `rspamd` rule against a fake rspamd (node:http on a free loopback port) answering what each
 * test sets: every action's mapping, the `actions` override, rspamd's headers and smtp_message,
 * the request headers and body it is sent, and the errors (HTTP 500, not JSON, a dead port, a
 * timeout) which let the message through, or defer it with on_error = "tempfail", never a 5xx.
 */
import { createServer, type IncomingMessage, type Server } from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type { DataContext } from "../../src/policy/Policy.ts"
import * as Rspamd from "../../src/policy/rules/spam/Rspamd.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"

interface Fake {
  readonly url: string
  readonly requests: Array<{ readonly headers: IncomingMessage["headers"]; readonly body: string; readonly path: string }>
  answer: { status: number; body: string; delayMs?: number }
}

const fake = Effect.acquireRelease(
  Effect.callback<{ fake: Fake; server: Server }>((resume) => {
    const f: Fake = { url: "", requests: [], answer: { status: 200, body: "{}" } }
    const server = createServer((req, res) => {
      let body = ""
      req.on("data", (c: Buffer) => void (body += c.toString()))
      req.on("end", () => {
        f.requests.push({ headers: req.headers, body, path: req.url ?? "" })
        setTimeout(() => {
          res.writeHead(f.answer.status, { "content-type": "application/json" })
          res.end(f.answer.body)
        }, f.answer.delayMs ?? 0)
      })
    })
    server.listen(0, "127.0.0.1", () => {
      ;(f as { url: string }).url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
      resume(Effect.succeed({ fake: f, server }))
    })
  }),
  ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(Effect.map(({ fake }) => fake))

const message = "From: a@sender.test\r\nSubject: hello\r\n\r\nbody\r\n"
const ctx = (more: Partial<DataContext> = {}): DataContext => ({
  listener: "mx",
  sessionId: "s1",
  clientAddress: "192.0.2.10",
  clientHostname: "mail.sender.test",
  secure: false,
  helo: "mail.sender.test",
  user: undefined,
  mailFrom: "a@sender.test",
  declaredSize: undefined,
  recipients: ["u@example.test"],
  size: Buffer.byteLength(message),
  messageId: "Q123",
  body: Stream.make(new TextEncoder().encode(message)),
  ...more
})

const answer = (action: string, more: Record<string, unknown> = {}) => JSON.stringify({ action, score: 7.5, required_score: 15, ...more })

describe("rspamd", () => {
  it.effect("sends the message and the envelope headers to /checkv2", () =>
    Effect.gen(function*() {
      const f = yield* fake
      f.answer = { status: 200, body: answer("no action") }
      const rule = yield* Rspamd.make({ url: f.url, hostname: "mx.test" })
      yield* rule.onData!(ctx())
      const [req] = f.requests
      assert.strictEqual(req!.path, "/checkv2")
      assert.strictEqual(req!.body, message)
      assert.strictEqual(req!.headers["ip"], "192.0.2.10")
      assert.strictEqual(req!.headers["helo"], "mail.sender.test")
      assert.strictEqual(req!.headers["hostname"], "mail.sender.test")
      assert.strictEqual(req!.headers["from"], "a@sender.test")
      assert.strictEqual(req!.headers["rcpt"], "u@example.test")
      assert.strictEqual(req!.headers["queue-id"], "Q123")
      assert.strictEqual(req!.headers["mta-name"], "mx.test")
    }))

  it.effect("reject → 550 5.7.1 with rspamd's smtp_message; soft reject and greylist → 451 4.7.1", () =>
    Effect.gen(function*() {
      const f = yield* fake
      const rule = yield* Rspamd.make({ url: f.url })
      f.answer = { status: 200, body: answer("reject", { messages: { smtp_message: "Gtube pattern" } }) }
      assert.strictEqual(SmtpReply.format(Verdict.replyOf(yield* rule.onData!(ctx()))!), "550 5.7.1 Gtube pattern")
      f.answer = { status: 200, body: answer("reject") }
      assert.strictEqual(SmtpReply.format(Verdict.replyOf(yield* rule.onData!(ctx()))!), "550 5.7.1 Message rejected as spam")
      f.answer = { status: 200, body: answer("soft reject") }
      assert.strictEqual(SmtpReply.format(Verdict.replyOf(yield* rule.onData!(ctx()))!), "451 4.7.1 Try again later")
      f.answer = { status: 200, body: answer("greylist") }
      assert.strictEqual(Verdict.replyOf(yield* rule.onData!(ctx()))!.code, 451)
    }))

  it.effect("no action: accepted with X-Rspamd-Score/Action and rspamd's own headers (added and removed)", () =>
    Effect.gen(function*() {
      const f = yield* fake
      f.answer = {
        status: 200,
        body: answer("no action", { milter: { add_headers: { "X-Spamd-Result": { value: "default: False [7.50 / 15.00]" } }, remove_headers: { "X-Spam": 0 } } })
      }
      const v = yield* (yield* Rspamd.make({ url: f.url })).onData!(ctx())
      assert.strictEqual(v._tag, "Continue")
      assert.deepStrictEqual(Verdict.editsOf(v), [
        { _tag: "PrependHeader", name: "X-Rspamd-Score", value: "7.50" },
        { _tag: "PrependHeader", name: "X-Rspamd-Action", value: "no action" },
        { _tag: "RemoveHeader", name: "X-Spam" },
        { _tag: "PrependHeader", name: "X-Spamd-Result", value: "default: False [7.50 / 15.00]" },
        { _tag: "Annotate", key: "rspamd", value: { action: "no action", score: 7.5 } }
      ])
    }))

  it.effect("add header / rewrite subject: accepted and marked (X-Spam: Yes, the new Subject)", () =>
    Effect.gen(function*() {
      const f = yield* fake
      const rule = yield* Rspamd.make({ url: f.url })
      f.answer = { status: 200, body: answer("add header") }
      const added = Verdict.editsOf(yield* rule.onData!(ctx()))
      assert.deepInclude(added, { _tag: "PrependHeader", name: "X-Spam", value: "Yes" })
      f.answer = { status: 200, body: answer("rewrite subject", { subject: "*** SPAM *** hello" }) }
      const rewritten = Verdict.editsOf(yield* rule.onData!(ctx()))
      assert.deepInclude(rewritten, { _tag: "ChangeHeader", name: "Subject", occurrence: 1, value: "*** SPAM *** hello" })
    }))

  it.effect("actions override the mapping: greylist = accept, add header = quarantine", () =>
    Effect.gen(function*() {
      const f = yield* fake
      const rule = yield* Rspamd.make({ url: f.url, actions: { "greylist": "accept", "add header": "quarantine" } })
      f.answer = { status: 200, body: answer("greylist") }
      assert.strictEqual((yield* rule.onData!(ctx()))._tag, "Continue")
      f.answer = { status: 200, body: answer("add header") }
      const edits = Verdict.editsOf(yield* rule.onData!(ctx()))
      assert.isDefined(edits.find((e) => e._tag === "Quarantine"))
    }))

  it.effect("errors: HTTP 500, not JSON, a dead port and a timeout let the message through; tempfail defers; never 5xx", () =>
    Effect.gen(function*() {
      const f = yield* fake
      const open = yield* Rspamd.make({ url: f.url, timeout: "1 second" })
      const strict = yield* Rspamd.make({ url: f.url, timeout: "1 second", onError: "tempfail" })
      for (const a of [{ status: 500, body: "oops" }, { status: 200, body: "not json" }, { status: 200, body: "{}", delayMs: 1_500 }]) {
        f.answer = a
        assert.strictEqual((yield* open.onData!(ctx()))._tag, "Continue", JSON.stringify(a))
        const deferred = yield* strict.onData!(ctx())
        assert.strictEqual(SmtpReply.format(Verdict.replyOf(deferred)!), "451 4.7.1 Spam filter unavailable, try again later")
      }
      const dead = yield* Rspamd.make({ url: "http://127.0.0.1:9", onError: "tempfail" })
      assert.strictEqual(Verdict.replyOf(yield* dead.onData!(ctx()))!.code, 451)
    }))

  it.effect("AUTH sessions and trusted clients are not scanned unless configured", () =>
    Effect.gen(function*() {
      const f = yield* fake
      f.answer = { status: 200, body: answer("reject") }
      const rule = yield* Rspamd.make({ url: f.url })
      assert.strictEqual((yield* rule.onData!(ctx({ user: "alice" })))._tag, "Continue")
      assert.strictEqual((yield* rule.onData!(ctx({ trusted: true })))._tag, "Continue")
      assert.strictEqual(f.requests.length, 0)
    }))
})
