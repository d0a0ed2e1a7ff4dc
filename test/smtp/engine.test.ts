/**
 * The protocol-engine behaviours Incoming adds to smtp-server (src/smtp/internal/engine.ts):
 * no hard-coded pre-greeting delay, an optional early-talker delay, a per-command deadline on
 * top of the idle timeout, a total connection time limit, command and error budgets, and
 * exactly one enhanced status code per reply. The engine reaches into unexported behaviour of
 * smtp-server 3.21, so these tests are what tells us an upgrade changed it.
 */
import { readFileSync } from "node:fs"
import type { AddressInfo } from "node:net"
import { assert, describe, it, layer } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import nodemailer from "nodemailer"
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js"
import { IncomingSmtpServer } from "../../src/smtp/internal/engine.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import {
  enhancedCodeViolations,
  hasOpenssl,
  queuedId,
  raw,
  selfSignedCert,
  simpleBody,
  transaction
} from "./helpers.ts"

/** Replies whose lines are exempt from enhanced codes: the greeting, EHLO/HELO and 3xx (RFC 2034 §3). */
const exempt = (command: string, reply: SmtpClient.Reply) =>
  /^(EHLO|HELO)\b/i.test(command) || (reply.code >= 300 && reply.code < 400)

describe("engine: greeting", () => {
  layer(TestIncoming.layer(), { excludeTestServices: true })((it) => {
    // smtp-server 3.21 waits a hard-coded 100 ms before every greeting (an early-talker check
    // nobody can switch off). Our engine starts the connection itself. 20 sequential connects
    // with that delay take at least 20 × 100 ms = 2 s; without it, a few ms each. If an
    // smtp-server upgrade brings the delay back (or renames what engine.ts overrides), this
    // test fails: fix engine.ts, do not raise the bound.
    it.effect("20 sequential connects get their greeting without the library's 100 ms delay", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const started = Date.now()
        const each: Array<number> = []
        for (let i = 0; i < 20; i++) {
          const t0 = Date.now()
          const greeting = yield* Effect.scoped(Effect.map(SmtpClient.connect({ port }), (c) => c.greeting))
          each.push(Date.now() - t0)
          assert.strictEqual(greeting.code, 220)
          assert.match(greeting.text, /^mx\.test ESMTP/)
        }
        const total = Date.now() - started
        assert.isBelow(total, 1_000, `20 greetings took ${total} ms (${each.join(", ")})`)
        // No single greeting waited for the library's timer either.
        assert.isBelow(Math.min(...each), 100, `fastest greeting took ${Math.min(...each)} ms`)
      }))

    it.effect("the engine still overrides what smtp-server 3.21 calls (connectionReady, _onCommand, send)", () =>
      Effect.sync(() => {
        // engine.ts and commands.ts patch these per connection; a rename in an upgrade would
        // silently disable the deadlines and budgets, or hand MAIL/RCPT back to the library's
        // address parser, so fail loudly here as well.
        for (
          const name of [
            "connectionReady", "_onCommand", "send", "init", "_onClose",
            "_parseAddressCommand", "handler_MAIL", "handler_RCPT", "emitConnection"
          ] as const
        ) {
          assert.strictEqual(typeof SMTPConnection.prototype[name], "function", name)
        }
      }))
  })
})

describe("engine: greetingDelayMs", () => {
  layer(TestIncoming.layer({ listener: { greetingDelayMs: 300 } }), { excludeTestServices: true })((it) => {
    it.effect("a client that talks before the greeting gets 421 'talk too soon' and is disconnected", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const s = yield* raw({ port })
        s.socket.write("EHLO early.test\r\n")
        const text = yield* s.waitFor(/\r\n/)
        yield* s.closed
        assert.match(text, /^421 .*talk too soon/i)
        assert.notInclude(s.received(), "220 ", "an early talker never gets the greeting")
      }))

    it.effect("a polite client gets the greeting after at least the delay, and is served", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const t0 = Date.now()
        const c = yield* SmtpClient.connect({ port })
        const waited = Date.now() - t0
        assert.strictEqual(c.greeting.code, 220)
        // The timer cannot fire early; 1 ms of slack for Date.now() rounding. The library's own
        // 100 ms timer must not start the session first.
        assert.isAtLeast(waited, 299, `greeting after ${waited} ms`)
        assert.isBelow(waited, 2_000)
        const ehlo = yield* c.command("EHLO polite.test")
        assert.strictEqual(ehlo.code, 250)
      }))
  })
})

describe("engine: per-command deadline", () => {
  layer(
    TestIncoming.layer({ listener: { commandTimeoutMs: 500, dataTimeoutMs: 5_000, idleTimeoutMs: 60_000 } }),
    { excludeTestServices: true }
  )((it) => {
    it.effect("a client trickling a byte every 100 ms without ending the line gets 421 4.4.2", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual((yield* c.command("EHLO trickle.test")).code, 250)
        const t0 = Date.now()
        let sent = 0
        // Each byte restarts the idle timer (60 s here): only the command deadline can end this.
        const trickle = yield* Effect.forkChild(Effect.forever(Effect.andThen(
          Effect.sync(() => {
            if (!c.socket.destroyed) {
              c.socket.write("N")
              sent++
            }
          }),
          Effect.sleep(100)
        )))
        const reply = yield* c.read
        yield* c.closed
        const elapsed = Date.now() - t0
        yield* Fiber.interrupt(trickle)
        assert.strictEqual(reply.code, 421)
        assert.match(reply.text, /^4\.4\.2 Command timeout/)
        assert.isAtLeast(sent, 3, "the client kept sending bytes")
        assert.isAtLeast(elapsed, 400)
        assert.isBelow(elapsed, 2_000)
      }))

    it.effect("the deadline is per command: a client that completes commands in time stays connected", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual((yield* c.command("EHLO busy.test")).code, 250)
        // 5 × 250 ms = 1.25 s in all, well past one 500 ms deadline.
        for (let i = 0; i < 5; i++) {
          yield* Effect.sleep(250)
          const noop = yield* c.command("NOOP")
          assert.strictEqual(noop.code, 250)
        }
      }))

    it.effect("while DATA streams the deadline is the DATA budget, not the command one", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual((yield* c.command("EHLO slow.test")).code, 250)
        assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
        assert.strictEqual((yield* c.command("RCPT TO:<user@example.test>")).code, 250)
        assert.strictEqual((yield* c.command("DATA")).code, 354)
        yield* c.write("Subject: slow\r\n\r\n")
        for (let i = 0; i < 6; i++) {
          yield* Effect.sleep(150) // 900 ms of DATA in all, > commandTimeoutMs
          yield* c.write(`line ${i}\r\n`)
        }
        yield* c.write(".\r\n")
        const reply = yield* c.read
        assert.strictEqual(reply.code, 250, reply.text)
      }))
  })
})

describe("engine: maxConnectionTimeMs", () => {
  layer(TestIncoming.layer({ listener: { maxConnectionTimeMs: 500 } }), { excludeTestServices: true })((it) => {
    it.effect("an active connection is closed with 421 4.4.2 once its total time is up", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const t0 = Date.now()
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual((yield* c.command("EHLO long.test")).code, 250)
        let last = yield* c.command("NOOP")
        let noops = 0
        while (last.code === 250) {
          noops++
          yield* Effect.sleep(100)
          // The 421 may arrive (and the socket close) while we pause: read what was sent anyway.
          yield* c.write("NOOP\r\n").pipe(Effect.ignore)
          last = yield* c.read
        }
        yield* c.closed
        assert.strictEqual(last.code, 421)
        assert.match(last.text, /^4\.4\.2 Connection time limit/)
        assert.isAtLeast(noops, 2, "the client was active all along")
        assert.isAtLeast(Date.now() - t0, 450)
      }))
  })
})

describe("engine: command budget", () => {
  layer(TestIncoming.layer({ listener: { maxCommands: 5 } }), { excludeTestServices: true })((it) => {
    it.effect("the command after maxCommands gets 421 4.7.0 and the connection is closed", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual((yield* c.command("EHLO many.test")).code, 250)
        for (let i = 0; i < 4; i++) assert.strictEqual((yield* c.command("NOOP")).code, 250)
        const sixth = yield* c.command("NOOP")
        assert.strictEqual(sixth.code, 421)
        assert.match(sixth.text, /^4\.7\.0 Too many commands/)
        yield* c.closed
      }))
  })
})

describe("engine: error budget", () => {
  layer(TestIncoming.layer({ listener: { maxErrors: 3 } }), { excludeTestServices: true })((it) => {
    it.effect("the error after maxErrors is answered, then 421 4.7.0 and close", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 503) // 1
        assert.strictEqual((yield* c.command("EHLO errors.test")).code, 250)
        assert.strictEqual((yield* c.command("BOGUS")).code, 500) // 2
        assert.strictEqual((yield* c.command("RCPT TO:<user@example.test>")).code, 503) // 3
        assert.strictEqual((yield* c.command("NOOP")).code, 250, "successes do not count")
        const fourth = yield* c.command("DATA") // 4: over the budget
        assert.strictEqual(fourth.code, 503)
        const bye = yield* c.read
        assert.strictEqual(bye.code, 421)
        assert.match(bye.text, /^4\.7\.0 Too many errors/)
        yield* c.closed
      }))
  })
})

describe("engine: idle timeout", () => {
  layer(TestIncoming.layer({ listener: { idleTimeoutMs: 300 } }), { excludeTestServices: true })((it) => {
    it.effect("a silent client gets 421 4.4.2 and is disconnected", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual((yield* c.command("EHLO idle.test")).code, 250)
        const t0 = Date.now()
        const reply = yield* c.read
        yield* c.closed
        assert.strictEqual(reply.code, 421)
        assert.match(reply.text, /^4\.4\.2 .*[Tt]imeout/)
        assert.isAtLeast(Date.now() - t0, 250)
      }))
  })
})

describe("engine: enhanced status codes", () => {
  layer(TestIncoming.layer({ listener: { maxSize: 10_000, maxRecipients: 2, maxErrors: 24 } }), { excludeTestServices: true })((it) => {
    it.effect("every reply but the greeting, EHLO/HELO and 3xx carries exactly one RFC 3463 code", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const checked: Array<[string, SmtpClient.Reply]> = []
        const c = yield* SmtpClient.connect({ port })
        const run = (line: string) =>
          Effect.tap(c.command(line), (reply) => Effect.sync(() => checked.push([line, reply])))
        const commands = [
          "MAIL FROM:<a@sender.test>", // 503 before HELO
          "HELO", // 501, exempt
          "EHLO codes.test",
          "NOOP",
          "HELP",
          "VRFY someone",
          "VRFY",
          "EXPN list",
          "BOGUS",
          "STARTTLS", // disabled on this listener
          "AUTH PLAIN",
          "RCPT TO:<user@example.test>", // 503
          "DATA", // 503
          "MAIL FROM:bad",
          "MAIL FROM:<a@sender.test> FOO=bar",
          "MAIL FROM:<a@sender.test> SIZE=99999999",
          "MAIL FROM:<a@sender.test> SIZE=abc",
          "MAIL FROM:<a@sender.test> BODY=9BIT",
          "MAIL FROM:<a@sender.test>",
          "MAIL FROM:<a@sender.test>", // nested
          "RCPT TO:<x@elsewhere.test>", // relay
          "RCPT TO:bad",
          "RCPT TO:<user@example.test> FOO=1",
          "RCPT TO:<user@example.test> NOTIFY",
          "RCPT TO:<a@example.test>",
          "RCPT TO:<b@example.test>",
          "RCPT TO:<c@example.test>", // 452 too many
          "RSET"
        ]
        for (const line of commands) yield* run(line)
        // Transactions: accepted, too big, bare LF — each ends with a reply to the final dot.
        const bodies = [simpleBody("ok"), `Subject: big\r\n\r\n${"x".repeat(20_000)}\r\n`, "Subject: lf\r\n\r\nbare\nLF\r\n"]
        for (const body of bodies) {
          const reply = yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body })
          checked.push(["<end of DATA>", reply])
        }
        queuedId(checked[checked.length - 3]![1])
        yield* run("QUIT")

        // Replies that close the connection: too many errors, line too long, HTTP.
        // smtp-server's own limit on unrecognized commands (10), then our error budget.
        const u = yield* SmtpClient.connect({ port })
        for (let i = 0; i < 10; i++) checked.push(["BOGUS", yield* u.command("BOGUS")])
        assert.strictEqual(checked[checked.length - 1]![1].code, 421)
        const e = yield* SmtpClient.connect({ port })
        for (let i = 0; i < 25; i++) checked.push(["DATA", yield* e.command("DATA")])
        const bye = yield* e.read
        assert.match(bye.text, /Too many errors/)
        checked.push(["<after DATA>", bye])
        const l = yield* SmtpClient.connect({ port })
        checked.push(["<long line>", yield* l.command(`NOOP ${"x".repeat(20_000)}`)])
        const h = yield* SmtpClient.connect({ port })
        checked.push(["GET", yield* h.command("GET / HTTP/1.1")])

        const codes = new Set(checked.map(([, r]) => r.code))
        for (const code of [250, 221, 214, 252, 421, 452, 500, 501, 503, 550, 552, 554, 555]) {
          assert.isTrue(codes.has(code), `the transcript covers a ${code}`)
        }
        const bad: Array<string> = []
        for (const [command, reply] of checked) {
          if (exempt(command, reply)) continue
          for (const line of enhancedCodeViolations(reply.lines)) bad.push(`${command} → ${line}`)
        }
        assert.deepStrictEqual(bad, [], `replies without exactly one enhanced code:\n${bad.join("\n")}`)
        // The exemptions are real: the greeting and EHLO lines carry none.
        assert.notMatch(c.greeting.lines[0]!, /^220 \d\./)
        const ehlo = checked.find(([cmd]) => cmd.startsWith("EHLO"))![1]
        assert.isTrue(ehlo.lines.some((line) => /^250[ -]SIZE 10000$/.test(line)))
      }))
  })
})

describe("engine: per-connection state", () => {
  // The guards (deadline timers, budgets) must go when the connection goes, also after STARTTLS:
  // smtp-server then drops every listener of the plain socket, so cleanup tied to that socket's
  // 'close' never ran and each STARTTLS session kept its timers and guard until
  // maxConnectionTimeMs (1 h by default).
  it.live.skipIf(!hasOpenssl)("guards and timers are released when a STARTTLS session ends", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const { cert, key } = selfSignedCert(dir)
      const closed = yield* Deferred.make<void>()
      const server = new IncomingSmtpServer({
        key: readFileSync(key),
        cert: readFileSync(cert),
        logger: false,
        disableReverseLookup: true,
        authOptional: true,
        disabledCommands: ["AUTH"],
        onClose: () => {
          Deferred.doneUnsafe(closed, Effect.void)
        }
      }, {
        greetingDelayMs: 0,
        commandTimeoutMs: 60_000,
        dataTimeoutMs: 60_000,
        maxConnectionTimeMs: 3_600_000,
        maxCommands: 1000,
        maxErrors: 10
      })
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => {
          server.listen(0, "127.0.0.1", () => resume(Effect.void))
        }),
        () => Effect.callback<void>((resume) => server.close(() => resume(Effect.void)))
      )
      const port = (server.server.address() as AddressInfo).port
      const transport = nodemailer.createTransport({
        host: "127.0.0.1",
        port,
        secure: false,
        requireTLS: true,
        tls: { rejectUnauthorized: false }
      })
      const ok = yield* Effect.promise(() => transport.verify())
      assert.isTrue(ok)
      yield* Deferred.await(closed)
      assert.strictEqual(server.guards.size, 0, "the STARTTLS session's guard is gone")
    }))
})
