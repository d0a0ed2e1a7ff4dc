/**
 * The `spamd` rule against a scripted spamd (node:net on a free loopback port) answering what each
 * test sets: the request it is sent (command, Content-length, User, the message), every reply
 * mapping (spam → 550, `spam = "defer" | "mark" | "quarantine" | "accept"`, `reject_score`, not
 * spam → accepted with X-Spam-Score / X-Spam-Status), and the errors (an error code, garbage, no
 * Spam header, a dead port, a timeout, a connection closed mid-answer) which let the message
 * through, or defer it with on_error = "tempfail", never a 5xx. Large messages are not scanned.
 */
import { createServer, type Server } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type { DataContext } from "../../src/policy/Policy.ts"
import * as Spamd from "../../src/policy/rules/spam/Spamd.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"

interface Script {
  port: number
  readonly requests: Array<string>
  /** What the server writes once it has the whole request; `undefined`: never answers. */
  answer: string | undefined
  /** Close without answering. */
  hangUp?: boolean
}

const scripted = Effect.acquireRelease(
  Effect.callback<{ script: Script; server: Server }>((resume) => {
    const script: Script = { port: 0, requests: [], answer: "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n" }
    const server = createServer((socket) => {
      let got = Buffer.alloc(0)
      socket.on("error", () => {})
      socket.on("data", (d: Buffer) => {
        got = Buffer.concat([got, d])
        const end = got.indexOf("\r\n\r\n")
        const length = /Content-length: (\d+)/.exec(got.toString("latin1"))
        if (end < 0 || length === null || got.length - end - 4 < Number(length[1])) return
        script.requests.push(got.toString("utf8"))
        if (script.hangUp === true) socket.destroy()
        else if (script.answer !== undefined) socket.end(script.answer)
      })
    })
    server.listen(0, "127.0.0.1", () => {
      script.port = (server.address() as { port: number }).port
      resume(Effect.succeed({ script, server }))
    })
  }),
  ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(Effect.map(({ script }) => script))

const message = "From: a@sender.test\r\nSubject: hello\r\n\r\nbody\r\n"
const ctx = (more: Partial<DataContext> = {}): DataContext => ({
  listener: "mx",
  sessionId: "s1",
  clientAddress: "192.0.2.10",
  secure: false,
  helo: "mail.sender.test",
  user: undefined,
  mailFrom: "a@sender.test",
  declaredSize: undefined,
  recipients: ["u@example.test"],
  size: Buffer.byteLength(message),
  messageId: "Q123",
  // In two chunks, as a spooled body comes.
  body: Stream.make(new TextEncoder().encode(message.slice(0, 10)), new TextEncoder().encode(message.slice(10))),
  ...more
})

const answer = (spam: boolean, score: string, body = "") =>
  `SPAMD/1.1 0 EX_OK\r\n${body === "" ? "" : `Content-length: ${Buffer.byteLength(body)}\r\n`}Spam: ${spam ? "True" : "False"} ; ${score} / 5.0\r\n\r\n${body}`

const headersOf = (v: Verdict.Verdict) =>
  v._tag === "Continue" ? (v.edits ?? []).flatMap((e) => (e._tag === "PrependHeader" ? [`${e.name}: ${e.value}`] : [])) : []

describe("spamd rule (scripted spamd)", () => {
  it.effect("sends SYMBOLS SPAMC/1.5, Content-length, User and the message; ham is accepted with its headers", () =>
    Effect.gen(function*() {
      const s = yield* scripted
      s.answer = answer(false, "-0.1", "MSGID_SHORT,NO_RELAYS")
      const v = yield* Spamd.make({ port: s.port, user: "mail" }).onData!(ctx())
      assert.strictEqual(s.requests[0], `SYMBOLS SPAMC/1.5\r\nContent-length: ${Buffer.byteLength(message)}\r\nUser: mail\r\n\r\n${message}`)
      assert.strictEqual(v._tag, "Continue")
      assert.deepStrictEqual(headersOf(v), ["X-Spam-Score: -0.1", "X-Spam-Status: No, score=-0.1 required=5.0 tests=MSGID_SHORT,NO_RELAYS"])
      const annotation = v._tag === "Continue" ? v.edits?.find((e) => e._tag === "Annotate") : undefined
      assert.deepStrictEqual(annotation, { _tag: "Annotate", key: "spamd", value: { spam: false, score: -0.1, required: 5, symbols: ["MSGID_SHORT", "NO_RELAYS"] } } as never)
    }))

  it.effect("spam: 550 5.7.1 with the score; CHECK and REPORT commands", () =>
    Effect.gen(function*() {
      const s = yield* scripted
      s.answer = answer(true, "1000.0")
      const v = yield* Spamd.make({ port: s.port, command: "check" }).onData!(ctx())
      assert.isTrue(s.requests[0]!.startsWith("CHECK SPAMC/1.5\r\n"))
      assert.isFalse(s.requests[0]!.includes("User:"), "no User header unless configured")
      assert.deepStrictEqual(v, Verdict.reject(SmtpReply.make(550, "5.7.1", "Message rejected as spam (score 1000.0, required 5.0)")))
      s.answer = answer(false, "1.0", "Content analysis details:   (1.0 points, 5.0 required)\n")
      const r = yield* Spamd.make({ port: s.port, command: "report" }).onData!(ctx())
      assert.isTrue(s.requests[1]!.startsWith("REPORT SPAMC/1.5\r\n"))
      const annotation = r._tag === "Continue" ? r.edits?.find((e) => e._tag === "Annotate") : undefined
      assert.include(JSON.stringify(annotation), "Content analysis details")
      assert.deepStrictEqual(headersOf(r), ["X-Spam-Score: 1.0", "X-Spam-Status: No, score=1.0 required=5.0"])
    }))

  it.effect("spam = defer | mark | quarantine | accept; reject_score refuses whatever spam says", () =>
    Effect.gen(function*() {
      const s = yield* scripted
      s.answer = answer(true, "7.5", "BAYES_99")
      const deferred = yield* Spamd.make({ port: s.port, spam: "defer" }).onData!(ctx())
      assert.deepStrictEqual(deferred, Verdict.defer(SmtpReply.make(451, "4.7.1", "Message looks like spam, try again later")))
      const marked = yield* Spamd.make({ port: s.port, spam: "mark" }).onData!(ctx())
      assert.deepStrictEqual(headersOf(marked), ["X-Spam-Score: 7.5", "X-Spam-Status: Yes, score=7.5 required=5.0 tests=BAYES_99", "X-Spam: Yes"])
      const quarantined = yield* Spamd.make({ port: s.port, spam: "quarantine" }).onData!(ctx())
      assert.isTrue(quarantined._tag === "Continue" && quarantined.edits!.some((e) => e._tag === "Quarantine"))
      const accepted = yield* Spamd.make({ port: s.port, spam: "accept" }).onData!(ctx())
      assert.deepStrictEqual(headersOf(accepted), ["X-Spam-Score: 7.5", "X-Spam-Status: Yes, score=7.5 required=5.0 tests=BAYES_99"])
      s.answer = answer(true, "20.0")
      const high = yield* Spamd.make({ port: s.port, spam: "mark", rejectScore: 15 }).onData!(ctx())
      assert.strictEqual(high._tag, "Reject")
      s.answer = answer(false, "16.0")
      assert.strictEqual((yield* Spamd.make({ port: s.port, rejectScore: 15 }).onData!(ctx()))._tag, "Reject", "at reject_score even when spamd says no")
    }))

  // Live clock: the timeout case waits real time.
  it.live("errors: an error code, garbage, no Spam header, a hang-up, a dead port, a timeout → through, or 451 with tempfail; never 5xx", () =>
    Effect.gen(function*() {
      const s = yield* scripted
      const cases: ReadonlyArray<(s: Script) => void> = [
        (s) => void (s.answer = "SPAMD/1.0 76 Bad header line: SYMBOLS SPAMC/1.5\r\n"),
        (s) => void (s.answer = "SPAMD/1.1 69 EX_UNAVAILABLE\r\n\r\n"),
        (s) => void (s.answer = "HTTP/1.1 200 OK\r\n\r\nhello"),
        (s) => void (s.answer = "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n"),
        (s) => void (s.answer = "SPAMD/1.1 0 EX_OK\r\nSpam: maybe ; x / y\r\n\r\n"),
        (s) => void (s.hangUp = true)
      ]
      for (const set of cases) {
        s.hangUp = false
        set(s)
        assert.deepStrictEqual(yield* Spamd.make({ port: s.port }).onData!(ctx()), Verdict.Continue, s.answer)
        assert.deepStrictEqual(yield* Spamd.make({ port: s.port, onError: "tempfail" }).onData!(ctx()), Verdict.defer(Spamd.unavailable))
      }
      s.hangUp = false
      s.answer = undefined
      const slow = yield* Spamd.make({ port: s.port, timeout: "300 millis", onError: "tempfail" }).onData!(ctx())
      assert.deepStrictEqual(slow, Verdict.defer(Spamd.unavailable))
      assert.deepStrictEqual(yield* Spamd.make({ port: s.port, timeout: "300 millis" }).onData!(ctx()), Verdict.Continue)
      assert.deepStrictEqual(yield* Spamd.make({ port: 1, onError: "tempfail" }).onData!(ctx()), Verdict.defer(Spamd.unavailable), "connection refused")
      assert.deepStrictEqual(yield* Spamd.make({ port: 1 }).onData!(ctx()), Verdict.Continue)
    }), { timeout: 30_000 })

  it.effect("not scanned: larger than max_size, AUTH and trusted clients (unless check_*)", () =>
    Effect.gen(function*() {
      const s = yield* scripted
      s.answer = answer(true, "1000.0")
      assert.deepStrictEqual(yield* Spamd.make({ port: s.port, maxSize: 10 }).onData!(ctx()), Verdict.Continue)
      assert.deepStrictEqual(yield* Spamd.make({ port: s.port }).onData!(ctx({ user: "alice" })), Verdict.Continue)
      assert.deepStrictEqual(yield* Spamd.make({ port: s.port }).onData!(ctx({ trusted: true })), Verdict.Continue)
      assert.strictEqual(s.requests.length, 0)
      assert.strictEqual((yield* Spamd.make({ port: s.port, checkAuthenticated: true }).onData!(ctx({ user: "alice" })))._tag, "Reject")
    }))

  it("parseResponse reads spamd's answers", () => {
    assert.deepStrictEqual(Spamd.parseResponse("symbols", answer(true, "1000.0", "GTUBE,NO_RELAYS")), {
      spam: true, score: 1000, required: 5, symbols: ["GTUBE", "NO_RELAYS"], report: undefined
    })
    assert.deepStrictEqual(Spamd.parseResponse("check", "SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.0 / 5.0\r\n\r\n"), {
      spam: false, score: -0, required: 5, symbols: [], report: undefined
    })
    assert.strictEqual(Spamd.parseResponse("check", "SPAMD/1.0 76 Bad header line: X"), "spamd error 76: Bad header line: X")
  })
})
