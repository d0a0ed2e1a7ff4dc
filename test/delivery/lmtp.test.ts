/**
 * The LMTP adapter against real LMTP servers on this machine.
 *
 * Dovecot (Debian's `dovecot-lmtpd`), configured and started by the test in a temporary
 * directory on a Unix socket: one recipient delivered into its Maildir, one refused after DATA
 * (over quota, 552), one unknown at RCPT (550), one failing temporarily (451); and a whole
 * Incoming delivering to it. Skipped, with a message, where Dovecot is not installed.
 *
 * smtp-server in LMTP mode over TCP: dot-stuffing and line endings on the wire, per-recipient
 * DATA replies. A scripted server that hangs up after the first DATA reply, and a refused
 * connection: what was answered stays answered, the rest is retried.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { type AddressInfo, connect as netConnect, createServer, type Server, type Socket } from "node:net"
import { userInfo } from "node:os"
import { join } from "node:path"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Effect, Layer, type Scope } from "effect"
import { SMTPServer } from "smtp-server"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as LmtpAdapter from "../../src/delivery/LmtpAdapter.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { Captured, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { envelope } from "../support/fixtures.ts"

const message = "Subject: lmtp test\r\n\r\n.leading dot\r\nline\r\n..two dots\r\n.\r\nlast\r\n"

const delivery = (rcpts: ReadonlyArray<string>, text = message): DA.Delivery => ({
  id: "01LMTPTEST000001",
  envelope: envelope(rcpts),
  receivedAt: 0,
  recipients: rcpts.map((rcpt) => ({ rcpt, attempt: 1 })),
  size: Buffer.byteLength(text),
  body: DA.bodyStream(() => BodyStream.fromParts("", [Buffer.from(text)]))
})

const byRcpt = (outcomes: ReadonlyArray<DA.RecipientOutcome>) =>
  Object.fromEntries(outcomes.map((o) => [o.rcpt, `${o._tag}: ${o._tag === "Ok" ? o.reply ?? "" : o.reason}`]))

// --- Dovecot -------------------------------------------------------------------------------

const dovecotBinary = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"].find((p) => existsSync(p))
const hasLmtp = dovecotBinary !== undefined && ["/usr/lib/dovecot/lmtp", "/usr/libexec/dovecot/lmtp"].some((p) => existsSync(p))
if (!hasLmtp) {
  console.warn("lmtp.test.ts: Dovecot's LMTP server is not installed (apt-get install dovecot-lmtpd); its tests are skipped")
}

class Dovecot extends Context.Service<Dovecot, { readonly socket: string; readonly mail: string; readonly log: () => string }>()("test/Dovecot") {}

/** The uid/gid mail is stored as: ours, or Dovecot's own user when we are root (Dovecot refuses uid 0). */
const mailOwner = (): { readonly uid: number; readonly gid: number } => {
  const uid = process.getuid?.() ?? 0
  if (uid !== 0) return { uid, gid: process.getgid?.() ?? 0 }
  const id = (flag: string) => Number(execFileSync("id", [flag, "dovecot"], { encoding: "utf8" }).trim())
  return { uid: id("-u"), gid: id("-g") }
}

const dovecotConfig = (dir: string, owner: { readonly uid: number; readonly gid: number }) => {
  const me = userInfo()
  return `# written by test/delivery/lmtp.test.ts
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
instance_name = incoming-test-${process.pid}
protocols = lmtp
ssl = no
default_internal_user = ${me.username}
default_internal_group = ${execFileSync("id", ["-gn"], { encoding: "utf8" }).trim()}
default_login_user = ${me.username}
first_valid_uid = 0
first_valid_gid = 0
auth_username_format = %Ln
mail_location = maildir:${dir}/mail/%n
mail_plugins = quota
plugin {
  quota = maildir:User quota
}
passdb {
  driver = passwd-file
  args = ${dir}/users
}
userdb {
  driver = passwd-file
  args = ${dir}/users
  default_fields = uid=${owner.uid} gid=${owner.gid} home=${dir}/home/%n
}
service lmtp {
  unix_listener lmtp {
    path = ${dir}/lmtp.sock
    mode = 0666
  }
}
service anvil {
  chroot =
}
`
}

const waitForSocket = (path: string, proc: ChildProcess, log: () => string) =>
  Effect.callback<void, Error>((resume) => {
    const deadline = Date.now() + 10_000
    const poll = () => {
      if (proc.exitCode !== null) return resume(Effect.fail(new Error(`dovecot exited (${proc.exitCode}): ${log()}`)))
      if (Date.now() > deadline) return resume(Effect.fail(new Error(`dovecot did not open ${path}: ${log()}`)))
      if (!existsSync(path)) return void setTimeout(poll, 20)
      const probe = netConnect({ path })
      probe.once("connect", () => {
        probe.destroy()
        resume(Effect.void)
      })
      probe.once("error", () => setTimeout(poll, 20))
    }
    poll()
  })

/** Dovecot in a temporary directory, started for these tests and stopped (by its PID) afterwards. */
const DovecotLive = Layer.effect(
  Dovecot,
  Effect.gen(function*() {
    const dir = yield* TestIncoming.tempDir("incoming-dovecot-")
    const owner = mailOwner()
    // The delivery process runs as the mail owner: it must be able to reach and write its folders.
    chmodSync(dir, 0o755)
    for (const sub of ["run", "state", "mail", "home"]) mkdirSync(join(dir, sub))
    chownSync(join(dir, "mail"), owner.uid, owner.gid)
    chownSync(join(dir, "home"), owner.uid, owner.gid)
    writeFileSync(
      join(dir, "users"),
      [
        "alice:{PLAIN}x::::::",
        "bob:{PLAIN}x::::::userdb_quota_rule=*:storage=10B",
        // uid 0 is refused by Dovecot at RCPT with a temporary error (451 4.3.0)
        "broken:{PLAIN}x::::::userdb_uid=0",
        ""
      ].join("\n")
    )
    writeFileSync(join(dir, "dovecot.conf"), dovecotConfig(dir, owner))
    const log = () => (existsSync(join(dir, "dovecot.log")) ? readFileSync(join(dir, "dovecot.log"), "utf8") : "")
    const proc = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(dovecotBinary!, ["-F", "-c", join(dir, "dovecot.conf")], { stdio: "ignore" })),
      (p) =>
        Effect.callback<void>((resume) => {
          if (p.exitCode !== null || p.signalCode !== null) return resume(Effect.void)
          const force = setTimeout(() => p.kill("SIGKILL"), 5_000)
          p.once("exit", () => {
            clearTimeout(force)
            resume(Effect.void)
          })
          p.kill("SIGTERM")
        })
    )
    yield* waitForSocket(join(dir, "lmtp.sock"), proc, log)
    return Dovecot.of({ socket: join(dir, "lmtp.sock"), mail: join(dir, "mail"), log })
  }).pipe(Effect.orDie)
)

const newMail = (root: string, user: string): ReadonlyArray<string> => {
  const dir = join(root, user, "new")
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(join(dir, f), "utf8")) : []
}

describe.skipIf(!hasLmtp)("LmtpAdapter against Dovecot", () => {
  layer(DovecotLive, { excludeTestServices: true, timeout: "20 seconds" })((it) => {
    it.effect("one reply per recipient: delivered, over quota after DATA (552), unknown at RCPT (550), temporary (451)", () =>
      Effect.gen(function*() {
        const dovecot = yield* Dovecot
        const adapter = LmtpAdapter.make({ target: { path: dovecot.socket }, lhlo: "mx.test" })
        const rcpts = ["alice@example.test", "bob@example.test", "nobody@example.test", "broken@example.test"]
        const out = yield* adapter.deliver(delivery(rcpts))
        assert.deepStrictEqual(out.map((o) => o.rcpt), rcpts, "one outcome per recipient, in order")
        const got = byRcpt(out)
        assert.match(got["alice@example.test"]!, /^Ok: 250 2\.0\.0 <alice@example\.test> .* Saved$/)
        assert.match(got["bob@example.test"]!, /^Reject: 552 5\.2\.2 <bob@example\.test> Quota exceeded/)
        assert.match(got["nobody@example.test"]!, /^Reject: 550 5\.1\.1 <nobody@example\.test> User doesn't exist/)
        assert.match(got["broken@example.test"]!, /^Retry: 451 4\.3\.0 /)

        const stored = newMail(dovecot.mail, "alice")
        assert.strictEqual(stored.length, 1)
        // Dovecot adds its own trace fields first; the message itself arrives byte for byte (dots un-stuffed).
        assert.isTrue(stored[0]!.endsWith(message.replace(/\r\n/g, "\n")) || stored[0]!.endsWith(message), stored[0])
        assert.deepStrictEqual(newMail(dovecot.mail, "bob"), [])
      }))

    it.effect("a whole Incoming delivering to Dovecot: SMTP in, Maildir out", () =>
      Effect.gen(function*() {
        const dovecot = yield* Dovecot
        const ctx = yield* Layer.build(
          TestIncoming.layerWith().pipe(Layer.provideMerge(LmtpAdapter.layer({ target: { path: dovecot.socket } })))
        )
        const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe
        const port = Context.get(ctx, Listeners).all[0]!.port
        const before = newMail(dovecot.mail, "alice").length
        const reply = yield* SmtpClient.send({
          port,
          from: "sender@remote.test",
          to: ["alice@example.test"],
          data: "Subject: via incoming\r\n\r\n.hidden dot\r\nend\r\n"
        })
        assert.strictEqual(reply.code, 250)
        const result = yield* Telemetry.awaitEvent(sub, Telemetry.is("DeliveryResult")).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual([result.outcome, result.adapter], ["delivered", "lmtp"])
        const stored = newMail(dovecot.mail, "alice")
        assert.strictEqual(stored.length, before + 1)
        const latest = stored.find((m) => m.includes("Subject: via incoming"))!
        assert.include(latest, "Received: from client.test")
        assert.match(latest, /\r?\n\.hidden dot\r?\nend\r?\n$/)
      }))
  })
})

// --- smtp-server in LMTP mode, and scripted servers ------------------------------------------

/** An LMTP server (smtp-server, `lmtp: true`) on TCP loopback; `reply` decides per recipient after DATA. */
const lmtpServer = (reply: (rcpt: string) => string | Error) =>
  Effect.acquireRelease(
    Effect.callback<{ server: SMTPServer; port: number; received: Array<{ mailFrom: string; body: Buffer }> }>((resume) => {
      const received: Array<{ mailFrom: string; body: Buffer }> = []
      const server = new SMTPServer({
        lmtp: true,
        authOptional: true,
        disabledCommands: ["AUTH", "STARTTLS"],
        logger: false,
        disableReverseLookup: true,
        onRcptTo(address, _session, callback) {
          if (address.address.startsWith("refused")) return callback(Object.assign(new Error("5.1.1 no such user"), { responseCode: 550 }))
          callback()
        },
        onData(stream, session, callback) {
          const chunks: Array<Buffer> = []
          stream.on("data", (c: Buffer) => chunks.push(c))
          stream.on("end", () => {
            received.push({ mailFrom: session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address, body: Buffer.concat(chunks) })
            callback(null, session.envelope.rcptTo.map((r) => reply(r.address)))
          })
        }
      })
      server.on("error", () => undefined)
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, port: (server.server.address() as AddressInfo).port, received })))
    }),
    ({ server }) => Effect.callback<void>((resume) => server.close(() => resume(Effect.void)))
  )

/** A raw TCP server running `script` for each connection (for misbehaving peers). */
const scripted = (script: (socket: Socket) => void): Effect.Effect<number, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Server>((resume) => {
      const server = createServer(script)
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => (server.address() as AddressInfo).port))

describe("LmtpAdapter on TCP", () => {
  it.live("dot-stuffs the message, sends CRLF line endings, maps each DATA reply to its recipient", () =>
    Effect.gen(function*() {
      const { port, received } = yield* lmtpServer((rcpt) =>
        rcpt.startsWith("busy") ? Object.assign(new Error("4.2.1 mailbox busy"), { responseCode: 452 }) : `2.0.0 stored for ${rcpt}`)
      const adapter = LmtpAdapter.make({ target: { host: "127.0.0.1", port } })
      // A bare LF and a message that does not end with a line break.
      const text = "Subject: t\r\n\r\n.one\nbare lf\r\n..\r\n.\r\nno final newline"
      const out = yield* adapter.deliver(delivery(["a@example.test", "busy@example.test", "refused@example.test"], text))
      assert.deepStrictEqual(byRcpt(out), {
        "a@example.test": "Ok: 250 2.0.0 stored for a@example.test",
        "busy@example.test": "Retry: 452 4.2.1 mailbox busy",
        "refused@example.test": "Reject: 550 5.1.1 no such user"
      })
      assert.strictEqual(received.length, 1)
      // smtp-server un-stuffs: what it read is the message with CRLF everywhere and a final CRLF.
      assert.strictEqual(received[0]!.body.toString("utf8"), "Subject: t\r\n\r\n.one\r\nbare lf\r\n..\r\n.\r\nno final newline\r\n")
      assert.strictEqual(received[0]!.mailFrom, "sender@remote.test")
    }))

  it.live("a server that hangs up after the first DATA reply: that recipient keeps its answer, the other is retried", () =>
    Effect.gen(function*() {
      const wire: Array<string> = []
      const port = yield* scripted((socket) => {
        socket.write("220 scripted LMTP\r\n")
        let buffer = ""
        let inData = false
        socket.on("data", (chunk) => {
          buffer += chunk.toString("latin1")
          wire.push(chunk.toString("latin1"))
          if (inData) {
            if (buffer.endsWith("\r\n.\r\n")) {
              socket.write("250 2.0.0 first ok\r\n")
              socket.destroy()
            }
            return
          }
          let i: number
          while ((i = buffer.indexOf("\r\n")) >= 0) {
            const line = buffer.slice(0, i)
            buffer = buffer.slice(i + 2)
            if (line.startsWith("LHLO")) socket.write("250-scripted\r\n250 PIPELINING\r\n")
            else if (line === "DATA") {
              inData = true
              socket.write("354 go ahead\r\n")
            } else socket.write("250 2.1.0 ok\r\n")
          }
        })
        socket.on("error", () => undefined)
      })
      const adapter = LmtpAdapter.make({ target: { host: "127.0.0.1", port } })
      const out = yield* adapter.deliver(delivery(["one@example.test", "two@example.test"]))
      const got = byRcpt(out)
      assert.strictEqual(got["one@example.test"], "Ok: 250 2.0.0 first ok")
      assert.match(got["two@example.test"]!, /^Retry: LMTP 127\.0\.0\.1:\d+: connection closed by the server$/)
      assert.include(wire.join(""), "MAIL FROM:<sender@remote.test>\r\n", "no BODY=8BITMIME when the server does not offer it")
    }))

  it.live("nobody listening: every recipient is retried with the reason", () =>
    Effect.gen(function*() {
      const port = yield* scripted(() => undefined).pipe(Effect.scoped)
      const adapter = LmtpAdapter.make({ target: { host: "127.0.0.1", port }, connectTimeoutMs: 1_000 })
      const out = yield* adapter.deliver(delivery(["a@example.test", "b@example.test"]))
      assert.deepStrictEqual(out.map((o) => o._tag), ["Retry", "Retry"])
      assert.include(byRcpt(out)["a@example.test"], "ECONNREFUSED")
      const missing = LmtpAdapter.make({ target: { path: "/nonexistent/lmtp.sock" } })
      assert.include(byRcpt(yield* missing.deliver(delivery(["a@example.test"])))["a@example.test"], "ENOENT")
    }))

  it.live("a server that never greets is given up on after the command deadline", () =>
    Effect.gen(function*() {
      const port = yield* scripted((socket) => socket.on("error", () => undefined))
      const adapter = LmtpAdapter.make({ target: { host: "127.0.0.1", port }, commandTimeoutMs: 200 })
      const started = Date.now()
      const out = yield* adapter.deliver(delivery(["a@example.test"]))
      assert.include(byRcpt(out)["a@example.test"], "Retry: LMTP 127.0.0.1")
      assert.include(byRcpt(out)["a@example.test"], "no reply within 200 ms")
      assert.isBelow(Date.now() - started, 1_500)
    }))
})

describe("LmtpAdapter: DSN parameters onward (RFC 3461)", () => {
  it.live("RET/ENVID on MAIL and NOTIFY/ORCPT per RCPT reach a server that advertises DSN: Incoming's own lmtp listener", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(TestIncoming.layer({ domains: ["example.test"], listener: { mode: "lmtp" } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const adapter = LmtpAdapter.make({ target: { host: "127.0.0.1", port } })
      const rcpts = ["a@example.test", "b@example.test"]
      const d = delivery(rcpts)
      const outcomes = yield* adapter.deliver({
        ...d,
        envelope: {
          ...d.envelope,
          dsn: { ret: "HDRS", envid: "env id+1=x" },
          recipientDsn: {
            "a@example.test": { notify: ["SUCCESS", "DELAY"], orcpt: { type: "rfc822", address: "Original+A@Example.Test" } },
            "b@example.test": { notify: ["NEVER"] }
          }
        }
      })
      assert.deepStrictEqual(outcomes.map((o) => o._tag), ["Ok", "Ok"])
      const [msg] = yield* Captured.use((c) => c.awaitDelivered(1)).pipe(Effect.provideContext(ctx))
      // Decoded again on the other side: the same values the sender gave.
      assert.deepStrictEqual(msg!.envelope.dsn, { ret: "HDRS", envid: "env id+1=x" })
      assert.deepStrictEqual(msg!.envelope.recipientDsn, {
        "a@example.test": { notify: ["SUCCESS", "DELAY"], orcpt: { type: "rfc822", address: "Original+A@Example.Test" } },
        "b@example.test": { notify: ["NEVER"] }
      })
    }).pipe(Effect.scoped), { timeout: 30_000 })
})
