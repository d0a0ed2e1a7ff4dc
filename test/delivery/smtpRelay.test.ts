/**
 * The SMTP relay adapter against real SMTP servers on loopback: another Incoming (delivered,
 * and refused per recipient by its relay check), and smtp-server instances that answer with
 * chosen codes at RCPT and at the final dot, require AUTH, or offer STARTTLS with a self-signed
 * certificate. 2xx → Ok, 4xx → Retry, 5xx → Reject, per recipient where the peer answers per
 * recipient; connection and TLS-policy failures → Retry.
 */
import type { AddressInfo } from "node:net"
import { mkdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, type Scope } from "effect"
import { SMTPServer, type SMTPServerOptions } from "smtp-server"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as SmtpRelayAdapter from "../../src/delivery/SmtpRelayAdapter.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { Captured, TestIncoming } from "../../src/testing/index.ts"
import { envelope } from "../support/fixtures.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"
import { runScript } from "../support/server.ts"

const text = "From: sender@remote.test\r\nSubject: relayed\r\n\r\n.starts with a dot\r\nbody\r\n"

const delivery = (rcpts: ReadonlyArray<string>): DA.Delivery => ({
  id: "01RELAYTEST00001",
  envelope: envelope(rcpts),
  receivedAt: 0,
  recipients: rcpts.map((rcpt) => ({ rcpt, attempt: 1 })),
  size: Buffer.byteLength(text) + 14,
  body: DA.bodyStream(() => BodyStream.fromParts("Received: x\r\n", [Buffer.from(text)]))
})

const byRcpt = (outcomes: ReadonlyArray<DA.RecipientOutcome>) =>
  Object.fromEntries(outcomes.map((o) => [o.rcpt, `${o._tag}: ${o._tag === "Ok" ? o.reply ?? "" : o.reason}`]))

interface Seen {
  readonly from: string
  readonly to: ReadonlyArray<string>
  readonly body: string
  readonly secure: boolean
  readonly user: string | undefined
}

/** An smtp-server on loopback with the given hooks; records what it accepted. */
const peer = (options: Partial<SMTPServerOptions>): Effect.Effect<{ readonly port: number; readonly seen: Array<Seen> }, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ server: SMTPServer; port: number; seen: Array<Seen> }>((resume) => {
      const seen: Array<Seen> = []
      const server = new SMTPServer({
        authOptional: true,
        logger: false,
        disableReverseLookup: true,
        disabledCommands: options.key === undefined ? ["STARTTLS"] : [],
        onData(stream, session, callback) {
          const chunks: Array<Buffer> = []
          stream.on("data", (c: Buffer) => chunks.push(c))
          stream.on("end", () => {
            const to = session.envelope.rcptTo.map((r) => r.address)
            seen.push({
              from: session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address,
              to,
              body: Buffer.concat(chunks).toString("utf8"),
              secure: session.secure,
              user: typeof session.user === "string" ? session.user : undefined
            })
            if (to.some((r) => r.startsWith("datafail4"))) return callback(Object.assign(new Error("4.3.0 queue full, later"), { responseCode: 452 }))
            if (to.some((r) => r.startsWith("datafail5"))) return callback(Object.assign(new Error("5.7.1 content refused"), { responseCode: 554 }))
            callback(null, "2.0.0 queued as PEER1")
          })
        },
        onRcptTo(address, _session, callback) {
          if (address.address.startsWith("busy")) return callback(Object.assign(new Error("4.2.1 mailbox busy"), { responseCode: 451 }))
          if (address.address.startsWith("gone")) return callback(Object.assign(new Error("5.1.1 no such user"), { responseCode: 550 }))
          callback()
        },
        ...options
      })
      server.on("error", () => undefined)
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, port: (server.server.address() as AddressInfo).port, seen })))
    }),
    ({ server }) => Effect.callback<void>((resume) => server.close(() => resume(Effect.void)))
  )

describe("SmtpRelayAdapter", () => {
  it.live("relays to another Incoming: delivered intact; recipients it will not relay for are rejected with its reply", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(TestIncoming.layer({ domains: ["example.test"] }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const adapter = SmtpRelayAdapter.make({ host: "127.0.0.1", port, heloName: "relay.test" })
      const out = yield* adapter.deliver(delivery(["a@example.test", "x@elsewhere.test", "b@example.test"]))
      const got = byRcpt(out)
      assert.match(got["a@example.test"]!, /^Ok: 127\.0\.0\.1:\d+ said: 250 2\.0\.0 queued as \w+$/)
      assert.match(got["b@example.test"]!, /^Ok: /)
      assert.match(got["x@elsewhere.test"]!, /^Reject: 554 5\.7\.1 /)

      const [captured] = yield* Context.get(ctx, Captured).awaitDelivered(1).pipe(Effect.timeout("5 seconds"))
      assert.deepStrictEqual([...captured!.envelope.rcptTo], ["a@example.test", "b@example.test"])
      assert.strictEqual(captured!.envelope.mailFrom, "sender@remote.test")
      assert.strictEqual(captured!.envelope.helo, "relay.test")
      // The peer's own trace header, then ours, then the message byte for byte (the dot line survived).
      assert.match(captured!.text, /^Received: from relay\.test[\s\S]*\r\nReceived: x\r\nFrom: sender@remote\.test\r\n/)
      assert.isTrue(captured!.text.endsWith(text))
    }))

  it.live("DSN parameters go on (RFC 3461): RET/ENVID, and each recipient's NOTIFY/ORCPT in a transaction of its group", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(TestIncoming.layer({ domains: ["example.test"] }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const adapter = SmtpRelayAdapter.make({ host: "127.0.0.1", port, heloName: "relay.test" })
      const d = delivery(["a@example.test", "b@example.test", "c@example.test"])
      const a = { notify: ["SUCCESS", "DELAY"] as const, orcpt: { type: "rfc822", address: "Orig+A@Example.Test" } }
      const out = yield* adapter.deliver({
        ...d,
        envelope: { ...d.envelope, dsn: { ret: "HDRS", envid: "id 42=x" }, recipientDsn: { "a@example.test": a, "c@example.test": { notify: ["NEVER"] } } }
      })
      assert.deepStrictEqual(out.map((o) => o._tag), ["Ok", "Ok", "Ok"])
      // Three DSN groups (a; b without recipient parameters; c): three messages at the peer.
      const got = yield* Context.get(ctx, Captured).awaitDelivered(3).pipe(Effect.timeout("10 seconds"))
      const byFirst = Object.fromEntries(got.map((m) => [m.envelope.rcptTo[0]!, m.envelope]))
      for (const e of Object.values(byFirst)) assert.deepStrictEqual(e.dsn, { ret: "HDRS", envid: "id 42=x" })
      assert.deepStrictEqual(byFirst["a@example.test"]!.recipientDsn, { "a@example.test": a })
      assert.isUndefined(byFirst["b@example.test"]!.recipientDsn)
      assert.deepStrictEqual(byFirst["c@example.test"]!.recipientDsn, { "c@example.test": { notify: ["NEVER"] } })
    }))

  it.live("per-recipient RCPT replies: 250 → Ok, 451 → Retry, 550 → Reject; the final reply covers the accepted", () =>
    Effect.gen(function*() {
      const { port, seen } = yield* peer({})
      const adapter = SmtpRelayAdapter.make({ host: "127.0.0.1", port })
      const out = yield* adapter.deliver(delivery(["ok@x.test", "busy@x.test", "gone@x.test"]))
      assert.deepStrictEqual(Object.fromEntries(out.map((o) => [o.rcpt, o._tag])), { "ok@x.test": "Ok", "busy@x.test": "Retry", "gone@x.test": "Reject" })
      const got = byRcpt(out)
      assert.include(got["busy@x.test"], "451 4.2.1 mailbox busy")
      assert.include(got["gone@x.test"], "550 5.1.1 no such user")
      assert.include(got["ok@x.test"], "250 2.0.0 queued as PEER1")
      assert.deepStrictEqual(seen.map((s) => s.to), [["ok@x.test"]])
      assert.strictEqual(seen[0]!.body, `Received: x\r\n${text}`)

      const allRefused = yield* adapter.deliver(delivery(["busy@x.test", "gone@x.test"]))
      assert.deepStrictEqual(Object.fromEntries(allRefused.map((o) => [o.rcpt, o._tag])), { "busy@x.test": "Retry", "gone@x.test": "Reject" })
    }))

  it.live("a 4xx at the final dot retries, a 5xx rejects, every accepted recipient", () =>
    Effect.gen(function*() {
      const { port } = yield* peer({})
      const adapter = SmtpRelayAdapter.make({ host: "127.0.0.1", port })
      const later = yield* adapter.deliver(delivery(["datafail4@x.test", "ok@x.test"]))
      assert.deepStrictEqual(later.map((o) => o._tag), ["Retry", "Retry"])
      assert.include(byRcpt(later)["ok@x.test"], "452 4.3.0 queue full, later")
      const never = yield* adapter.deliver(delivery(["datafail5@x.test", "ok@x.test"]))
      assert.deepStrictEqual(never.map((o) => o._tag), ["Reject", "Reject"])
      assert.include(byRcpt(never)["ok@x.test"], "554 5.7.1 content refused")
    }))

  it.live("AUTH with user and password; refused credentials are retried, not bounced", () =>
    Effect.gen(function*() {
      const { port, seen } = yield* peer({
        authOptional: false,
        allowInsecureAuth: true,
        authMethods: ["PLAIN", "LOGIN"],
        onAuth(auth, _session, callback) {
          if (auth.username === "relay" && auth.password === "pw") return callback(null, { user: "relay" })
          callback(Object.assign(new Error("5.7.8 bad credentials"), { responseCode: 535 }))
        }
      })
      const good = SmtpRelayAdapter.make({ host: "127.0.0.1", port, startTls: "disabled", auth: { user: "relay", pass: "pw" } })
      assert.deepStrictEqual((yield* good.deliver(delivery(["ok@x.test"]))).map((o) => o._tag), ["Ok"])
      assert.strictEqual(seen[0]!.user, "relay")
      const bad = SmtpRelayAdapter.make({ host: "127.0.0.1", port, startTls: "disabled", auth: { user: "relay", pass: "nope" } })
      const out = yield* bad.deliver(delivery(["ok@x.test"]))
      assert.strictEqual(out[0]!._tag, "Retry")
      assert.include(byRcpt(out)["ok@x.test"], "535")
      const anonymous = SmtpRelayAdapter.make({ host: "127.0.0.1", port, startTls: "disabled" })
      const refused = yield* anonymous.deliver(delivery(["ok@x.test"]))
      assert.strictEqual(refused[0]!._tag, "Retry", "530 (authentication required) is our configuration, not the message")
      assert.include(byRcpt(refused)["ok@x.test"], "530")
    }))

  it.live.skipIf(!hasOpenssl)("STARTTLS: opportunistic upgrades when offered; required refuses a peer without it", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const cert = selfSignedCert(dir)
      const tlsPeer = yield* peer({ key: readFileSync(cert.key), cert: readFileSync(cert.cert) })
      const opportunistic = SmtpRelayAdapter.make({ host: "127.0.0.1", port: tlsPeer.port })
      assert.deepStrictEqual((yield* opportunistic.deliver(delivery(["ok@x.test"]))).map((o) => o._tag), ["Ok"])
      assert.isTrue(tlsPeer.seen[0]!.secure, "the session was upgraded")

      const verified = SmtpRelayAdapter.make({ host: "127.0.0.1", port: tlsPeer.port, startTls: "required", tls: { ca: readFileSync(cert.cert), servername: "mx.test" } })
      assert.deepStrictEqual((yield* verified.deliver(delivery(["ok@x.test"]))).map((o) => o._tag), ["Ok"])
      const unverifiable = SmtpRelayAdapter.make({ host: "127.0.0.1", port: tlsPeer.port, startTls: "required" })
      const untrusted = yield* unverifiable.deliver(delivery(["ok@x.test"]))
      assert.strictEqual(untrusted[0]!._tag, "Retry")
      assert.match(byRcpt(untrusted)["ok@x.test"]!, /certificate/i)

      const plainPeer = yield* peer({})
      const required = SmtpRelayAdapter.make({ host: "127.0.0.1", port: plainPeer.port, startTls: "required" })
      const out = yield* required.deliver(delivery(["ok@x.test"]))
      assert.strictEqual(out[0]!._tag, "Retry")
      assert.match(byRcpt(out)["ok@x.test"]!, /STARTTLS|TLS/)
      assert.strictEqual(plainPeer.seen.length, 0, "nothing was sent in the clear")
    }))

  it.live.skipIf(!hasOpenssl)("an extra CA is trusted besides Node's default CAs, not instead of them", () =>
    Effect.gen(function*() {
      // Two peers with certificates of their own: A's is trusted through NODE_EXTRA_CA_CERTS (part of
      // Node's default set, as the system's roots would be), B's through the adapter's `tls.ca`.
      // A `ca` that replaced the default set would fail A; Node reads NODE_EXTRA_CA_CERTS at start-up
      // only, hence the child process.
      const dir = yield* TestIncoming.tempDir()
      const certIn = (name: string) => {
        mkdirSync(join(dir, name))
        return selfSignedCert(join(dir, name))
      }
      const certA = certIn("a")
      const certB = certIn("b")
      const peerA = yield* peer({ key: readFileSync(certA.key), cert: readFileSync(certA.cert) })
      const peerB = yield* peer({ key: readFileSync(certB.key), cert: readFileSync(certB.cert) })
      const child = fileURLToPath(new URL("../support/relayCaChild.ts", import.meta.url))
      const run = yield* runScript(child, [certB.cert, String(peerA.port), String(peerB.port)], {
        cwd: dir,
        env: { NODE_EXTRA_CA_CERTS: certA.cert },
        timeoutMs: 30_000
      })
      assert.strictEqual(run.code, 0, run.stderr)
      // The outcomes are the last line (the adapter's log lines come before it).
      const last = run.stdout.trim().split("\n").at(-1)!
      const outcomes = JSON.parse(last) as ReadonlyArray<{ tag: string; detail: string }>
      assert.deepStrictEqual(outcomes.map((o) => o.tag), ["Ok", "Ok"], last)
      assert.isTrue(peerA.seen[0]?.secure, "A: delivered over TLS")
      assert.isTrue(peerB.seen[0]?.secure, "B: delivered over TLS")
    }))

  it.live("nobody listening: retried with the reason", () =>
    Effect.gen(function*() {
      const port = yield* Effect.map(peer({}).pipe(Effect.scoped), (p) => p.port)
      const adapter = SmtpRelayAdapter.make({ host: "127.0.0.1", port, connectTimeoutMs: 1_000 })
      const out = yield* adapter.deliver(delivery(["a@x.test", "b@x.test"]))
      assert.deepStrictEqual(out.map((o) => o._tag), ["Retry", "Retry"])
      assert.include(byRcpt(out)["a@x.test"], "ECONNREFUSED")
    }))
})
