/**
 * The README's "Protocol behaviour" table, row by row, over real sockets: the test reads the
 * table from README.md, finds the check for each row by its situation text, provokes every
 * situation the row names on a server set up for it, and compares the replies seen with the
 * replies the row promises (each promised reply seen, nothing else; "and close" means the
 * connection closes). A row without a check, or a check whose row is gone, fails the test, so
 * the table and the server cannot drift apart.
 */
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as UserStore from "../../src/auth/UserStore.ts"
import type { DeliveryAdapter } from "../../src/delivery/DeliveryAdapter.ts"
import * as EffectAdapter from "../../src/delivery/EffectAdapter.ts"
import { MailQueueError } from "../../src/queue/MailQueueError.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { raw, simpleBody } from "./helpers.ts"
import { memoryWith } from "../support/queues.ts"

interface Observed {
  /** `code x.y.z` of the reply. */
  readonly reply: string
  readonly closed: boolean
}

const readmeRows = (): ReadonlyArray<readonly [situation: string, reply: string]> => {
  const lines = readFileSync(new URL("../../README.md", import.meta.url), "utf8").split("\n")
  const start = lines.indexOf("## Protocol behaviour")
  assert.isAtLeast(start, 0, "README has no '## Protocol behaviour' section")
  const table = lines.slice(lines.findIndex((l, i) => i > start && l.startsWith("| situation | reply |")))
  const rows = table.slice(2, table.findIndex((l) => !l.startsWith("|")))
  return rows.map((row) => {
    const cells = row.slice(2, -2).split(" | ")
    assert.lengthOf(cells, 2, row)
    return [cells[0]!, cells[1]!] as const
  })
}

const codeOf = (r: SmtpClient.Reply): string => {
  const enhanced = /^([245]\.\d{1,3}\.\d{1,3}) /.exec(r.text)?.[1] ?? "(none)"
  return `${r.code} ${enhanced}`
}

// --- servers and clients ----------------------------------------------------------------------

type Options = Parameters<typeof TestIncoming.layer>[0]

/** A server of its own for one check, closed with the check's scope. */
const server = (options: Options = {}) =>
  Effect.map(Layer.build(TestIncoming.layer(options)), (ctx) => Context.get(ctx, Listeners).all[0]!.port)

const serverWith = <E>(adapter: Layer.Layer<DeliveryAdapter, E>, options: Options = {}) =>
  Effect.map(Layer.build(TestIncoming.layerWith(options).pipe(Layer.provideMerge(adapter))), (ctx) => Context.get(ctx, Listeners).all[0]!.port)

const greeted = (port: number) =>
  Effect.tap(SmtpClient.connect({ port }), (c) => c.command("EHLO client.test"))

/** The reply to each line, in order, on one connection. */
const replies = (c: SmtpClient.SmtpClient, lines: ReadonlyArray<string | Buffer>) =>
  Effect.forEach(lines, (line) =>
    Effect.map(typeof line === "string" ? c.command(line) : Effect.andThen(c.write(Buffer.concat([line, Buffer.from("\r\n")])), c.read), (r) => ({
      reply: codeOf(r),
      closed: false
    })))

/** A reply that must end the connection. */
const closing = (c: SmtpClient.SmtpClient, reply: Effect.Effect<SmtpClient.Reply, unknown>) =>
  Effect.gen(function*() {
    const r = yield* reply
    const closed = yield* c.closed.pipe(Effect.timeoutOption("5 seconds"))
    return { reply: codeOf(r), closed: closed._tag === "Some" }
  })

/** MAIL/RCPT/DATA with a body; the reply to the final dot (or to the first command refused). */
const transaction = (c: SmtpClient.SmtpClient, body: string, rcpt = "user@example.test") =>
  Effect.gen(function*() {
    for (const line of ["MAIL FROM:<a@sender.test>", `RCPT TO:<${rcpt}>`, "DATA"]) {
      const r = yield* c.command(line)
      if (r.code >= 400) return { reply: codeOf(r), closed: false }
    }
    yield* c.write(`${body}.\r\n`)
    return { reply: codeOf(yield* c.read), closed: false }
  })

const path257 = `<${"l".repeat(64)}@${["d".repeat(63), "d".repeat(63), "d".repeat(63), "d".repeat(62)].join(".")}>`

/** A memory queue whose commit fails, hangs or dies, as `mode` says. */
const faultyQueue = (mode: { current: "fail" | "hang" | "die" }) =>
  memoryWith(() => ({
    commit: () =>
      mode.current === "fail"
        ? Effect.fail(new MailQueueError({ reason: { _tag: "StorageFailed", detail: "disk on fire" } }))
        : mode.current === "hang"
        ? Effect.never
        : Effect.die(new Error("a bug"))
  }))

// --- one check per row ------------------------------------------------------------------------

type Check = Effect.Effect<ReadonlyArray<Observed>, unknown, Scope.Scope>

const checks: Record<string, Check> = {
  "MAIL before HELO/EHLO; RCPT before MAIL; DATA without a recipient": Effect.gen(function*() {
    const c = yield* SmtpClient.connect({ port: yield* server() })
    const early = yield* replies(c, ["MAIL FROM:<a@sender.test>"])
    yield* c.command("EHLO client.test")
    return [...early, ...(yield* replies(c, ["RCPT TO:<user@example.test>", "DATA"]))]
  }),

  "MAIL or RCPT not of the form `MAIL FROM:<path>` / `RCPT TO:<path>`": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    const [bad, , badRcpt] = yield* replies(c, ["MAIL <a@sender.test>", "MAIL FROM:<a@sender.test>", "RCPT TO <user@example.test>"])
    return [bad!, badRcpt!]
  }),

  "sender / recipient not an RFC 5321 address: bad syntax, local part over 64 octets, domain over 255, path over 256, invalid UTF-8":
    Effect.gen(function*() {
      const c = yield* greeted(yield* server())
      const senders = yield* replies(c, [
        "MAIL FROM:<john smith@sender.test>",
        `MAIL FROM:<${"l".repeat(65)}@sender.test>`,
        `MAIL FROM:${path257}`
      ])
      yield* c.command("MAIL FROM:<a@sender.test> SMTPUTF8")
      const recipients = yield* replies(c, [
        "RCPT TO:<us..er@example.test>",
        `RCPT TO:<u@${Array.from({ length: 65 }, () => "abc").join(".")}>`,
        Buffer.concat([Buffer.from("RCPT TO:<u"), Buffer.from([0xff, 0xfe]), Buffer.from("@example.test>")])
      ])
      return [...senders, ...recipients]
    }),

  "a non-ASCII address in a transaction without `SMTPUTF8`": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    const [sender, , recipient] = yield* replies(c, ["MAIL FROM:<jörg@sender.test>", "MAIL FROM:<a@sender.test>", "RCPT TO:<用户@example.test>"])
    return [sender!, recipient!]
  }),

  "recipient outside `domains`, unauthenticated": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    return (yield* replies(c, ["MAIL FROM:<a@sender.test>", "RCPT TO:<x@elsewhere.test>"])).slice(1)
  }),

  "recipient outside `domains`, client may relay, but no route delivers off-site": Effect.gen(function*() {
    // An adapter that delivers locally only (the capturing adapter counts as off-site).
    const port = yield* serverWith(EffectAdapter.layer("local", () => Effect.void), { relay: { trustedNetworks: ["127.0.0.1/32"] } })
    const c = yield* greeted(port)
    return (yield* replies(c, ["MAIL FROM:<a@sender.test>", "RCPT TO:<x@elsewhere.test>"])).slice(1)
  }),

  "more than `maxRecipients`": Effect.gen(function*() {
    const c = yield* greeted(yield* server({ listener: { maxRecipients: 1 } }))
    return (yield* replies(c, ["MAIL FROM:<a@sender.test>", "RCPT TO:<one@example.test>", "RCPT TO:<two@example.test>"])).slice(2)
  }),

  "unknown MAIL/RCPT parameter (`REQUIRETLS` included)": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    const [a, b, , d] = yield* replies(c, [
      "MAIL FROM:<a@sender.test> X-FOO=1",
      "MAIL FROM:<a@sender.test> REQUIRETLS",
      "MAIL FROM:<a@sender.test>",
      "RCPT TO:<user@example.test> X-FOO=1"
    ])
    return [a!, b!, d!]
  }),

  "a bad parameter value (`SIZE`, `BODY`, `RET`, `ENVID`, `NOTIFY`, `ORCPT`) or a parameter given twice": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    const mail = yield* replies(c, [
      "MAIL FROM:<a@sender.test> SIZE=many",
      "MAIL FROM:<a@sender.test> BODY=BINARYMIME",
      "MAIL FROM:<a@sender.test> RET=ALL",
      "MAIL FROM:<a@sender.test> ENVID=a+zz",
      "MAIL FROM:<a@sender.test> BODY=7BIT BODY=7BIT"
    ])
    yield* c.command("MAIL FROM:<a@sender.test>")
    return [...mail, ...(yield* replies(c, ["RCPT TO:<user@example.test> NOTIFY=SOMETIMES", "RCPT TO:<user@example.test> ORCPT=nosemicolon"]))]
  }),

  "`SIZE=` over the limit at MAIL; message over the limit during DATA": Effect.gen(function*() {
    const c = yield* greeted(yield* server({ listener: { maxSize: 1_000 } }))
    const declared = yield* replies(c, ["MAIL FROM:<a@sender.test> SIZE=2000"])
    return [...declared, yield* transaction(c, simpleBody("big", "x".repeat(2_000)))]
  }),

  "bare LF / bare CR in DATA (`lineEndings: \"reject\"`)": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    return [yield* transaction(c, "Subject: lf\r\n\r\none\ntwo\r\n"), yield* transaction(c, "Subject: cr\r\n\r\none\rtwo\r\n")]
  }),

  "AUTH on a connection without TLS (unless `allowInsecureAuth`)": Effect.gen(function*() {
    const c = yield* greeted(yield* server({ auth: { store: UserStore.fromRecord({ alice: "secret" }) } }))
    return yield* replies(c, ["AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN"])
  }),

  "a command Incoming knows but does not offer: EXPN, TURN, ETRN, BDAT, XCLIENT; AUTH without users; STARTTLS without a certificate":
    Effect.gen(function*() {
      const c = yield* greeted(yield* server())
      return yield* replies(c, ["EXPN staff", "TURN", "ETRN example.test", "BDAT 10 LAST", "XCLIENT ADDR=192.0.2.1", "AUTH PLAIN", "STARTTLS"])
    }),

  "a command that does not exist": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    return yield* replies(c, ["FROBNICATE", "MAILFROM:<a@sender.test>"])
  }),

  "a `PROXY` header from a peer not in `proxy_protocol.trusted` (after the greeting)": Effect.gen(function*() {
    const c = yield* SmtpClient.connect({ port: yield* server({ listener: { proxyProtocol: { trusted: ["192.0.2.0/24"], timeoutMs: 5_000 } } }) })
    return yield* replies(c, ["PROXY TCP4 198.51.100.1 192.0.2.1 1234 25"])
  }),

  "HELO or EHLO on an `lmtp` listener": Effect.gen(function*() {
    const c = yield* SmtpClient.connect({ port: yield* server({ listener: { mode: "lmtp" } }) })
    return yield* replies(c, ["HELO client.test", "EHLO client.test"])
  }),

  "after the data on an `lmtp` listener, per accepted recipient": Effect.gen(function*() {
    const c = yield* SmtpClient.connect({ port: yield* server({ listener: { mode: "lmtp" } }) })
    yield* c.command("LHLO client.test")
    for (const line of ["MAIL FROM:<a@sender.test>", "RCPT TO:<one@example.test>", "RCPT TO:<two@example.test>", "DATA"]) yield* c.command(line)
    yield* c.write(`${simpleBody("lmtp")}.\r\n`)
    const seen: Array<Observed> = []
    for (let i = 0; i < 2; i++) seen.push({ reply: codeOf(yield* c.read), closed: false })
    return seen
  }),

  "too many commands or errors on one connection; too many connections (overall / per IP); a client talking before the greeting (`greetingDelayMs`); an HTTP request":
    Effect.gen(function*() {
      const seen: Array<Observed> = []
      const commands = yield* greeted(yield* server({ listener: { maxCommands: 3 } }))
      yield* replies(commands, ["NOOP"])
      seen.push(yield* closing(commands, Effect.andThen(commands.command("NOOP"), commands.command("NOOP"))))
      const errors = yield* greeted(yield* server({ listener: { maxErrors: 2 } }))
      yield* replies(errors, ["BOGUS1", "BOGUS2"])
      // The third error's own reply, then the 421.
      seen.push(yield* closing(errors, Effect.andThen(errors.command("BOGUS3"), errors.read)))
      for (const listener of [{ maxConnections: 1 }, { maxConnectionsPerIp: 1 }]) {
        const port = yield* server({ listener })
        yield* SmtpClient.connect({ port })
        const second = yield* SmtpClient.connect({ port })
        seen.push(yield* closing(second, Effect.succeed(second.greeting)))
      }
      const early = yield* raw({ port: yield* server({ listener: { greetingDelayMs: 300 } }) })
      early.socket.write("EHLO early.test\r\n")
      const text = yield* early.waitFor(/\r\n/)
      yield* early.closed
      seen.push({ reply: codeOf({ code: Number(text.slice(0, 3)), lines: [], text: text.slice(4) }), closed: true })
      const http = yield* SmtpClient.connect({ port: yield* server() })
      seen.push(yield* closing(http, http.command("GET / HTTP/1.1")))
      return seen
    }),

  "a command line over 16 KiB": Effect.gen(function*() {
    const c = yield* SmtpClient.connect({ port: yield* server() })
    return [yield* closing(c, c.command(`NOOP ${"x".repeat(20_000)}`))]
  }),

  "a command not completed within `commandTimeoutMs`; idle; connection older than `maxConnectionTimeMs`": Effect.gen(function*() {
    const slow = { commandTimeoutMs: 60_000, idleTimeoutMs: 60_000, maxConnectionTimeMs: 60_000 }
    const command = yield* greeted(yield* server({ listener: { ...slow, commandTimeoutMs: 300 } }))
    const idle = yield* greeted(yield* server({ listener: { ...slow, idleTimeoutMs: 300 } }))
    const old = yield* greeted(yield* server({ listener: { ...slow, maxConnectionTimeMs: 500 } }))
    // Half a command that is never finished; then nothing at all; then nothing for too long.
    return [
      yield* closing(command, Effect.andThen(command.write("NOO"), command.read)),
      yield* closing(idle, idle.read),
      yield* closing(old, old.read)
    ]
  }),

  "queue at `maxDepth`": Effect.gen(function*() {
    const c = yield* greeted(yield* server({ queue: { kind: "memory", maxDepth: 0 } }))
    return yield* replies(c, ["MAIL FROM:<a@sender.test>"])
  }),

  "storage failure / timeout / defect in our code": Effect.gen(function*() {
    const mode: { current: "fail" | "hang" | "die" } = { current: "fail" }
    const c = yield* greeted(yield* server({ queue: { kind: "custom", layer: faultyQueue(mode) }, listener: { hookTimeoutMs: 300 } }))
    const seen: Array<Observed> = []
    for (const m of ["fail", "hang", "die"] as const) {
      mode.current = m
      seen.push(yield* transaction(c, simpleBody(m)))
    }
    return seen
  }),

  "shutting down: a command while the server drains, and idle sessions when the drain ends": Effect.gen(function*() {
    const scope = yield* Scope.make()
    const ctx = yield* Layer.buildWithScope(TestIncoming.layer(), scope)
    const c = yield* greeted(Context.get(ctx, Listeners).all[0]!.port)
    yield* Effect.forkChild(Scope.close(scope, Exit.void))
    return [yield* closing(c, c.read)]
  }),

  "accepted": Effect.gen(function*() {
    const c = yield* greeted(yield* server())
    return [yield* transaction(c, simpleBody("accepted"))]
  })
}

describe("README protocol table", () => {
  const rows = readmeRows()

  it("has a check for every row, and a row for every check", () => {
    const situations = rows.map(([situation]) => situation)
    assert.deepStrictEqual(situations.filter((s) => !(s in checks)), [], "rows without a check")
    assert.deepStrictEqual(Object.keys(checks).filter((s) => !situations.includes(s)), [], "checks without a row")
  })

  for (const [situation, promised] of rows) {
    const check = checks[situation]
    if (check === undefined) continue
    it.live(`${situation} → ${promised}`, () =>
      Effect.gen(function*() {
        const expected = [...promised.matchAll(/(\d{3}) ([245]\.\d{1,3}\.\d{1,3})/g)].map((m) => `${m[1]} ${m[2]}`)
        assert.isNotEmpty(expected, `no reply in the row: ${promised}`)
        const seen = yield* check
        assert.isNotEmpty(seen)
        assert.deepStrictEqual([...new Set(seen.map((o) => o.reply))].toSorted(), [...new Set(expected)].toSorted(), JSON.stringify(seen))
        if (/and close/.test(promised)) assert.isTrue(seen.every((o) => o.closed), JSON.stringify(seen))
      }).pipe(Effect.scoped), { timeout: 30_000 })
  }
})
