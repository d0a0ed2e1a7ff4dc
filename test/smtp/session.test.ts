/**
 * Session policies over real sockets: recipient limits, ESMTP parameters we do not support,
 * the relay check, the size cap while DATA streams, connection limits (overall and per IP),
 * a client reset in the middle of DATA, the `250 2.0.0 queued as <id>` reply, and recipient
 * authority through host-app lookups that suspend.
 */
import { readdirSync } from "node:fs"
import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import { Listeners } from "../../src/smtp/Listener.ts"
import { Spool } from "../../src/spool/Spool.ts"
import type { TelemetryEvent } from "../../src/telemetry/Telemetry.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { awaitDeliveredId, eventually, queuedId, raw, simpleBody, subscribeEvents, transaction } from "./helpers.ts"

const ehlo = (c: SmtpClient.SmtpClient) =>
  Effect.tap(c.command("EHLO client.test"), (r) => Effect.sync(() => assert.strictEqual(r.code, 250)))

const expectReply = (reply: SmtpClient.Reply, code: number, enhanced: string) => {
  assert.strictEqual(reply.code, code, `${reply.code} ${reply.text}`)
  assert.isTrue(reply.text.startsWith(`${enhanced} `), `${reply.code} ${reply.text}`)
}

const queuedIds = (events: ReadonlyArray<TelemetryEvent>) => events.flatMap((e) => (e._tag === "MessageQueued" ? [e.id] : []))

describe("session: defaults", () => {
  layer(TestIncoming.layer(), { excludeTestServices: true })((it) => {
    it.effect("the 250 after DATA is `250 2.0.0 queued as <16-char id>` and the id is the delivered message's", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        const reply = yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: simpleBody("id") })
        assert.strictEqual(reply.lines.length, 1)
        assert.match(reply.lines[0]!, /^250 2\.0\.0 queued as [0-9A-HJKMNP-TV-Z]{16}$/)
        const id = queuedId(reply)
        const msg = yield* awaitDeliveredId(id)
        assert.strictEqual(msg.id, id)
        assert.include(msg.text, `id ${id}`)
      }))

    it.effect("at least 100 recipients are accepted by default and delivered as one message", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        expectReply(yield* c.command("MAIL FROM:<a@sender.test>"), 250, "2.1.0")
        const rcpts = Array.from({ length: 100 }, (_, i) => `user${i}@example.test`)
        for (const r of rcpts) expectReply(yield* c.command(`RCPT TO:<${r}>`), 250, "2.1.5")
        assert.strictEqual((yield* c.command("DATA")).code, 354)
        yield* c.write(`${simpleBody("hundred")}.\r\n`)
        const msg = yield* awaitDeliveredId(queuedId(yield* c.read))
        assert.lengthOf(msg.envelope.rcptTo, 100)
        assert.deepStrictEqual(msg.recipients.toSorted(), rcpts.toSorted())
      }))

    it.effect("an unknown MAIL parameter is 555 5.5.4; SIZE, BODY and SMTPUTF8 are known", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        const r = yield* c.command("MAIL FROM:<a@sender.test> FOO=bar")
        expectReply(r, 555, "5.5.4")
        assert.include(r.text, "FOO")
        expectReply(yield* c.command("MAIL FROM:<a@sender.test> SIZE=100 BODY=8BITMIME SMTPUTF8"), 250, "2.1.0")
      }))

    it.effect("an unknown RCPT parameter is 555 5.5.4 and the recipient is not added", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        expectReply(yield* c.command("MAIL FROM:<a@sender.test>"), 250, "2.1.0")
        const r = yield* c.command("RCPT TO:<user@example.test> XYZ=1")
        expectReply(r, 555, "5.5.4")
        assert.include(r.text, "XYZ")
        expectReply(yield* c.command("DATA"), 503, "5.5.1")
      }))

    it.effect("a recipient outside the local domains is refused: 554 5.7.1 (no open relay)", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        expectReply(yield* c.command("MAIL FROM:<a@sender.test>"), 250, "2.1.0")
        expectReply(yield* c.command("RCPT TO:<someone@elsewhere.test>"), 554, "5.7.1")
        // Look-alike domains are not ours either.
        expectReply(yield* c.command("RCPT TO:<someone@example.test.evil.test>"), 554, "5.7.1")
        expectReply(yield* c.command("RCPT TO:<someone@sub.example.test>"), 554, "5.7.1")
        expectReply(yield* c.command("RCPT TO:<user@example.test>"), 250, "2.1.5")
      }))
  })
})

describe("session: maxRecipients", () => {
  layer(TestIncoming.layer({ listener: { maxRecipients: 3 } }), { excludeTestServices: true })((it) => {
    it.effect("the recipient after maxRecipients is 452 4.5.3; the accepted ones are delivered", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        expectReply(yield* c.command("MAIL FROM:<a@sender.test>"), 250, "2.1.0")
        for (const r of ["a", "b", "c"]) expectReply(yield* c.command(`RCPT TO:<${r}@example.test>`), 250, "2.1.5")
        // Repeating one already accepted does not count against the limit.
        expectReply(yield* c.command("RCPT TO:<B@example.test>"), 250, "2.1.5")
        expectReply(yield* c.command("RCPT TO:<d@example.test>"), 452, "4.5.3")
        assert.strictEqual((yield* c.command("DATA")).code, 354)
        yield* c.write(`${simpleBody("three")}.\r\n`)
        const msg = yield* awaitDeliveredId(queuedId(yield* c.read))
        assert.lengthOf(msg.envelope.rcptTo, 3)
        assert.notInclude(msg.envelope.rcptTo, "d@example.test")
      }))
  })
})

describe("session: size cap while DATA streams", () => {
  layer(TestIncoming.layer({ listener: { maxSize: 4_000 } }), { excludeTestServices: true })((it) => {
    it.effect("a body over maxSize is 552 5.3.4, nothing is queued, and the connection goes on", () =>
      Effect.gen(function*() {
        const events = yield* subscribeEvents
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        const big = `Subject: big\r\n\r\n${"0123456789012345678901234567890123456789\r\n".repeat(500)}`
        const reply = yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: big })
        expectReply(reply, 552, "5.3.4")
        const ok = queuedId(yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: simpleBody("small") }))
        const msg = yield* awaitDeliveredId(ok)
        assert.include(msg.text, "Subject: small")
        assert.deepStrictEqual(queuedIds(yield* events.drain), [ok])
      }))

    it.effect("a body of exactly maxSize is accepted", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        const head = "Subject: exact\r\n\r\n"
        const body = `${head}${"x".repeat(4_000 - head.length - 2)}\r\n`
        assert.strictEqual(Buffer.byteLength(body), 4_000)
        const msg = yield* awaitDeliveredId(queuedId(yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body })))
        assert.isTrue(msg.text.endsWith(body))
      }))
  })
})

describe("session: maxConnections", () => {
  layer(TestIncoming.layer({ listener: { maxConnections: 2 } }), { excludeTestServices: true })((it) => {
    it.effect("the connection over the limit gets 421 4.7.0 at connect; a freed slot is reused", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const listener = (yield* Listeners).all[0]!
        const a = yield* SmtpClient.connect({ port })
        const b = yield* SmtpClient.connect({ port })
        assert.strictEqual(a.greeting.code, 220)
        assert.strictEqual(b.greeting.code, 220)
        const c = yield* SmtpClient.connect({ port })
        assert.strictEqual(c.greeting.code, 421)
        assert.match(c.greeting.text, /^4\.7\.0 Too many connections/)
        yield* c.closed
        // The refused one did not take a slot; closing one of the two frees one.
        assert.strictEqual(yield* listener.connections, 2)
        yield* b.command("QUIT")
        yield* b.closed
        assert.isTrue(yield* eventually(Effect.map(listener.connections, (n) => n === 1)))
        const d = yield* SmtpClient.connect({ port })
        assert.strictEqual(d.greeting.code, 220)
      }))
  })
})

describe("session: maxConnectionsPerIp", () => {
  layer(TestIncoming.layer({ listener: { maxConnectionsPerIp: 1 } }), { excludeTestServices: true })((it) => {
    it.effect("a second connection from the same address gets 421 4.7.0; another address is served", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const a = yield* SmtpClient.connect({ port })
        assert.strictEqual(a.greeting.code, 220)
        const b = yield* SmtpClient.connect({ port })
        assert.strictEqual(b.greeting.code, 421)
        assert.match(b.greeting.text, /^4\.7\.0 Too many connections from your address/)
        yield* b.closed
        // Linux routes all of 127/8 to loopback: a client bound to 127.0.0.2 is another address.
        const other = yield* raw({ port, localAddress: "127.0.0.2" }).pipe(Effect.option)
        if (process.platform === "linux") assert.strictEqual(other._tag, "Some", "could not bind 127.0.0.2")
        if (other._tag === "Some") {
          const greeting = yield* other.value.waitFor(/\r\n/)
          assert.match(greeting, /^220 /)
        }
      }))
  })
})

describe("session: client reset in the middle of DATA", () => {
  // A small in-memory threshold so the body being received is in a spool file when the client goes.
  layer(TestIncoming.layer({ spool: { inMemoryThreshold: 1_024 } }), { excludeTestServices: true })((it) => {
    it.effect("leaves no queued message, no spool file, and the server keeps serving", () =>
      Effect.gen(function*() {
        const spool = yield* Spool
        const events = yield* subscribeEvents
        const port = yield* TestIncoming.port
        const spoolFiles = () => readdirSync(spool.dir).filter((f) => f.endsWith(".spool"))
        assert.deepStrictEqual(spoolFiles(), [])

        yield* Effect.scoped(Effect.gen(function*() {
          const c = yield* SmtpClient.connect({ port })
          yield* ehlo(c)
          expectReply(yield* c.command("MAIL FROM:<a@sender.test>"), 250, "2.1.0")
          expectReply(yield* c.command("RCPT TO:<user@example.test>"), 250, "2.1.5")
          assert.strictEqual((yield* c.command("DATA")).code, 354)
          yield* c.write(`Subject: reset\r\n\r\n${"y".repeat(76)}\r\n`.repeat(200))
          // The body passed the threshold: it is in a spool file now (this test is about that file).
          assert.isTrue(yield* eventually(Effect.sync(() => spoolFiles().length === 1)), "the body spilled to disk")
          c.socket.resetAndDestroy()
          yield* c.closed
        }))

        assert.isTrue(yield* eventually(Effect.sync(() => spoolFiles().length === 0)), `left: ${spoolFiles().join(", ")}`)
        assert.isTrue(yield* eventually(Effect.map(spool.memoryInUse, (n) => n === 0)))
        // The server keeps serving: a following transaction succeeds.
        const c = yield* SmtpClient.connect({ port })
        yield* ehlo(c)
        const ok = queuedId(yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: simpleBody("after") }))
        const msg = yield* awaitDeliveredId(ok)
        assert.include(msg.text, "Subject: after")
        assert.deepStrictEqual(queuedIds(yield* events.drain), [ok])
      }))
  })
})

describe("session: recipient authority through host-app lookups", () => {
  // Lookups that suspend (as a database query would): RCPT then runs as a fiber, after the
  // decisions the lists make at once.
  const relay = {
    recipients: ["listed@example.test"],
    lookupRecipient: (address: string) =>
      Effect.andThen(
        Effect.sleep("5 millis"),
        address.startsWith("broken@") ? Effect.fail(new Error("directory down")) : Effect.succeed(address.startsWith("known@"))
      ),
    localDomain: (domain: string) => Effect.andThen(Effect.sleep("5 millis"), Effect.succeed(domain === "hosted.test"))
  }
  layer(TestIncoming.layer({ relay }), { excludeTestServices: true })((it) => {
    it.effect("a suspending lookup answers RCPT: known 250, unknown 550 5.1.1, failed 451 4.3.0; a hosted domain is local", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* ehlo(c)
        expectReply(yield* c.command("MAIL FROM:<a@sender.test>"), 250, "2.1.0")
        expectReply(yield* c.command("RCPT TO:<listed@example.test>"), 250, "2.1.5")
        expectReply(yield* c.command("RCPT TO:<known@example.test>"), 250, "2.1.5")
        expectReply(yield* c.command("RCPT TO:<nobody@example.test>"), 550, "5.1.1")
        expectReply(yield* c.command("RCPT TO:<broken@example.test>"), 451, "4.3.0")
        expectReply(yield* c.command("RCPT TO:<known@hosted.test>"), 250, "2.1.5")
        expectReply(yield* c.command("RCPT TO:<known@elsewhere.test>"), 554, "5.7.1")
        assert.strictEqual((yield* c.command("DATA")).code, 354)
        yield* c.write(simpleBody("lookups"))
        yield* c.write(".\r\n")
        const msg = yield* awaitDeliveredId(queuedId(yield* c.read))
        assert.deepStrictEqual([...msg.envelope.rcptTo].toSorted(), ["known@example.test", "known@hosted.test", "listed@example.test"])
      }))
  })
})
