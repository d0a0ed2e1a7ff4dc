/**
 * The milter rule against a scripted filter of ours (test/support/scriptedMilter.ts), through a
 * real Incoming over SMTP: what is sent at each stage and in which order (negotiation, macros,
 * CONNECT with the client address, HELO, MAIL, RCPT, DATA, each header, end of headers, the
 * body in chunks of at most 65535 bytes, end of message, ABORT, QUIT), one filter connection per
 * SMTP session reused across transactions; every reply (continue, accept, reject, tempfail, reply
 * code, discard, progress, skip) and modification (add, insert, change, delete header, replace
 * body in chunks — in memory and spilled to disk —, add recipient with and without ESMTP
 * arguments, delete recipient, change sender, quarantine: held in the queue until released,
 * also on a sync-ack route and through the standalone server and `incoming queue`); steps the filter declines or leaves
 * unanswered; modifications it did not negotiate; and failures — filter down, silent, closing
 * mid-message, oversized or malformed packets, a new body over the size cap — giving the
 * `on_error` verdict, never a 5xx.
 */
import { existsSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, PubSub } from "effect"
import * as DA from "../../../src/delivery/DeliveryAdapter.ts"
import * as Router from "../../../src/delivery/Router.ts"
import * as Codec from "../../../src/policy/milter/Codec.ts"
import * as Connection from "../../../src/policy/milter/Connection.ts"
import * as Milter from "../../../src/policy/rules/Milter.ts"
import { QueueAdmin } from "../../../src/queue/QueueAdmin.ts"
import { Listeners } from "../../../src/smtp/Listener.ts"
import * as Telemetry from "../../../src/telemetry/Telemetry.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../../src/testing/index.ts"
import { freePort } from "../../support/milters.ts"
import { cli, waitUntil } from "../../support/queueCli.ts"
import * as Scripted from "../../support/scriptedMilter.ts"
import { serve, writeStandaloneConfig } from "../../support/server.ts"

const message = (subject: string, body = "Hello,\r\nbody line\r\n", extra = "") =>
  `From: a@sender.test\r\nTo: u@example.test\r\nSubject: ${subject}\r\n  folded\r\nX-Remove: me\r\n${extra}\r\n${body}`

/** Incoming with one milter rule in front of the capturing adapter. */
const server = (address: string, options: Partial<Milter.MilterOptions> = {}, extra: TestIncoming.TestOptions = {}) =>
  Effect.gen(function*() {
    const parsed = Connection.parseAddress(address)
    assert.ok(typeof parsed !== "string")
    const rule = yield* Milter.make({ name: "scripted", address: parsed, hostname: "mx.test", timeoutMs: 2_000, ...options })
    const ctx = yield* Layer.build(TestIncoming.layer({ policies: { rules: [rule], timeoutMs: 20_000 }, ...extra }))
    return {
      port: Context.get(ctx, Listeners).all[0]!.port,
      captured: Context.get(ctx, CapturingAdapter.Captured),
      admin: Context.get(ctx, QueueAdmin),
      events: yield* Context.get(ctx, Telemetry.Telemetry).subscribe
    }
  })

const commands = (c: ReadonlyArray<Scripted.Received>) => c.map((p) => (p.command === "D" ? `D${p.data.toString("latin1", 0, 1)}` : p.command)).join(" ")

/** Waits (bounded) until the filter saw `n` connections closed. */
const closedCount = (m: Scripted.ScriptedMilter, n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && m.closed.filter(Boolean).length < n; i++) yield* Effect.sleep("50 millis")
    return m.closed.filter(Boolean).length
  })

const sendOne = (port: number, data: string, to: ReadonlyArray<string> = ["u@example.test"]) =>
  SmtpClient.send({ port, from: "a@sender.test", to, data })

describe("milter: protocol against a scripted filter", () => {
  it.live("every stage in order, macros, headers as received, body chunks, one connection for two transactions, QUIT", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start()
      const { captured, port } = yield* server(m.address)
      const big = "x".repeat(998) + "\r\n"
      const body = big.repeat(150) // 150 KB: three body chunks
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      for (const subject of ["one", "two"]) {
        assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test> SIZE=1000")).code, 250)
        assert.strictEqual((yield* c.command("RCPT TO:<u@example.test>")).code, 250)
        assert.strictEqual((yield* c.command("RCPT TO:<v@example.test>")).code, 250)
        yield* c.command("DATA")
        yield* c.write(`${SmtpClient.dotStuff(message(subject, subject === "one" ? body : "short\r\n"))}.\r\n`)
        assert.strictEqual((yield* c.read).code, 250)
      }
      yield* c.command("QUIT")
      const stored = yield* captured.awaitDelivered(2)
      assert.strictEqual(yield* closedCount(m, 1), 1)
      assert.strictEqual(m.connections.length, 1, "one filter connection for the session")
      const conn = m.connections[0]!
      const txn = "DM M DR R DR R DT T L L L L DN N B B B DE E"
      assert.strictEqual(commands(conn), `O DC C H ${txn} ${txn.replace("B B B", "B")} Q`)
      // Negotiation: version 6, our actions and steps.
      const o = conn[0]!.data
      assert.deepStrictEqual([o.readUInt32BE(0), o.readUInt32BE(4), o.readUInt32BE(8)], [6, Connection.offeredActions, Connection.offeredSteps])
      // CONNECT: host name, IPv4, port, the client's address; the connect macros.
      const connect = conn.find((p) => p.command === "C")!
      assert.deepStrictEqual(Scripted.strings(connect.data).slice(0, 1), ["[127.0.0.1]"])
      assert.strictEqual(connect.data.toString("latin1", 12, 13), "4")
      assert.strictEqual(connect.data.toString("latin1", 15, 24), "127.0.0.1")
      assert.deepStrictEqual(Scripted.macrosBefore(conn, "C"), {
        j: "mx.test",
        "{daemon_name}": "test",
        v: "Incoming",
        _: "unknown [127.0.0.1]",
        "{client_addr}": "127.0.0.1",
        "{client_name}": "unknown"
      })
      assert.deepStrictEqual(Scripted.strings(conn.find((p) => p.command === "H")!.data), ["client.test"])
      assert.deepStrictEqual(Scripted.strings(conn.find((p) => p.command === "M")!.data), ["<a@sender.test>", "SIZE=1000"])
      assert.deepStrictEqual(conn.filter((p) => p.command === "R").slice(0, 2).map((p) => Scripted.strings(p.data)), [["<u@example.test>"], ["<v@example.test>"]])
      assert.strictEqual(Scripted.macrosBefore(conn, "R")["{rcpt_host}"], "example.test")
      // Headers as received: folding kept with LF, leading space stripped.
      assert.deepStrictEqual(conn.filter((p) => p.command === "L").slice(0, 4).map((p) => Scripted.strings(p.data)), [
        ["From", "a@sender.test"],
        ["To", "u@example.test"],
        ["Subject", "one\n  folded"],
        ["X-Remove", "me"]
      ])
      // The body after the empty line, in chunks of at most 65535 bytes, whole.
      const chunks = conn.filter((p) => p.command === "B")
      assert.deepStrictEqual(chunks.slice(0, 3).map((p) => p.data.length), [65535, 65535, body.length - 2 * 65535])
      assert.strictEqual(Buffer.concat(chunks.slice(0, 3).map((p) => p.data)).toString(), body)
      // `i` is the queue id of the stored message.
      const ids = conn.filter((p) => p.command === "D" && p.data.toString("latin1", 0, 1) === "E").map((p) => Scripted.strings(p.data.subarray(1))[1])
      assert.deepStrictEqual(ids.sort(), stored.map((s) => s.id).sort())
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("modifications at end of message: add, insert, change and delete header, quarantine", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        on: (p) =>
          p.command === "E"
            ? [
              Scripted.reply.addHeader("X-Filter", "checked\n\tsecond line"),
              Scripted.reply.insertHeader(0, "X-Top", "inserted"),
              Scripted.reply.changeHeader(1, "Subject", "changed"),
              Scripted.reply.changeHeader(1, "X-Remove", ""),
              Scripted.reply.quarantine("looks odd"),
              Scripted.reply.progress,
              Scripted.reply.continue
            ]
            : undefined
      })
      const { admin, captured, port } = yield* server(m.address)
      const sent = yield* sendOne(port, message("orig"))
      assert.strictEqual(sent.code, 250)
      // Quarantined: held until released (the next describe block has the details).
      assert.isTrue(yield* admin.unhold(/queued as (\S+)/.exec(sent.text)![1]!))
      const [stored] = yield* captured.awaitDelivered(1)
      const head = stored!.text.slice(stored!.text.indexOf("X-Top"))
      assert.match(head, /^X-Top: inserted\r\nFrom: a@sender\.test\r\nTo: u@example\.test\r\nSubject: changed\r\nX-Filter: checked\r\n\tsecond line\r\n\r\nHello,/)
      assert.notInclude(stored!.text, "X-Remove")
      assert.deepStrictEqual(stored!.envelope.quarantine, { rule: "scripted", reason: "looks odd" })
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("replies: reject at MAIL, tempfail at one RCPT, reply code at end of message, accept stops the filter, ABORT before the next MAIL", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        on: (p, conn) => {
          const s = Scripted.strings(p.data)
          if (p.command === "M" && s[0] === "<bad@sender.test>") return [Scripted.reply.reject]
          if (p.command === "M" && s[0] === "<ok@sender.test>") return [Scripted.reply.accept]
          if (p.command === "R" && s[0] === "<busy@example.test>") return [Scripted.reply.tempfail]
          if (p.command === "E" && conn.filter((q) => q.command === "E").length === 1) return [Scripted.reply.code("554 5.7.1 Go away\r\n")]
          return undefined
        }
      })
      const { captured, port } = yield* server(m.address)
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      const bad = yield* c.command("MAIL FROM:<bad@sender.test>")
      assert.deepStrictEqual([bad.code, bad.text], [550, "5.7.1 Command rejected"])
      assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
      const busy = yield* c.command("RCPT TO:<busy@example.test>")
      assert.deepStrictEqual([busy.code, busy.text], [451, "4.7.1 Service unavailable - try again later"])
      assert.strictEqual((yield* c.command("RCPT TO:<u@example.test>")).code, 250)
      yield* c.command("DATA")
      yield* c.write(`${SmtpClient.dotStuff(message("first"))}.\r\n`)
      const refused = yield* c.read
      assert.deepStrictEqual([refused.code, refused.text], [554, "5.7.1 Go away"])
      // Accepted at MAIL: the rest of the transaction is not sent to the filter, and it is stored.
      assert.strictEqual((yield* c.command("MAIL FROM:<ok@sender.test>")).code, 250)
      assert.strictEqual((yield* c.command("RCPT TO:<u@example.test>")).code, 250)
      yield* c.command("DATA")
      yield* c.write(`${SmtpClient.dotStuff(message("second"))}.\r\n`)
      assert.strictEqual((yield* c.read).code, 250)
      // A transaction the filter saw begin and never end: ABORT before the next MAIL.
      assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
      assert.strictEqual((yield* c.command("RSET")).code, 250)
      assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
      yield* c.command("QUIT")
      yield* captured.awaitDelivered(1)
      assert.strictEqual(yield* closedCount(m, 1), 1)
      // Refused MAIL; a transaction refused at end of message; one accepted at MAIL (not sent
      // on); one reset after MAIL, so the next MAIL starts with ABORT; QUIT at the end.
      assert.strictEqual(commands(m.connections[0]!), "O DC C H DM M DM M DR R DR R DT T L L L L DN N B DE E DM M A DM M A DM M Q")
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("declined steps are not sent; unanswered steps are not waited for; macro lists of the filter's own", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        steps: Codec.Step.NoHelo | Codec.Step.NoHeaders | Codec.Step.NoBody | Codec.Step.NoReplyRcpt | Codec.Step.NoReplyConnect,
        macros: { [Codec.MacroStage.connect]: "{client_addr}", [Codec.MacroStage.mail]: "{mail_addr} {auth_type}" },
        // A filter that does not answer RCPT or CONNECT (it said so): replying would desynchronise.
        on: (p) => (p.command === "R" || p.command === "C" ? [] : undefined)
      })
      const { captured, port } = yield* server(m.address)
      assert.strictEqual((yield* sendOne(port, message("skips"))).code, 250)
      yield* captured.awaitDelivered(1)
      yield* closedCount(m, 1)
      assert.strictEqual(commands(m.connections[0]!), "O DC C DM M DR R DT T DN N DE E Q")
      assert.deepStrictEqual(Scripted.macrosBefore(m.connections[0]!, "C"), { "{client_addr}": "127.0.0.1" })
      assert.deepStrictEqual(Scripted.macrosBefore(m.connections[0]!, "M"), { "{mail_addr}": "a@sender.test" })
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("skip stops the body; progress keeps a slow filter within its deadline; discard: 250, stored nowhere, recorded", () =>
    Effect.gen(function*() {
      const slow = Array.from({ length: 6 }, (_, i) => ({ delayMs: 400 * (i + 1), then: Scripted.reply.progress }))
      let ends = 0
      const m = yield* Scripted.start({
        on: (p) => {
          if (p.command === "B") return [Scripted.reply.skip]
          if (p.command === "E") ends++
          if (p.command === "E" && ends === 1) return [...slow, { delayMs: 2_800, then: Scripted.reply.continue }]
          if (p.command === "E" && ends === 2) return [Scripted.reply.discard]
          return undefined
        }
      })
      // 1 s deadline per reply; the filter takes 2.8 s but says progress every 0.4 s.
      const { captured, events, port } = yield* server(m.address, { timeoutMs: 1_000 })
      const body = "y".repeat(70_000) + "\r\n"
      assert.strictEqual((yield* sendOne(port, message("slow", body))).code, 250)
      const discarded = yield* sendOne(port, message("discarded"))
      assert.strictEqual(discarded.code, 250)
      assert.strictEqual((yield* sendOne(port, message("after"))).code, 250)
      const stored = yield* captured.awaitDelivered(2)
      yield* closedCount(m, 3)
      assert.strictEqual(commands(m.connections[0]!).split(" ").filter((c) => c === "B").length, 1, "one body chunk, then skip")
      assert.strictEqual(m.connections[0]!.at(-1)!.command, "Q", "no failure: the connection ended with QUIT")
      assert.deepStrictEqual(stored.map((s) => /Subject: (\w+)/.exec(s.text)![1]).sort(), ["after", "slow"])
      const id = /queued as (\S+)/.exec(discarded.text)![1]
      const seen = (yield* PubSub.takeAll(events)).filter((e) => e._tag === "MessageDiscarded")
      assert.deepStrictEqual(seen, [{ _tag: "MessageDiscarded", id: id!, rule: "scripted", reason: "discarded by milter scripted", listener: "test" }])
    }).pipe(Effect.scoped), { timeout: 60_000 })
})

describe("milter: the client address behind a PROXY-protocol load balancer", () => {
  it.live("CONNECT and {client_addr} carry the address from the PROXY header, not the balancer's", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start()
      const { captured, port } = yield* server(m.address, {}, { listener: { proxyProtocol: { trusted: ["127.0.0.0/8"], timeoutMs: 5_000 } } })
      const c = yield* SmtpClient.connect({ port, preamble: Buffer.from("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n", "latin1") })
      yield* c.command("EHLO client.test")
      assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test>")).code, 250)
      yield* c.command("QUIT")
      yield* closedCount(m, 1)
      const connect = m.connections[0]!.find((p) => p.command === "C")!
      assert.deepStrictEqual(Scripted.strings(connect.data)[0], "[192.0.2.7]")
      assert.strictEqual(connect.data.toString("latin1", 15, 24), "192.0.2.7")
      assert.strictEqual(Scripted.macrosBefore(m.connections[0]!, "C")["{client_addr}"], "192.0.2.7")
      assert.strictEqual((yield* captured.messages).length, 0)
    }).pipe(Effect.scoped), { timeout: 60_000 })
})

describe("milter: a failing filter gives on_error, never a 5xx", () => {
  it.live("filter down: accept lets mail through; tempfail answers 4xx", () =>
    Effect.gen(function*() {
      const dead = `inet:127.0.0.1:${yield* Effect.promise(freePort)}`
      const open = yield* server(dead, { onError: "accept" })
      assert.strictEqual((yield* sendOne(open.port, message("through"))).code, 250)
      assert.strictEqual((yield* open.captured.awaitDelivered(1)).length, 1)
      const strict = yield* server(dead, { onError: "tempfail" })
      const c = yield* SmtpClient.connect({ port: strict.port })
      // A refusal at connect is the greeting; it is a 4xx.
      assert.strictEqual(c.greeting.code, 451, c.greeting.text)
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("silent at end of message, closing mid-body, an oversized packet, a malformed reply: on_error", () =>
    Effect.gen(function*() {
      const bad = (what: "silent" | "close" | "oversized" | "malformed") =>
        Scripted.start({
          on: (p) => {
            if (what === "close" && p.command === "B") return "close"
            if (p.command !== "E") return undefined
            if (what === "silent") return []
            if (what === "oversized") return [Buffer.from([0x7f, 0, 0, 0, 0x68])]
            if (what === "malformed") return [Scripted.packet("h", Buffer.from("no terminator"))]
            return undefined
          }
        })
      for (const what of ["silent", "close", "oversized", "malformed"] as const) {
        const m = yield* bad(what)
        const accept = yield* server(m.address, { timeoutMs: 1_000, onError: "accept" })
        const through = yield* sendOne(accept.port, message(what))
        assert.strictEqual(through.code, 250, `${what}: ${through.text}`)
        const tempfail = yield* server(m.address, { timeoutMs: 1_000, onError: "tempfail" })
        const deferred = yield* sendOne(tempfail.port, message(what))
        assert.deepStrictEqual([deferred.code, deferred.text], [451, "4.7.1 Service unavailable - try again later"], what)
      }
    }).pipe(Effect.scoped), { timeout: 120_000 })
})

describe("milter: body, recipients and sender at end of message", () => {
  it.live("replace body in chunks, add recipients (with ESMTP arguments), delete one, change the sender: the delivered message and envelope", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        actions: Scripted.allActions,
        on: Scripted.atEndOfMessage([
          Scripted.reply.addHeader("X-Filter", "rewrote"),
          Scripted.reply.replaceBody("New body, first chunk\r\n"),
          // A filter's bare LF is normalised, as the spool does for DATA.
          Scripted.reply.replaceBody("second chunk\n"),
          Scripted.reply.addRecipient("w@example.test", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;w@example.test"),
          // Not ours, and the client is not authenticated: the relay check leaves it out.
          Scripted.reply.addRecipient("x@elsewhere.test"),
          Scripted.reply.addRecipient("v@example.test"),
          Scripted.reply.deleteRecipient("U@Example.test"),
          Scripted.reply.changeFrom("new@sender.test", "RET=HDRS ENVID=abc+2Bd"),
          Scripted.reply.continue
        ])
      })
      const { captured, port } = yield* server(m.address)
      const sent = yield* sendOne(port, message("orig"), ["u@example.test", "v@example.test"])
      assert.strictEqual(sent.code, 250, sent.text)
      const [stored] = yield* captured.awaitDelivered(1)
      const e = stored!.envelope
      assert.deepStrictEqual(e.rcptTo, ["v@example.test", "w@example.test"])
      assert.deepStrictEqual([...stored!.recipients].sort(), ["v@example.test", "w@example.test"])
      assert.strictEqual(e.mailFrom, "new@sender.test")
      assert.deepStrictEqual(e.dsn, { ret: "HDRS", envid: "abc+d" })
      assert.deepStrictEqual(e.recipientDsn, { "w@example.test": { notify: ["SUCCESS", "FAILURE"], orcpt: { type: "rfc822", address: "w@example.test" } } })
      // The header block as received (and edited), then the new body, whole.
      const text = stored!.text
      assert.include(text, "Subject: orig\r\n  folded\r\nX-Remove: me\r\nX-Filter: rewrote\r\n\r\nNew body, first chunk\r\nsecond chunk\r\n")
      assert.isTrue(text.endsWith("\r\n\r\nNew body, first chunk\r\nsecond chunk\r\n"), text)
      assert.notInclude(text, "body line")
      // The negotiation offered every modification.
      const o = m.connections[0]![0]!.data
      assert.strictEqual(o.readUInt32BE(4) & 0xff, 0xff)
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("a large new body is spooled to disk as it arrives (never held whole) and nothing is left in the spool", () =>
    Effect.gen(function*() {
      const line = "z".repeat(998) + "\r\n"
      const chunk = line.repeat(60) // 60 000 bytes: each packet under 64 KiB
      const m = yield* Scripted.start({
        actions: Scripted.allActions,
        on: Scripted.atEndOfMessage([...Array.from({ length: 6 }, () => Scripted.reply.replaceBody(chunk)), Scripted.reply.continue])
      })
      const dir = yield* TestIncoming.tempDir()
      // A 16 KiB threshold: both the message and its new body spill to files.
      const { captured, port } = yield* server(m.address, {}, { dataDir: dir, spool: { inMemoryThreshold: 16 * 1024 } })
      // One message kept in memory, one spilled (40 KB).
      for (const body of ["small\r\n", ("y".repeat(998) + "\r\n").repeat(40)]) {
        assert.strictEqual((yield* sendOne(port, message("big", body))).code, 250)
      }
      const stored = yield* captured.awaitDelivered(2)
      for (const s of stored) {
        const at = s.raw.indexOf("\r\n\r\n")
        assert.strictEqual(s.raw.length - at - 4, 6 * chunk.length)
        assert.isTrue(s.raw.subarray(at + 4).equals(Buffer.from(chunk.repeat(6))))
        assert.include(s.text, "Subject: big")
      }
      // The memory queue keeps a spilled body's file until the delivery is settled, just after.
      const left = () => readdirSync(join(dir, "spool")).filter((f) => f.endsWith(".spool"))
      for (let i = 0; i < 100 && left().length > 0; i++) yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(left(), [])
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("every recipient deleted: 250, stored nowhere, recorded as discarded", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        actions: Scripted.allActions,
        on: Scripted.atEndOfMessage([Scripted.reply.deleteRecipient("u@example.test"), Scripted.reply.deleteRecipient("v@example.test"), Scripted.reply.continue])
      })
      const { captured, events, port } = yield* server(m.address)
      const gone = yield* sendOne(port, message("gone"), ["u@example.test", "v@example.test"])
      assert.strictEqual(gone.code, 250)
      const id = /queued as (\S+)/.exec(gone.text)![1]!
      const seen = (yield* PubSub.takeAll(events)).filter((e) => e._tag === "MessageDiscarded")
      assert.deepStrictEqual(seen, [{ _tag: "MessageDiscarded", id, rule: "scripted", reason: "every recipient deleted", listener: "test" }])
      assert.strictEqual((yield* captured.messages).length, 0)
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("modifications the filter did not negotiate are ignored: the message is delivered as it was", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        // Add headers only.
        actions: Codec.Action.AddHeaders,
        on: Scripted.atEndOfMessage([
          Scripted.reply.replaceBody("not allowed\r\n"),
          Scripted.reply.addRecipient("w@example.test"),
          Scripted.reply.deleteRecipient("u@example.test"),
          Scripted.reply.changeFrom("new@sender.test"),
          Scripted.reply.quarantine("no"),
          Scripted.reply.addHeader("X-Allowed", "yes"),
          Scripted.reply.continue
        ])
      })
      const { admin, captured, port } = yield* server(m.address)
      assert.strictEqual((yield* sendOne(port, message("same"))).code, 250)
      const [stored] = yield* captured.awaitDelivered(1)
      assert.deepStrictEqual([stored!.envelope.mailFrom, stored!.envelope.rcptTo], ["a@sender.test", ["u@example.test"]])
      assert.isUndefined(stored!.envelope.quarantine)
      assert.include(stored!.text, "X-Allowed: yes\r\n\r\nHello,\r\nbody line\r\n")
      assert.deepStrictEqual(yield* admin.list({ state: "held" }), [])
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("on an LMTP listener: a deleted recipient still gets its 250, an added one is queued with the rest", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        actions: Scripted.allActions,
        on: Scripted.atEndOfMessage([Scripted.reply.deleteRecipient("u@example.test"), Scripted.reply.addRecipient("w@example.test"), Scripted.reply.continue])
      })
      const { captured, port } = yield* server(m.address, {}, { listener: { mode: "lmtp" } })
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("LHLO client.test")
      yield* c.command("MAIL FROM:<a@sender.test>")
      assert.strictEqual((yield* c.command("RCPT TO:<u@example.test>")).code, 250)
      assert.strictEqual((yield* c.command("RCPT TO:<v@example.test>")).code, 250)
      yield* c.command("DATA")
      yield* c.write(`${SmtpClient.dotStuff(message("lmtp"))}.\r\n`)
      const replies = [yield* c.read, yield* c.read]
      assert.deepStrictEqual(replies.map((r) => r.code), [250, 250])
      assert.strictEqual(new Set(replies.map((r) => r.text)).size, 1, "one message, one queue id")
      const [stored] = yield* captured.awaitDelivered(1)
      assert.deepStrictEqual(stored!.envelope.rcptTo, ["v@example.test", "w@example.test"])
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("a new body over the size cap is a failure of the filter: on_error, never a 5xx", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        actions: Scripted.allActions,
        on: Scripted.atEndOfMessage([Scripted.reply.replaceBody("w".repeat(9_000)), Scripted.reply.addHeader("X-Dropped", "too"), Scripted.reply.continue])
      })
      const accept = yield* server(m.address, { onError: "accept" }, { listener: { maxSize: 4_096 } })
      assert.strictEqual((yield* sendOne(accept.port, message("capped"))).code, 250)
      const [stored] = yield* accept.captured.awaitDelivered(1)
      assert.include(stored!.text, "Hello,\r\nbody line\r\n", "delivered as received")
      assert.notInclude(stored!.text, "X-Dropped", "none of the filter's modifications")
      const tempfail = yield* server(m.address, { onError: "tempfail" }, { listener: { maxSize: 4_096 } })
      const deferred = yield* sendOne(tempfail.port, message("capped"))
      assert.deepStrictEqual([deferred.code, deferred.text], [451, "4.7.1 Service unavailable - try again later"])
      // The filter's answer was read to its end: the connection goes on with the next message.
      assert.strictEqual((yield* sendOne(accept.port, message("next"))).code, 250)
    }).pipe(Effect.scoped), { timeout: 60_000 })
})

describe("milter: quarantine holds the message in the queue", () => {
  it.live("held (not delivered, shown as held, marked), then released and delivered", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        on: (p, conn) => (p.command === "E" && conn.filter((q) => q.command === "E").length === 1 ? [Scripted.reply.quarantine("suspicious"), Scripted.reply.continue] : undefined)
      })
      const { admin, captured, port } = yield* server(m.address)
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      const ids: Array<string> = []
      for (const subject of ["quarantined", "clean"]) {
        yield* c.command("MAIL FROM:<a@sender.test>")
        yield* c.command("RCPT TO:<u@example.test>")
        yield* c.command("DATA")
        yield* c.write(`${SmtpClient.dotStuff(message(subject))}.\r\n`)
        const r = yield* c.read
        assert.strictEqual(r.code, 250, r.text)
        ids.push(/queued as (\S+)/.exec(r.text)![1]!)
      }
      yield* c.command("QUIT")
      const [held, clean] = ids as [string, string]
      // The clean message, sent after it, is delivered; the quarantined one waits, held.
      const [first] = yield* captured.awaitDelivered(1)
      assert.strictEqual(first!.id, clean)
      const info = Option.getOrUndefined(yield* admin.get(held))
      assert.deepStrictEqual([info?.state, info?.held], ["held", true])
      assert.deepStrictEqual(info?.envelope.quarantine, { rule: "scripted", reason: "suspicious" })
      assert.deepStrictEqual((yield* admin.list({ state: "held" })).map((i) => i.id), [held])
      assert.strictEqual((yield* captured.messages).length, 1)
      assert.isTrue(yield* admin.unhold(held))
      const both = yield* captured.awaitDelivered(2)
      const released = both.find((s) => s.id === held)!
      assert.include(released.text, "Subject: quarantined")
      assert.deepStrictEqual(released.envelope.quarantine, { rule: "scripted", reason: "suspicious" })
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("on a sync-ack route too: the reply is `queued`, the message held, not delivered before it is released", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({ on: Scripted.atEndOfMessage([Scripted.reply.quarantine("wait"), Scripted.reply.continue]) })
      const delivered: Array<string> = []
      const app = DA.DeliveryAdapter.of({
        name: "app",
        deliver: (d) => Effect.sync(() => d.recipients.map(({ rcpt }) => (delivered.push(d.id), DA.ok(rcpt, "stored"))))
      })
      const router = Router.layer({ adapters: { app }, routes: [{ name: "api", match: ["*"], adapter: "app", acknowledge: "sync" }] })
      const parsed = Connection.parseAddress(m.address)
      assert.ok(typeof parsed !== "string")
      const rule = yield* Milter.make({ name: "scripted", address: parsed, hostname: "mx.test", timeoutMs: 2_000 })
      const ctx = yield* Layer.build(TestIncoming.layerWith({ policies: { rules: [rule], timeoutMs: 20_000 } }).pipe(Layer.provide(router)))
      const admin = Context.get(ctx, QueueAdmin)
      const sent = yield* sendOne(Context.get(ctx, Listeners).all[0]!.port, message("sync"))
      assert.strictEqual(sent.code, 250)
      const id = /^2\.0\.0 queued as (\S+)$/.exec(sent.text)?.[1]
      assert.isDefined(id, sent.text)
      assert.deepStrictEqual([delivered, Option.getOrUndefined(yield* admin.get(id!))?.state], [[], "held"])
      assert.isTrue(yield* admin.unhold(id!))
      for (let i = 0; i < 200 && delivered.length === 0; i++) yield* Effect.sleep("25 millis")
      assert.deepStrictEqual(delivered, [id])
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("the standalone server: `incoming queue list` shows it held, `incoming queue release` delivers it", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({ on: Scripted.atEndOfMessage([Scripted.reply.quarantine("looks like spam"), Scripted.reply.continue]) })
      const dir = yield* TestIncoming.tempDir()
      const data = join(dir, "data")
      const { config, maildir } = writeStandaloneConfig(dir, {
        sections: [`[[policies]]\nrule = "milter"\nname = "scripted"\naddress = "${m.address}"\ntimeout = "5s"`]
      })
      const incoming = yield* serve(["--config", config])
      const sent = yield* SmtpClient.send({ port: incoming.port, from: "a@sender.test", to: ["u@example.test"], data: message("held") })
      assert.strictEqual(sent.code, 250, sent.text)
      const id = /queued as (\w+)/.exec(sent.text)![1]!
      const listed = yield* cli("list", "--state", "held", "--data-dir", data)
      assert.strictEqual(listed.code, 0, listed.stderr)
      assert.include(listed.stdout, id)
      const shown = JSON.parse((yield* cli("show", id, "--json", "--data-dir", data)).stdout)
      assert.deepStrictEqual([shown.state, shown.held, shown.envelope.quarantine], ["held", true, { rule: "scripted", reason: "looks like spam" }])
      const inbox = join(maildir, "u@example.test", "new")
      const delivered = () => (existsSync(inbox) ? readdirSync(inbox).length : 0)
      assert.strictEqual(delivered(), 0, "held: not delivered")
      const released = yield* cli("release", id, "--data-dir", data)
      assert.strictEqual(released.code, 0, released.stderr)
      yield* waitUntil(cli("show", id, "--json", "--data-dir", data), (r) => r.code !== 0)
      assert.strictEqual(delivered(), 1, "delivered once released")
      yield* incoming.signal("SIGTERM")
    }).pipe(Effect.scoped), { timeout: 240_000 })
})
