/**
 * The AUTH handler and listener modes through a real smtp-server (Incoming's engine subclass)
 * wired the way the integration plan says: PLAIN and LOGIN success → 235 2.7.0 (nodemailer and a
 * raw client), wrong password → 535 5.7.8 after the per-failure delay, the cut-off → 421 and the
 * connection closed, `*` → 501 (smtp-server's own), AUTH inside a transaction → 503 5.5.1, AUTH
 * not advertised before STARTTLS on a submission listener and refused 538 5.7.11, MAIL refused
 * there until TLS and AUTH, and the open-relay table at RCPT with the relay authority; then the
 * same AUTH replies from a real Incoming listener.
 */
import type { AddressInfo } from "node:net"
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Metric } from "effect"
import nodemailer from "nodemailer"
import type { SMTPServerOptions } from "smtp-server"
import * as AuthHandler from "../../src/auth/AuthHandler.ts"
import * as ListenerMode from "../../src/auth/ListenerMode.ts"
import * as UserStore from "../../src/auth/UserStore.ts"
import * as Relay from "../../src/policy/Relay.ts"
import { unimplemented } from "../../src/smtp/internal/commands.ts"
import { IncomingSmtpServer } from "../../src/smtp/internal/engine.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import type { ListenerInput } from "../../src/smtp/ListenerOptions.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"

const b64 = (s: string) => Buffer.from(s).toString("base64")
const store = UserStore.fromRecord({ alice: "correct horse" })

/** A tiny server wired like the Listener will be: hooks → Effects → callbacks with our replies. */
const serve = (setup: ListenerMode.AuthSetup, handler: AuthHandler.AuthHandler, tls?: { cert: Buffer; key: Buffer }) =>
  Effect.acquireRelease(
    Effect.callback<{ port: number; server: IncomingSmtpServer }>((resume) => {
      // Relayed recipients have a route off-site here: this server is about who may relay.
      const relay = Relay.make({ domains: ["example.org"], trustedNetworks: ["10.0.0.0/8"], relayRoute: () => true })
      const answer = <A>(effect: Effect.Effect<A, unknown>, callback: (err?: Error | null, value?: A) => void) =>
        void Effect.runPromiseExit(effect).then((exit) =>
          Exit.isSuccess(exit) ? callback(null, exit.value) : callback(SmtpReply.toEngineError(SmtpReply.fromCause(exit.cause)))
        )
      const options: SMTPServerOptions = {
        ...(tls ?? {}),
        ...ListenerMode.engineOptions(setup),
        hideENHANCEDSTATUSCODES: false,
        disableReverseLookup: true,
        logger: false,
        onConnect: (session, cb) => {
          session.disabledCommands = ListenerMode.sessionDisabledCommands(setup, session.secure)
          cb()
        },
        onSecure: (_socket, session, cb) => {
          session.disabledCommands = ListenerMode.sessionDisabledCommands(setup, true)
          cb()
        },
        onAuth: (auth, session, cb) => answer(handler.onAuth(auth, session), cb),
        onMailFrom: (_a, session, cb) => {
          const reply = ListenerMode.mailRequirement(setup, session)
          cb(reply === undefined ? null : SmtpReply.toEngineError(reply))
        },
        onRcptTo: (address, session, cb) =>
          answer(
            Effect.flatMap(
              relay.checkRecipient(address.address, { authenticated: typeof session.user === "string", clientAddress: session.remoteAddress }),
              (d) => {
                const reply = Relay.replyOf(d)
                return reply === undefined ? Effect.void : Effect.fail({ reply })
              }
            ),
            cb
          )
      }
      const server = new IncomingSmtpServer(options, {
        greetingDelayMs: 0,
        commandTimeoutMs: 30_000,
        dataTimeoutMs: 30_000,
        maxConnectionTimeMs: 60_000,
        maxCommands: 1000,
        maxErrors: 100
      }, { unavailable: (name, s) => ListenerMode.unavailableReply(setup, name, s) ?? unimplemented(name) })
      server.on("error", () => undefined)
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ port: (server.server.address() as AddressInfo).port, server })))
    }),
    ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  )

const mx: ListenerMode.AuthSetup = { mode: "mx", tlsAvailable: false, methods: ["PLAIN", "LOGIN"], allowInsecureAuth: true }

const nodemailerVerify = (port: number, user: string, pass: string, authMethod: "PLAIN" | "LOGIN") =>
  Effect.tryPromise({
    try: () =>
      nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true, auth: { user, pass }, authMethod }).verify(),
    catch: (e) => e as Error & { responseCode?: number; response?: string }
  })

/** nodemailer: STARTTLS, then AUTH as alice. */
const verifyAfterStartTls = (port: number) =>
  Effect.tryPromise(() =>
    nodemailer.createTransport({
      host: "127.0.0.1",
      port,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: "alice", pass: "correct horse" }
    }).verify()
  )

describe("AuthHandler through smtp-server", () => {
  it.live("PLAIN and LOGIN with nodemailer: 235 on success, 535 5.7.8 on a wrong password", () =>
    Effect.gen(function*() {
      const { port } = yield* serve(mx, AuthHandler.make({ store, failureDelay: "1 millis", allowInsecure: true }))
      assert.isTrue(yield* nodemailerVerify(port, "alice", "correct horse", "PLAIN"))
      assert.isTrue(yield* nodemailerVerify(port, "alice", "correct horse", "LOGIN"))
      const e = yield* Effect.flip(nodemailerVerify(port, "alice", "wrong", "LOGIN"))
      assert.strictEqual(e.responseCode, 535)
      assert.include(e.response ?? "", "535 5.7.8 Authentication credentials invalid")
      // Every attempt is counted by mechanism and result.
      const count = (mechanism: string, result: string) =>
        Effect.map(Metric.value(AuthHandler.attemptsTotal.pipe(Metric.withAttributes({ mechanism, result }))), (v) => v.count)
      assert.isAtLeast(yield* count("PLAIN", "success"), 1)
      assert.isAtLeast(yield* count("LOGIN", "success"), 1)
      assert.isAtLeast(yield* count("LOGIN", "invalid"), 1)
    }))

  it.live("raw: 235 2.7.0, a second AUTH 503, `*` cancels with 501, AUTH in a transaction 503 5.5.1", () =>
    Effect.gen(function*() {
      const { port } = yield* serve(mx, AuthHandler.make({ store, failureDelay: "1 millis", allowInsecure: true }))
      const c = yield* SmtpClient.connect({ port })
      const ehlo = yield* c.command("EHLO client.test")
      assert.include(ehlo.lines.join("\n"), "AUTH PLAIN LOGIN")
      assert.strictEqual((yield* c.command("AUTH LOGIN")).code, 334)
      assert.strictEqual((yield* c.command("*")).code, 501)
      assert.strictEqual((yield* c.command("AUTH PLAIN")).code, 334)
      assert.strictEqual((yield* c.command("*")).code, 501)
      const ok = yield* c.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)
      assert.strictEqual(ok.text, "2.7.0 Authentication successful")
      assert.strictEqual((yield* c.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)).code, 503)

      const d = yield* SmtpClient.connect({ port })
      yield* d.command("EHLO client.test")
      assert.strictEqual((yield* d.command("MAIL FROM:<a@example.org>")).code, 250)
      const inTx = yield* d.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)
      assert.strictEqual(`${inTx.code} ${inTx.text}`, SmtpReply.format(AuthHandler.inTransaction))
      // PLAIN acting as someone else (authzid ≠ authcid) is refused
      const e = yield* SmtpClient.connect({ port })
      yield* e.command("EHLO client.test")
      assert.strictEqual((yield* e.command(`AUTH PLAIN ${b64("bob\0alice\0correct horse")}`)).code, 535)
    }))

  it.live("brute force: each failure waits n × delay, the 3rd closes with 421 4.7.0; the IP limit then refuses at once", () =>
    Effect.gen(function*() {
      const handler = AuthHandler.make({ store, failureDelay: "100 millis", maxFailuresPerConnection: 3, maxFailuresPerIp: 4, allowInsecure: true })
      const { port } = yield* serve(mx, handler)
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      const attempt = (client: SmtpClient.SmtpClient) =>
        Effect.gen(function*() {
          const started = Date.now()
          const r = yield* client.command(`AUTH PLAIN ${b64("\0alice\0guess")}`)
          return { r, ms: Date.now() - started }
        })
      const a1 = yield* attempt(c)
      assert.strictEqual(a1.r.text, "5.7.8 Authentication credentials invalid")
      assert.isAtLeast(a1.ms, 95)
      const a2 = yield* attempt(c)
      assert.strictEqual(a2.r.code, 535)
      assert.isAtLeast(a2.ms, 195)
      const a3 = yield* attempt(c)
      assert.strictEqual(`${a3.r.code} ${a3.r.text}`, SmtpReply.format(AuthHandler.tooManyFailures))
      assert.isAtLeast(a3.ms, 295)
      yield* c.closed
      assert.strictEqual(yield* handler.ipFailures("127.0.0.1"), 3)

      // a new connection from the same IP: the 4th failure hits the IP limit → 421
      const d = yield* SmtpClient.connect({ port })
      yield* d.command("EHLO client.test")
      assert.strictEqual((yield* attempt(d)).r.code, 421)
      // and now even the right password is refused before it is checked
      const e = yield* SmtpClient.connect({ port })
      yield* e.command("EHLO client.test")
      const refused = yield* e.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)
      assert.strictEqual(refused.code, 421)
    }), { timeout: 15_000 })

  it.live("AUTH over clear text is refused 538 5.7.11 unless allowed", () =>
    Effect.gen(function*() {
      const { port } = yield* serve(mx, AuthHandler.make({ store }))
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      const r = yield* c.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)
      assert.strictEqual(`${r.code} ${r.text}`, SmtpReply.format(AuthHandler.encryptionRequired))
    }))
})

describe("listener modes", () => {
  it.live("submission: no AUTH in EHLO before STARTTLS, AUTH refused, MAIL 530 until TLS and AUTH; after TLS it works", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-auth-")
      const files = selfSignedCert(dir)
      const tls = { cert: readFileSync(files.cert), key: readFileSync(files.key) }
      const setup: ListenerMode.AuthSetup = { mode: "submission", tlsAvailable: true, methods: ["PLAIN", "LOGIN"] }
      assert.isUndefined(ListenerMode.validate(setup))
      assert.deepStrictEqual(ListenerMode.validate({ ...setup, tlsAvailable: false }), { _tag: "TlsRequired", mode: "submission" })
      const { port } = yield* serve(setup, AuthHandler.make({ store, failureDelay: "1 millis" }), tls)
      const c = yield* SmtpClient.connect({ port })
      const ehlo = yield* c.command("EHLO client.test")
      assert.notInclude(ehlo.lines.join("\n"), "AUTH")
      assert.include(ehlo.lines.join("\n"), "STARTTLS")
      const refused = yield* c.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)
      assert.strictEqual(`${refused.code} ${refused.text}`, SmtpReply.format(AuthHandler.encryptionRequired))
      const mail = yield* c.command("MAIL FROM:<alice@example.org>")
      assert.strictEqual(`${mail.code} ${mail.text}`, SmtpReply.format(ListenerMode.mustStartTls))

      // nodemailer does STARTTLS, then AUTH, then sends to a remote domain: authenticated relay
      assert.isTrue(yield* verifyAfterStartTls(port))
    }), { timeout: 15_000 })

  it("engine options per mode", () => {
    assert.deepStrictEqual(ListenerMode.engineOptions({ mode: "submissions", tlsAvailable: true, methods: ["PLAIN"] }).disabledCommands, ["STARTTLS"])
    assert.isTrue(ListenerMode.engineOptions({ mode: "submissions", tlsAvailable: true, methods: ["PLAIN"] }).secure)
    assert.deepStrictEqual(ListenerMode.engineOptions({ mode: "mx", tlsAvailable: false, methods: [] }).disabledCommands, ["STARTTLS", "AUTH"])
    assert.deepStrictEqual(ListenerMode.sessionDisabledCommands({ mode: "mx", tlsAvailable: true, methods: ["PLAIN"] }, false), ["AUTH"])
    assert.deepStrictEqual(ListenerMode.sessionDisabledCommands({ mode: "mx", tlsAvailable: true, methods: ["PLAIN"] }, true), [])
    assert.deepStrictEqual(ListenerMode.mailRequirement({ mode: "submissions", tlsAvailable: true, methods: ["PLAIN"] }, { secure: true, user: false as unknown as string }), ListenerMode.authRequired)
    assert.isUndefined(ListenerMode.mailRequirement({ mode: "submissions", tlsAvailable: true, methods: ["PLAIN"] }, { secure: true, user: "alice" }))
  })
})

describe("open relay table through smtp-server (RCPT with the relay authority)", () => {
  it.live("unauthenticated: local accepted, remote 554 5.7.1; authenticated: remote accepted", () =>
    Effect.gen(function*() {
      const { port } = yield* serve(mx, AuthHandler.make({ store, failureDelay: "1 millis", allowInsecure: true }))
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      yield* c.command("MAIL FROM:<x@remote.test>")
      assert.strictEqual((yield* c.command("RCPT TO:<bob@example.org>")).code, 250)
      const denied = yield* c.command("RCPT TO:<victim@elsewhere.test>")
      assert.strictEqual(`${denied.code} ${denied.text}`, "554 5.7.1 Relay access denied")
      const a = yield* SmtpClient.connect({ port })
      yield* a.command("EHLO client.test")
      assert.strictEqual((yield* a.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)).code, 235)
      yield* a.command("MAIL FROM:<alice@example.org>")
      assert.strictEqual((yield* a.command("RCPT TO:<friend@elsewhere.test>")).code, 250)
    }))
})

describe("AUTH replies from a real Incoming listener (RFC 4954 §4)", () => {
  const listenerWith = (listener: Partial<ListenerInput>, withUsers = true) =>
    Effect.gen(function*() {
      const scope = yield* Effect.scope
      const ctx = yield* Layer.buildWithScope(TestIncoming.layer({ ...(withUsers ? { auth: { store } } : {}), listener }), scope)
      return Context.get(ctx, Listeners).all[0]!.port
    })

  it.live.skipIf(!hasOpenssl)("mx with STARTTLS: AUTH before TLS is 538 5.7.11 (was 500 5.5.2), before EHLO 503, and works after STARTTLS", () =>
    Effect.gen(function*() {
      const files = selfSignedCert(yield* TestIncoming.tempDir("incoming-auth-"))
      const port = yield* listenerWith({ tls: { mode: "optional", cert: files.cert, key: files.key } })
      const c = yield* SmtpClient.connect({ port })
      const early = yield* c.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)
      assert.strictEqual(`${early.code} ${early.text.slice(0, 5)}`, "503 5.5.1")
      const ehlo = yield* c.command("EHLO client.test")
      assert.notInclude(ehlo.lines.join("\n"), "AUTH")
      const clear = yield* c.command(`AUTH PLAIN ${b64("\0alice\0correct horse")}`)
      assert.strictEqual(`${clear.code} ${clear.text}`, SmtpReply.format(AuthHandler.encryptionRequired))
      // The README's row says the same reply.
      assert.include(readFileSync(new URL("../../README.md", import.meta.url), "utf8"), "| 538 5.7.11 | AUTH before TLS")
      assert.isTrue(yield* verifyAfterStartTls(port))
    }), { timeout: 15_000 })

  it.live("mx without TLS: AUTH is 538 5.7.11 (encryption is what it lacks); without users 502 5.5.1", () =>
    Effect.gen(function*() {
      const port = yield* listenerWith({})
      const c = yield* SmtpClient.connect({ port })
      yield* c.command("EHLO client.test")
      const r = yield* c.command("AUTH LOGIN")
      assert.strictEqual(`${r.code} ${r.text}`, SmtpReply.format(AuthHandler.encryptionRequired))
      const none = yield* listenerWith({}, false)
      const d = yield* SmtpClient.connect({ port: none })
      yield* d.command("EHLO client.test")
      const r2 = yield* d.command("AUTH LOGIN")
      assert.strictEqual(`${r2.code} ${r2.text}`, SmtpReply.format(ListenerMode.authNotAvailable))
    }))
})
