/**
 * `incoming serve` as a process, the way the README runs it: mail to user@localhost lands as a
 * Maildir file; SIGTERM with a transaction in flight drains it (the transaction completes, later
 * commands get 421, new connections are refused) and the process exits 0.
 */
import { readFileSync } from "node:fs"
import { connect } from "node:net"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import nodemailer from "nodemailer"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { serve, waitForMaildir } from "../support/server.ts"

describe("incoming serve (process)", () => {
  it.live("delivers mail for --domain into the Maildir and exits 0 on SIGTERM", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const maildir = join(dir, "mail")
      const server = yield* serve(["--listen", "127.0.0.1:0", "--maildir", maildir, "--data-dir", join(dir, "data")])
      const transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true })
      const info = yield* Effect.promise(() =>
        transport.sendMail({ from: "alice@remote.test", to: "user@localhost", subject: "hello", text: "first message" })
      )
      assert.match(info.response, /^250 2\.0\.0 queued as /)
      const [file] = yield* waitForMaildir(maildir, "user@localhost", (f) => f.length >= 1)
      assert.isDefined(file, `no file in ${maildir}/user@localhost/new`)
      const text = readFileSync(file!, "utf8")
      assert.match(text, /^Received: from /)
      assert.include(text, "first message")

      // Not ours: refused, nothing delivered.
      const refused = yield* SmtpClient.send({ port: server.port, from: "a@remote.test", to: ["x@elsewhere.test"], data: "x" })
      assert.strictEqual(refused.code, 554)

      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
    }))

  it.live("drains on SIGTERM: the DATA in flight completes, later commands get 421, the process exits 0", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const maildir = join(dir, "mail")
      const server = yield* serve([
        "--listen",
        "127.0.0.1:0",
        "--maildir",
        maildir,
        "--data-dir",
        join(dir, "data"),
        "--drain-timeout",
        "10"
      ])
      const inFlight = yield* SmtpClient.connect({ port: server.port })
      const idle = yield* SmtpClient.connect({ port: server.port })
      assert.strictEqual((yield* idle.command("EHLO idle.test")).code, 250)
      assert.strictEqual((yield* inFlight.command("EHLO busy.test")).code, 250)
      assert.strictEqual((yield* inFlight.command("MAIL FROM:<a@remote.test>")).code, 250)
      assert.strictEqual((yield* inFlight.command("RCPT TO:<user@localhost>")).code, 250)
      assert.strictEqual((yield* inFlight.command("DATA")).code, 354)
      yield* inFlight.write("Subject: in flight\r\n\r\nfirst half\r\n")

      const t0 = Date.now()
      yield* server.signal("SIGTERM")
      yield* server.waitFor(/draining 1 DATA transaction/)

      // An idle session's next command is refused; new connections are not accepted.
      const late = yield* idle.command("MAIL FROM:<b@remote.test>")
      assert.strictEqual(`${late.code} ${late.text}`, "421 4.3.2 Service shutting down, try again later")
      const refused = yield* Effect.callback<boolean>((resume) => {
        const s = connect({ port: server.port, host: "127.0.0.1" })
        s.once("connect", () => {
          s.destroy()
          resume(Effect.succeed(false))
        })
        s.once("error", () => resume(Effect.succeed(true)))
      })
      assert.isTrue(refused, "the listener still accepted a connection while draining")

      yield* inFlight.write("second half\r\n.\r\n")
      const done = yield* inFlight.read
      assert.strictEqual(done.code, 250, `in-flight transaction: ${done.lines.join(" / ")}`)
      const after = yield* inFlight.command("MAIL FROM:<c@remote.test>").pipe(Effect.orElseSucceed(() => ({ code: 421 })))
      assert.strictEqual(after.code, 421)

      assert.strictEqual(yield* server.exitCode, 0)
      const drainMs = Date.now() - t0
      console.log(`drain with one transaction in flight: SIGTERM to exit ${drainMs} ms`)

      // The message accepted during the drain is in the durable queue (or already delivered):
      // the next start delivers it.
      const again = yield* serve(["--listen", "127.0.0.1:0", "--maildir", maildir, "--data-dir", join(dir, "data")])
      const [file] = yield* waitForMaildir(maildir, "user@localhost", (f) => f.length >= 1)
      assert.isDefined(file, "the message accepted during drain was never delivered")
      assert.include(readFileSync(file!, "utf8"), "second half")
      yield* again.signal("SIGTERM")
      assert.strictEqual(yield* again.exitCode, 0)
    }))
})
