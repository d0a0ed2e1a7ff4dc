/**
 * SNI: a listener with several certificates presents the one for the name the client asks for,
 * and its default certificate for any other name (or none). Implicit TLS, real handshakes.
 */
import { X509Certificate } from "node:crypto"
import { mkdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { connect as tlsConnect } from "node:tls"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { Listeners } from "../../src/smtp/Listener.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl, selfSignedCert } from "./helpers.ts"

const presented = (port: number, servername: string | undefined) =>
  Effect.callback<string, Error>((resume) => {
    const s = tlsConnect({ port, host: "127.0.0.1", rejectUnauthorized: false, ...(servername === undefined ? {} : { servername }) }, () => {
      resume(Effect.succeed(s.getPeerX509Certificate()!.fingerprint256))
      s.destroy()
    })
    s.once("error", (e) => resume(Effect.fail(e)))
  })

describe.skipIf(!hasOpenssl)("SNI", () => {
  it.live("presents the certificate for the requested name, the default one otherwise", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const [a, b] = ["a", "b"].map((n) => {
        mkdirSync(join(dir, n))
        return selfSignedCert(join(dir, n))
      }) as [{ cert: string; key: string }, { cert: string; key: string }]
      const fp = (p: string) => new X509Certificate(readFileSync(p)).fingerprint256
      const ctx = yield* Layer.build(TestIncoming.layer({
        listener: { tls: { mode: "implicit", cert: a.cert, key: a.key, sni: { "Other.Test": b } } }
      }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      assert.strictEqual(yield* presented(port, "other.test"), fp(b.cert))
      assert.strictEqual(yield* presented(port, "mx.test"), fp(a.cert))
      assert.strictEqual(yield* presented(port, undefined), fp(a.cert))
    }))

  it.live("a bad SNI certificate stops the listener from starting, naming the entry", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const a = selfSignedCert(dir)
      const exit = yield* Effect.exit(Layer.build(TestIncoming.layer({
        listener: { tls: { mode: "implicit", cert: a.cert, key: a.key, sni: { "other.test": { cert: join(dir, "missing.pem"), key: a.key } } } }
      })))
      assert.strictEqual(exit._tag, "Failure")
      assert.include(JSON.stringify(exit), 'sni \\"other.test\\"')
    }))
})
