/**
 * Envelope addresses over a real socket (RFC 5321 §4.1.2 and §4.5.3.1, RFC 6531): each row of the
 * table is a MAIL or RCPT line sent by a raw client and the reply it must get; the accepted rows
 * that matter are carried through DATA to check what the delivery adapter receives. These rows
 * failed before the engine used our parser: the quoted local part (501 5.1.7), the 256-octet path
 * (501), UTF-8 under SMTPUTF8 (501), and invalid UTF-8, which was accepted and delivered.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { deliverVia } from "./helpers.ts"

const expectReply = (reply: SmtpClient.Reply, code: number, enhanced: string, context: string) => {
  assert.strictEqual(reply.code, code, `${context}: ${reply.code} ${reply.text}`)
  assert.isTrue(reply.text.startsWith(`${enhanced} `), `${context}: ${reply.code} ${reply.text}`)
}

const line = (...parts: ReadonlyArray<string | ReadonlyArray<number>>): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : Buffer.from(p))))

/** A mailbox of exactly `octets` octets (local part 64), so its path `<...>` is `octets + 2`. */
const mailboxOf = (octets: number): string => {
  const labels: Array<string> = []
  // Labels of at most 63 octets, each after the first costing one more for its dot.
  let left = octets - 65
  while (left > 0) {
    let n = Math.min(63, left)
    if (left - n === 1) n-- // a lone dot cannot be left over
    labels.push("d".repeat(n))
    left -= n + 1
  }
  const m = `${"l".repeat(64)}@${labels.join(".")}`
  if (Buffer.byteLength(m) !== octets) throw new Error(`built ${Buffer.byteLength(m)} octets, wanted ${octets}`)
  return m
}

const send = (c: SmtpClient.SmtpClient, bytes: Buffer) => Effect.andThen(c.write(Buffer.concat([bytes, Buffer.from("\r\n")])), c.read)

interface Row {
  readonly name: string
  /** Commands before the one under test (each must get 250). */
  readonly before?: ReadonlyArray<string>
  readonly line: Buffer
  readonly code: number
  readonly enhanced: string
}

/** A row: the line under test after `before` (MAIL for RCPT rows), and the reply it must get. */
const row = (name: string, command: Buffer | string, code: number, enhanced: string, before?: string): Row => ({
  name,
  ...(before === undefined ? {} : { before: [before] }),
  line: typeof command === "string" ? line(command) : command,
  code,
  enhanced
})
const mail = (name: string, command: Buffer | string, code: number, enhanced: string) => row(name, command, code, enhanced)
const rcpt = (name: string, from: string, command: Buffer | string, code: number, enhanced: string) => row(name, command, code, enhanced, from)

const rows: ReadonlyArray<Row> = [
  mail("dot-string", "MAIL FROM:<john.smith@example.org>", 250, "2.1.0"),
  mail("quoted local part with a space", 'MAIL FROM:<"john smith"@example.org>', 250, "2.1.0"),
  mail("quoted local part with escapes", 'MAIL FROM:<"a\\"b\\\\c"@example.org>', 250, "2.1.0"),
  mail("quoted '>' inside the path", 'MAIL FROM:<"a>b"@example.org>', 250, "2.1.0"),
  mail("IPv4 address literal", "MAIL FROM:<u@[192.0.2.1]>", 250, "2.1.0"),
  mail("IPv6 address literal", "MAIL FROM:<u@[IPv6:2001:db8::1]>", 250, "2.1.0"),
  mail("general address literal", "MAIL FROM:<u@[x-tag:content]>", 250, "2.1.0"),
  mail("source route (accepted, ignored)", "MAIL FROM:<@relay.example:u@example.org>", 250, "2.1.0"),
  mail("path of 256 octets (the maximum)", `MAIL FROM:<${mailboxOf(254)}>`, 250, "2.1.0"),
  mail("UTF-8 sender with SMTPUTF8", "MAIL FROM:<jörg@bücher.example> SMTPUTF8", 250, "2.1.0"),
  mail("null sender", "MAIL FROM:<>", 250, "2.1.0"),
  mail("path of 257 octets", `MAIL FROM:<${mailboxOf(255)}>`, 501, "5.1.7"),
  mail("local part of 65 octets", `MAIL FROM:<${"l".repeat(65)}@example.org>`, 501, "5.1.7"),
  mail("unquoted space", "MAIL FROM:<john smith@example.org>", 501, "5.1.7"),
  mail("double dot", "MAIL FROM:<john..smith@example.org>", 501, "5.1.7"),
  mail("no angle brackets", "MAIL FROM:john@example.org", 501, "5.1.7"),
  mail("bad IPv4 literal", "MAIL FROM:<u@[192.0.2.300]>", 501, "5.1.7"),
  mail("underscore in a domain", "MAIL FROM:<u@exa_mple.org>", 501, "5.1.7"),
  mail("UTF-8 sender without SMTPUTF8", "MAIL FROM:<jörg@example.org>", 553, "5.6.7"),
  mail("invalid UTF-8 without SMTPUTF8", line("MAIL FROM:<a", [0xff, 0xfe], "@example.org>"), 553, "5.6.7"),
  mail("invalid UTF-8 with SMTPUTF8", line("MAIL FROM:<a", [0xff, 0xfe], "@example.org> SMTPUTF8"), 501, "5.1.7"),
  mail("no FROM:", "MAIL <a@example.org>", 501, "5.5.2"),
  mail("parameter not advertised (REQUIRETLS)", "MAIL FROM:<a@example.org> REQUIRETLS", 555, "5.5.4"),
  mail("parameter given twice", "MAIL FROM:<a@example.org> BODY=7BIT BODY=7BIT", 501, "5.5.4"),
  rcpt("quoted recipient", "MAIL FROM:<a@example.org>", 'RCPT TO:<"john smith"@example.test>', 250, "2.1.5"),
  rcpt("UTF-8 recipient under SMTPUTF8", "MAIL FROM:<a@example.org> SMTPUTF8", "RCPT TO:<用户@example.test>", 250, "2.1.5"),
  rcpt("UTF-8 recipient without SMTPUTF8", "MAIL FROM:<a@example.org>", "RCPT TO:<用户@example.test>", 553, "5.6.7"),
  rcpt("invalid UTF-8 in a recipient's local part", "MAIL FROM:<a@example.org> SMTPUTF8", line("RCPT TO:<", [0xff, 0xfe], "@example.test>"), 501, "5.1.3"),
  rcpt("invalid UTF-8, no SMTPUTF8", "MAIL FROM:<a@example.org>", line("RCPT TO:<", [0xff, 0xfe], "@example.test>"), 553, "5.6.7"),
  rcpt("empty recipient", "MAIL FROM:<a@example.org>", "RCPT TO:<>", 501, "5.1.3"),
  rcpt("recipient path of 257 octets", "MAIL FROM:<a@example.org>", `RCPT TO:<${mailboxOf(255)}>`, 501, "5.1.3"),
  rcpt("MAIL parameter on RCPT", "MAIL FROM:<a@example.org>", "RCPT TO:<u@example.test> SIZE=10", 555, "5.5.4")
]

describe("addresses over a socket", () => {
  layer(TestIncoming.layer(), { excludeTestServices: true })((it) => {
    it.effect("EHLO advertises SMTPUTF8 and DSN", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        const caps = (yield* c.command("EHLO client.test")).lines.map((l) => l.slice(4))
        assert.include(caps, "SMTPUTF8")
        assert.include(caps, "DSN")
      }))

    it.effect("each row of the grammar table gets its reply", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        for (const row of rows) {
          yield* Effect.scoped(Effect.gen(function*() {
            const c = yield* SmtpClient.connect({ port })
            assert.strictEqual((yield* c.command("EHLO client.test")).code, 250)
            for (const b of row.before ?? []) expectReply(yield* c.command(b), 250, "2.1.0", `${row.name} (setup)`)
            expectReply(yield* send(c, row.line), row.code, row.enhanced, row.name)
          }))
        }
      }))

    it.effect("a quoted sender and recipient are delivered in canonical form", () =>
      Effect.gen(function*() {
        const msg = yield* deliverVia(yield* TestIncoming.port, [
          ['MAIL FROM:<"john smith"@Example.ORG>', 250, "2.1.0"],
          ['RCPT TO:<"\\j\\o\\e"@example.test>', 250, "2.1.5"],
          ['RCPT TO:<"a b"@example.test>', 250, "2.1.5"]
        ], "quoted")
        assert.strictEqual(msg.envelope.mailFrom, '"john smith"@example.org')
        assert.deepStrictEqual(msg.envelope.rcptTo, ["joe@example.test", '"a b"@example.test'])
        assert.isUndefined(msg.envelope.smtpUtf8)
      }))

    it.effect("an SMTPUTF8 transaction is delivered with its UTF-8 addresses, A-label domains and UTF8SMTP trace", () =>
      Effect.gen(function*() {
        const msg = yield* deliverVia(yield* TestIncoming.port, [
          ["MAIL FROM:<jörg@Bücher.example> SMTPUTF8", 250, "2.1.0"],
          ["RCPT TO:<用户@example.test>", 250, "2.1.5"]
        ], "utf8")
        assert.strictEqual(msg.envelope.mailFrom, "jörg@xn--bcher-kva.example")
        assert.deepStrictEqual(msg.envelope.rcptTo, ["用户@example.test"])
        assert.isTrue(msg.envelope.smtpUtf8)
        assert.match(msg.text, /with UTF8SMTP id /)
        assert.include(msg.text, "for <用户@example.test>;")
      }))

    it.effect("invalid UTF-8 in a local part is never delivered", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        yield* c.command("EHLO client.test")
        expectReply(yield* c.command("MAIL FROM:<a@example.org> SMTPUTF8"), 250, "2.1.0", "MAIL")
        expectReply(yield* send(c, line("RCPT TO:<x", [0xff, 0xfe], "@example.test>")), 501, "5.1.3", "RCPT")
        // With no recipient accepted there is nothing to deliver.
        expectReply(yield* c.command("DATA"), 503, "5.5.1", "DATA")
      }))
  })
})
