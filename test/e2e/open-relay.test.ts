/**
 * No open relay, on every listener mode, through the whole server: a non-local recipient from an
 * unauthenticated, untrusted client is refused (554 5.7.1 at RCPT on mx; 530 5.7.0 at MAIL on
 * submission listeners, which require AUTH); the same from an authenticated client or from a
 * trusted network is accepted. Real TLS (self-signed), real AUTH PLAIN with nodemailer.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import nodemailer from "nodemailer"
import * as UserStore from "../../src/auth/UserStore.ts"
import type { ListenerMode } from "../../src/smtp/ListenerOptions.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"

const certDir = hasOpenssl ? mkdtempSync(join(tmpdir(), "incoming-relay-")) : undefined
const certs = certDir === undefined ? undefined : selfSignedCert(certDir)
afterAll(() => {
  if (certDir !== undefined) rmSync(certDir, { recursive: true, force: true })
})
const store = UserStore.fromRecord({ alice: "correct horse" })

type Client = "untrusted" | "authenticated" | "trusted"

const send = (port: number, mode: ListenerMode, client: Client, to: string) =>
  Effect.promise(async () => {
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port,
      secure: mode === "submissions",
      requireTLS: mode === "submission",
      ignoreTLS: mode === "mx" && client !== "authenticated",
      tls: { rejectUnauthorized: false },
      ...(client === "authenticated" ? { auth: { user: "alice", pass: "correct horse" } } : {})
    })
    try {
      const info = await transport.sendMail({ from: "sender@remote.test", to, subject: "relay?", text: "x" })
      return { code: Number(info.response.slice(0, 3)), text: info.response }
    } catch (e) {
      const err = e as { responseCode?: number; response?: string; message: string }
      return { code: err.responseCode ?? 0, text: err.response ?? err.message }
    } finally {
      transport.close()
    }
  })

const server = (mode: ListenerMode, trusted: boolean) =>
  TestIncoming.layer({
    domains: ["example.test"],
    auth: { store, failureDelay: 0 },
    relay: { trustedNetworks: trusted ? ["127.0.0.1/32"] : [] },
    listener: { mode, tls: { mode: mode === "submissions" ? "implicit" : "optional", cert: certs?.cert, key: certs?.key } }
  })

const table: ReadonlyArray<{ mode: ListenerMode; client: Client; to: string; expect: number; reply?: RegExp }> = [
  { mode: "mx", client: "untrusted", to: "x@elsewhere.test", expect: 554, reply: /5\.7\.1/ },
  { mode: "mx", client: "untrusted", to: "u@example.test", expect: 250 },
  { mode: "mx", client: "authenticated", to: "x@elsewhere.test", expect: 250 },
  { mode: "mx", client: "trusted", to: "x@elsewhere.test", expect: 250 },
  { mode: "submission", client: "untrusted", to: "x@elsewhere.test", expect: 530, reply: /5\.7\.0/ },
  { mode: "submission", client: "untrusted", to: "u@example.test", expect: 530 },
  { mode: "submission", client: "authenticated", to: "x@elsewhere.test", expect: 250 },
  { mode: "submission", client: "trusted", to: "x@elsewhere.test", expect: 250 },
  { mode: "submissions", client: "untrusted", to: "x@elsewhere.test", expect: 530, reply: /5\.7\.0/ },
  { mode: "submissions", client: "authenticated", to: "x@elsewhere.test", expect: 250 },
  { mode: "submissions", client: "trusted", to: "x@elsewhere.test", expect: 250 }
]

describe.skipIf(!hasOpenssl)("open relay: every listener mode", () => {
  for (const row of table) {
    it.live(`${row.mode}: ${row.client} client → ${row.to} gets ${row.expect}`, () =>
      Effect.gen(function*() {
        const ctx = yield* Layer.build(server(row.mode, row.client === "trusted"))
        const port = Context.get(ctx, Listeners).all[0]!.port
        const result = yield* send(port, row.mode, row.client, row.to)
        assert.strictEqual(result.code, row.expect, result.text)
        if (row.reply !== undefined) assert.match(result.text, row.reply)
      }))
  }

  it.live("a submission listener does not offer AUTH before STARTTLS, and offers it after", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(server("submission", false))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const { SmtpClient } = yield* Effect.promise(() => import("../../src/testing/index.ts"))
      const c = yield* SmtpClient.connect({ port })
      const ehlo = yield* c.command("EHLO client.test")
      assert.isFalse(ehlo.lines.some((l) => /AUTH/.test(l)), ehlo.lines.join(" / "))
      assert.isTrue(ehlo.lines.some((l) => /STARTTLS/.test(l)))
      const mail = yield* c.command("MAIL FROM:<a@remote.test>")
      assert.strictEqual(mail.code, 530)
    }))

  it.live("a submission listener without users does not start", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(TestIncoming.layer({
        listener: { mode: "submission", tls: { mode: "optional", cert: certs?.cert, key: certs?.key } }
      })))
      assert.isTrue(exit._tag === "Failure")
      assert.include(String(exit._tag === "Failure" ? JSON.stringify(exit.cause) : ""), "needs AUTH")
    }))
})
