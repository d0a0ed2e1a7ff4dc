/**
 * ACME end to end against Let's Encrypt's test CA (Debian's pebble, on loopback), real sockets
 * throughout: issuance before the listener starts with a real HTTP-01 and TLS-ALPN-01
 * validation (pebble resolves the name through a dnsmasq of the test's own and connects to our
 * responder), the certificate a STARTTLS client sees chaining to pebble's root, the files
 * owner-only and reused by the next start, a renewal swapped in while sessions stay open, and a
 * CA that refuses, which leaves the old certificate in service.
 */
import { X509Certificate } from "node:crypto"
import { rmSync, statSync } from "node:fs"
import { createServer, type Server } from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import { CertManager } from "../../src/acme/CertManager.ts"
import * as CertStore from "../../src/acme/CertStore.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import * as Pebble from "../support/pebble.ts"
import * as StartTls from "../support/starttls.ts"
import { name, other, ready, type Setup, setup, warnIfSkipped } from "./helpers.ts"

warnIfSkipped("acme.test.ts")

/** A server whose one listener (STARTTLS) uses the managed certificate of `name`. */
const server = (s: Setup) =>
  TestIncoming.layer({
    hostname: name,
    dataDir: s.dataDir,
    acme: s.acme,
    listener: { hostname: name, tls: { mode: "optional", acme: true } }
  })

/**
 * Builds the server in a scope of its own (closed by the caller, to restart), timing the start.
 * The test's scope closes it too: a test that fails half-way must not leave its renewal loop
 * running into the next tests, ordering from a CA that is gone and setting acme-client's
 * process-wide HTTP agent.
 */
const startServer = (s: Setup) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const started = Date.now()
    const ctx = yield* Layer.buildWithScope(server(s), scope)
    return { scope, ctx, startMs: Date.now() - started, port: Context.get(ctx, Listeners).all[0]!.port, manager: Context.get(ctx, CertManager) }
  })

const mode = (path: string) => statSync(path).mode & 0o777

/** Answers 404 to everything on 127.0.0.1:`port` until the scope closes; counts challenge requests. */
const holdWith404 = (port: number) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly server: Server; readonly challenges: () => number }, Error>((resume) => {
      let challenges = 0
      const server = createServer((req, res) => {
        if (req.url?.startsWith("/.well-known/acme-challenge/") === true) challenges++
        res.statusCode = 404
        res.end("not here\n")
      })
      server.once("error", (e) => resume(Effect.fail(new Error(`cannot hold pebble's validation port ${port}: ${e.message}`))))
      server.listen(port, "127.0.0.1", () => resume(Effect.succeed({ server, challenges: () => challenges })))
    }),
    ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  )

describe.skipIf(!ready)("ACME against pebble", () => {
  it.live("HTTP-01: issued before the listener starts, chains to pebble's root, stored 0600, reused after a restart", () =>
    Effect.gen(function*() {
      const s = yield* setup("http-01")
      const first = yield* startServer(s)
      console.log(`acme.test.ts: HTTP-01 issuance and start against pebble: ${first.startMs} ms`)
      const session = yield* StartTls.open(first.port, name, s.pebble.root)
      assert.isTrue(session.authorized, `verification against pebble's root: ${session.authorizationError}`)
      assert.include(session.peer.subjectaltname ?? "", `DNS:${name}`)
      const store = CertStore.paths(s.dataDir, s.acme.directory)
      for (const f of [store.accountKey, store.cert(name), store.key(name)]) assert.strictEqual(mode(f), 0o600, f)
      assert.strictEqual((yield* session.command("NOOP")).slice(0, 3), "250")
      const status = yield* first.manager.status
      assert.strictEqual(status[0]!.state, "valid")
      assert.strictEqual(status[0]!.domain, name)
      yield* Scope.close(first.scope, Exit.void)

      // A restart finds the certificate on disk: same certificate, no new order.
      const second = yield* startServer(s)
      const again = yield* StartTls.open(second.port, name, s.pebble.root)
      assert.strictEqual(again.fingerprint, session.fingerprint)
      console.log(`acme.test.ts: restart with the certificate on disk: ${second.startMs} ms`)
      yield* Scope.close(second.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)

  it.live("two managed names: SNI picks each one's certificate; no SNI gets the listener's host name", () =>
    Effect.gen(function*() {
      const s = yield* setup("http-01", { domains: [other, name] })
      const started = yield* startServer(s)
      for (const asked of [name, other]) {
        const session = yield* StartTls.open(started.port, asked, s.pebble.root)
        assert.isTrue(session.authorized, `${asked}: ${session.authorizationError}`)
        assert.strictEqual(session.peer.subjectaltname, `DNS:${asked}`)
      }
      // A client that names nothing (or something else) gets the listener's own name, not the first listed.
      const unnamed = yield* StartTls.open(started.port, "unknown.example", s.pebble.root)
      assert.strictEqual(unnamed.peer.subjectaltname, `DNS:${name}`)
      yield* Scope.close(started.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)

  it.live("TLS-ALPN-01: issued with a real validation on the TLS-ALPN port", () =>
    Effect.gen(function*() {
      const s = yield* setup("tls-alpn-01", { keyType: "rsa-2048" })
      const started = yield* startServer(s)
      console.log(`acme.test.ts: TLS-ALPN-01 issuance (RSA 2048) and start against pebble: ${started.startMs} ms`)
      const session = yield* StartTls.open(started.port, name, s.pebble.root)
      assert.isTrue(session.authorized, `verification against pebble's root: ${session.authorizationError}`)
      assert.include(session.peer.subjectaltname ?? "", `DNS:${name}`)
      // RSA 2048 as configured.
      assert.strictEqual(session.peer.bits, 2048)
      yield* Scope.close(started.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)

  it.live("a forced renewal swaps the certificate while sessions stay open; new STARTTLS sees the new one", () =>
    Effect.gen(function*() {
      const s = yield* setup("http-01")
      const started = yield* startServer(s)
      const open = 10
      const before = yield* Effect.forEach(Array.from({ length: open }), () => StartTls.open(started.port, name, s.pebble.root))
      const t0 = Date.now()
      yield* started.manager.renew()
      console.log(`acme.test.ts: renewal and swap with ${open} open STARTTLS sessions: ${Date.now() - t0} ms`)
      // Every session opened before the swap still works, a whole transaction included.
      for (const session of before) assert.strictEqual((yield* session.command("NOOP")).slice(0, 3), "250")
      const one = before[0]!
      assert.strictEqual((yield* one.command("MAIL FROM:<a@sender.test>")).slice(0, 3), "250")
      assert.strictEqual((yield* one.command("RCPT TO:<user@example.test>")).slice(0, 3), "250")
      assert.strictEqual((yield* one.command("DATA")).slice(0, 3), "354")
      assert.strictEqual((yield* one.command("Subject: kept\r\n\r\nsent over the old session\r\n.")).slice(0, 3), "250")
      const after = yield* StartTls.open(started.port, name, s.pebble.root)
      assert.isTrue(after.authorized)
      assert.notStrictEqual(after.fingerprint, one.fingerprint)
      yield* Scope.close(started.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)

  it.live("a CA that is down: the renewal fails, the old certificate stays in service, the failure is recorded", () =>
    Effect.gen(function*() {
      const s = yield* setup("http-01")
      const started = yield* startServer(s)
      const before = yield* StartTls.open(started.port, name, s.pebble.root)
      yield* s.pebble.stop
      const failed = yield* Effect.flip(started.manager.renew())
      assert.strictEqual(failed.reason._tag, "Ca")
      const status = (yield* started.manager.status)[0]!
      assert.strictEqual(status.failures, 1)
      assert.strictEqual(status.state, "valid")
      assert.isDefined(status.nextAttemptAt)
      // Still serving, with the same certificate, old session and new.
      assert.strictEqual((yield* before.command("NOOP")).slice(0, 3), "250")
      const after = yield* StartTls.open(started.port, name, s.pebble.root)
      assert.strictEqual(after.fingerprint, before.fingerprint)
      yield* Scope.close(started.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)

  it.live("a CA down for a while: retried in the background with growing waits, renewed once it is back", () =>
    Effect.gen(function*() {
      const s = yield* setup("http-01")
      const started = yield* startServer(s)
      const before = yield* StartTls.open(started.port, name, s.pebble.root)
      yield* s.pebble.stop
      yield* Effect.flip(started.manager.renew())
      // The loop retries by itself: 0.5 s, 1 s, then every 2 s (retry_max).
      const waits: Array<number> = []
      let seen = 1
      while (seen < 4) {
        const st = (yield* started.manager.status)[0]!
        if (st.failures > seen) {
          seen = st.failures
          waits.push(st.nextAttemptAt!.getTime() - Date.now())
        }
        yield* Effect.sleep(Duration.millis(100))
      }
      assert.isAbove(waits.at(-1)!, waits[0]! - 100, `waits grow: ${waits.join(", ")} ms`)
      // Still serving the old certificate.
      assert.strictEqual((yield* before.command("NOOP")).slice(0, 3), "250")
      // The CA comes back (same address, a new root): the next retry succeeds and is swapped in.
      const back = yield* s.restartPebble
      const renewed = yield* Effect.gen(function*() {
        for (;;) {
          const now = yield* StartTls.open(started.port, name, back.root)
          if (now.fingerprint !== before.fingerprint) return now
          yield* Effect.sleep(Duration.millis(500))
        }
      }).pipe(Effect.scoped, Effect.timeout("60 seconds"))
      assert.isTrue(renewed.authorized, renewed.authorizationError)
      assert.strictEqual((yield* started.manager.status)[0]!.failures, 0)
      yield* Scope.close(started.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)

  it.live("a challenge the CA cannot validate: the failure is a challenge failure, and the old certificate stays", () =>
    Effect.gen(function*() {
      const s = yield* setup("http-01")
      const started = yield* startServer(s)
      const before = yield* StartTls.open(started.port, name, s.pebble.root)
      yield* Scope.close(started.scope, Exit.void)
      // Where pebble looks, the test itself answers 404 for the renewal's duration. Left free,
      // the port could be bound by anything on the machine meanwhile: the renewal passed in CI
      // with our own responder back on that port (fixed), and with no request to the 404 port at
      // all (pebble reused an authorization: below). Holding it, and counting pebble's requests
      // there, leaves one explanation each way.
      const held = yield* holdWith404(s.acme.httpListen!.port)
      // A new account for the renewal: pebble reuses a valid authorization of the same account
      // with a chance of 1 in 100 even with PEBBLE_AUTHZREUSE=0 (it reuses when
      // rand.Intn(100) > percent fails), and then asks for no challenge at all — the unexplained
      // pass. The certificate and its key stay in the store.
      rmSync(CertStore.paths(s.dataDir, s.acme.directory).accountKey)
      // Same store, but the responder now listens where pebble does not look.
      const elsewhere = yield* Effect.promise(() => Pebble.freePort())
      const moved = { ...s, acme: { ...s.acme, httpListen: { host: "127.0.0.1", port: elsewhere } } }
      const restarted = yield* startServer(moved)
      const renewal = yield* Effect.exit(restarted.manager.renew())
      assert.isTrue(Exit.isFailure(renewal), `the renewal must fail: pebble cannot reach the responder (it asked the 404 port ${held.challenges()} times)`)
      assert.isAtLeast(held.challenges(), 1, "pebble validated where the test answers 404")
      const failed = yield* Effect.flip(renewal)
      assert.strictEqual(failed.reason._tag, "Challenge")
      const after = yield* StartTls.open(restarted.port, name, s.pebble.root)
      assert.strictEqual(after.fingerprint, before.fingerprint)
      yield* Scope.close(restarted.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)

  it.live("the background renewal: a certificate due soon is renewed by the supervised fiber and swapped in", () =>
    Effect.gen(function*() {
      // 12 s of validity, renewal asked for 11 s before expiry but held to half the lifetime:
      // due 6 s after issuance (not at once, which would order again and again).
      const s = yield* setup("http-01", { renewBeforeMs: 11_000 }, { alwaysValid: true, validitySeconds: 12 })
      const started = yield* startServer(s)
      const before = yield* StartTls.open(started.port, name, s.pebble.root)
      const first = new X509Certificate(before.peer.raw)
      // Wait (bounded) for a handshake that sees another certificate.
      const renewed = yield* Effect.gen(function*() {
        for (;;) {
          const now = yield* StartTls.open(started.port, name, s.pebble.root)
          if (now.fingerprint !== before.fingerprint) return now
          yield* Effect.sleep(Duration.millis(500))
        }
      }).pipe(Effect.scoped, Effect.timeout("60 seconds"))
      assert.isTrue(renewed.authorized, renewed.authorizationError)
      // Not before half the lifetime had passed.
      assert.isAtLeast(Date.parse(new X509Certificate(renewed.peer.raw).validFrom) - Date.parse(first.validFrom), 5_000)
      assert.strictEqual((yield* before.command("NOOP")).slice(0, 3), "250")
      yield* Scope.close(started.scope, Exit.void)
    }).pipe(Effect.scoped), 120_000)
})
