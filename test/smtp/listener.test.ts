/**
 * Listener binding and TLS modes over real sockets: implicit TLS, STARTTLS required, the
 * errors a listener fails to start with (bad certificate, address in use), and IPv6.
 * Certificates are self-signed, made with the openssl CLI in a temporary directory.
 */
import { createServer } from "node:net"
import { networkInterfaces } from "node:os"
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import nodemailer from "nodemailer"
import { ListenError } from "../../src/smtp/ListenError.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { awaitDeliveredId, garbageFile, hasOpenssl, queuedId, selfSignedCert, simpleBody, transaction } from "./helpers.ts"

/** A test server whose listener uses a fresh self-signed certificate. */
const withCert = (mode: "implicit" | "required" | "optional", name: string) =>
  Layer.unwrap(Effect.gen(function*() {
    const dir = yield* TestIncoming.tempDir("incoming-cert-")
    const { cert, key } = selfSignedCert(dir)
    return TestIncoming.layer({ listener: { name, tls: { mode, cert, key } } })
  }))

const hasIpv6Loopback = Object.values(networkInterfaces()).some((list) =>
  (list ?? []).some((i) => i.family === "IPv6" && i.address === "::1")
)

const sendWithNodemailer = (options: Record<string, unknown>, to = "user@example.test") =>
  Effect.gen(function*() {
    const port = yield* TestIncoming.port
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port, tls: { rejectUnauthorized: false }, ...options })
    return yield* Effect.tryPromise(() =>
      transport.sendMail({ from: "a@sender.test", to, subject: "over tls", text: "secret" })
    )
  })

const queuedIdOf = (response: string) => {
  const m = /^250 2\.0\.0 queued as ([0-9A-Z]{16})$/.exec(response)
  assert.isNotNull(m, response)
  return m![1]!
}

describe.skipIf(!hasOpenssl)("TLS: implicit", () => {
  layer(withCert("implicit", "smtps"), { excludeTestServices: true })((it) => {
    it.effect("accepts mail over implicit TLS (nodemailer secure: true), Received says ESMTPS", () =>
      Effect.gen(function*() {
        const info = yield* sendWithNodemailer({ secure: true })
        const msg = yield* awaitDeliveredId(queuedIdOf(info.response))
        assert.isTrue(msg.envelope.secure)
        assert.match(msg.text, /^Received: from .*\r\n\tby mx\.test \(Incoming\) with ESMTPS id /)
        assert.include(msg.text, "secret")
      }))

    it.effect("the scripted client speaks TLS from the first byte; EHLO offers no STARTTLS", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port, tls: true })
        assert.strictEqual(c.greeting.code, 220)
        const caps = yield* c.command("EHLO tls.test")
        assert.notInclude(caps.lines.join("\n"), "STARTTLS")
        const reply = yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: simpleBody("tls") })
        const msg = yield* awaitDeliveredId(queuedId(reply))
        assert.include(msg.text, "with ESMTPS id")
      }))

    it.effect("a plaintext client gets no greeting", () =>
      Effect.gen(function*() {
        const error = yield* SmtpClient.connect({ port: yield* TestIncoming.port, timeoutMs: 500 }).pipe(Effect.flip)
        // The server waits for a TLS ClientHello: nothing SMTP-like ever arrives in clear text.
        assert.match(error.message, /timed out waiting for the greeting|connection closed/)
      }))
  })
})

describe.skipIf(!hasOpenssl)("TLS: required (STARTTLS)", () => {
  layer(withCert("required", "submission-ish"), { excludeTestServices: true })((it) => {
    it.effect("MAIL before STARTTLS is 530 5.7.0; EHLO offers STARTTLS", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        const caps = yield* c.command("EHLO plain.test")
        assert.include(caps.lines.join("\n"), "STARTTLS")
        const mail = yield* c.command("MAIL FROM:<a@sender.test>")
        assert.strictEqual(mail.code, 530)
        assert.match(mail.text, /^5\.7\.0 /)
      }))

    it.effect("after STARTTLS (nodemailer requireTLS) delivery works and Received says ESMTPS", () =>
      Effect.gen(function*() {
        const info = yield* sendWithNodemailer({ secure: false, requireTLS: true })
        const msg = yield* awaitDeliveredId(queuedIdOf(info.response))
        assert.isTrue(msg.envelope.secure)
        assert.match(msg.text, /^Received: from .*\r\n\tby mx\.test \(Incoming\) with ESMTPS id /)
      }))

    // smtp-server sets `session.user = false` on STARTTLS (RFC 3207: forget what came before);
    // a session that tests `user !== undefined` then thinks it is authenticated.
    it.effect("STARTTLS does not make a session authenticated: relaying is still refused (554 5.7.1)", () =>
      Effect.gen(function*() {
        const error = yield* sendWithNodemailer({ secure: false, requireTLS: true }, "someone@elsewhere.test").pipe(
          Effect.flip
        )
        const cause = error.cause as { responseCode?: number; response?: string } | undefined
        assert.strictEqual(cause?.responseCode, 554, String(cause?.response))
        assert.match(String(cause?.response), /^554 5\.7\.1 /)
      }))
  })
})

describe("listener start failures", () => {
  it.live.skipIf(!hasOpenssl)("a bad certificate fails the layer with ListenError BadCertificate naming the listener", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-badcert-")
      const good = selfSignedCert(dir)
      const cases = [
        { cert: garbageFile(dir, "bad-cert.pem"), key: good.key },
        { cert: good.cert, key: garbageFile(dir, "bad-key.pem") },
        { cert: `${dir}/missing.pem`, key: good.key }
      ]
      for (const files of cases) {
        const error = yield* Layer.build(TestIncoming.layer({
          listener: { name: "mx-public", tls: { mode: "implicit", ...files } }
        })).pipe(Effect.flip)
        assert.instanceOf(error, ListenError)
        const e = error as ListenError
        assert.strictEqual(e.reason._tag, "BadCertificate")
        assert.strictEqual(e.listener, "mx-public")
        assert.include(e.message, "listener mx-public")
      }
    }))

  it.live("TLS without a certificate is a BadCertificate too", () =>
    Effect.gen(function*() {
      const error = yield* Layer.build(TestIncoming.layer({ listener: { name: "no-cert", tls: { mode: "optional" } } })).pipe(
        Effect.flip
      )
      assert.instanceOf(error, ListenError)
      assert.strictEqual((error as ListenError).reason._tag, "BadCertificate")
      assert.include(error.message, "no-cert")
    }))

  it.live("a port already in use fails the layer with ListenError AddressInUse", () =>
    Effect.gen(function*() {
      const blocker = createServer()
      const port = yield* Effect.acquireRelease(
        Effect.callback<number>((resume) => {
          blocker.listen(0, "127.0.0.1", () => {
            resume(Effect.succeed((blocker.address() as { port: number }).port))
          })
        }),
        () =>
          Effect.callback<void>((resume) => {
            blocker.close(() => resume(Effect.void))
          })
      )
      const error = yield* Layer.build(TestIncoming.layer({ listener: { name: "taken", port } })).pipe(Effect.flip)
      assert.instanceOf(error, ListenError)
      const e = error as ListenError
      assert.strictEqual(e.reason._tag, "AddressInUse")
      assert.strictEqual(e.address, `127.0.0.1:${port}`)
      assert.include(e.message, "listener taken")
    }))
})

describe.skipIf(!hasIpv6Loopback)("IPv6", () => {
  layer(TestIncoming.layer({ listener: { host: "::1", name: "v6" } }), { excludeTestServices: true })((it) => {
    it.effect("a listener on ::1 accepts mail; Received shows the IPv6 literal", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port, host: "::1" })
        assert.strictEqual(c.greeting.code, 220)
        assert.strictEqual((yield* c.command("EHLO v6.test")).code, 250)
        const reply = yield* transaction(c, { from: "a@sender.test", to: ["user@example.test"], body: simpleBody("v6") })
        const msg = yield* awaitDeliveredId(queuedId(reply))
        assert.strictEqual(msg.envelope.clientAddress, "::1")
        assert.include(msg.text, "Received: from v6.test ([IPv6:::1])")
      }))
  })
})
