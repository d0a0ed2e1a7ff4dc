/**
 * RFC 3461 parameters end to end: `incoming serve` with the SQLite queue takes a message with
 * RET/ENVID and NOTIFY/ORCPT (and SMTPUTF8) whose delivery keeps failing, and `incoming queue
 * show` — another process reading the database — prints them, as lines and in `--json`.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { runCli, serve } from "../support/server.ts"

describe("DSN parameters in the queue (e2e)", () => {
  it.live("incoming queue show prints SMTPUTF8, RET/ENVID and each recipient's NOTIFY/ORCPT", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const maildir = join(dir, "mail")
      const data = join(dir, "data")
      // A file where the recipient's Maildir should be: the delivery fails and the message stays queued.
      mkdirSync(maildir, { recursive: true })
      writeFileSync(join(maildir, "blocked@localhost"), "")
      const server = yield* serve(["--listen", "127.0.0.1:0", "--maildir", maildir, "--data-dir", data, "--retry-base", "3600"])

      const c = yield* SmtpClient.connect({ port: server.port })
      yield* c.command("EHLO client.test")
      assert.strictEqual((yield* c.command("MAIL FROM:<jörg@remote.test> SMTPUTF8 RET=HDRS ENVID=QQ314159")).code, 250)
      assert.strictEqual((yield* c.command("RCPT TO:<blocked@localhost> NOTIFY=FAILURE,DELAY ORCPT=rfc822;Blocked+40localhost")).code, 250)
      assert.strictEqual((yield* c.command("DATA")).code, 354)
      yield* c.write("Subject: dsn\r\n\r\nbody\r\n.\r\n")
      const id = /queued as (\w+)/.exec((yield* c.read).text)![1]!

      const shown = yield* runCli(["queue", "show", id, "--data-dir", data], { cwd: dir })
      assert.strictEqual(shown.code, 0, shown.stderr)
      assert.include(shown.stdout, "from:        jörg@remote.test")
      assert.include(shown.stdout, "smtputf8:    yes")
      assert.include(shown.stdout, "dsn:         RET=HDRS ENVID=QQ314159")
      assert.include(shown.stdout, "dsn blocked@localhost: NOTIFY=FAILURE,DELAY ORCPT=rfc822;Blocked@localhost")

      const json = yield* runCli(["queue", "show", id, "--json", "--data-dir", data], { cwd: dir })
      const m = JSON.parse(json.stdout) as { envelope: { smtpUtf8: boolean; dsn: unknown; recipientDsn: unknown } }
      assert.isTrue(m.envelope.smtpUtf8)
      assert.deepStrictEqual(m.envelope.dsn, { ret: "HDRS", envid: "QQ314159" })
      assert.deepStrictEqual(m.envelope.recipientDsn, {
        "blocked@localhost": { notify: ["FAILURE", "DELAY"], orcpt: { type: "rfc822", address: "Blocked@localhost" } }
      })
    }), { timeout: 60_000 })
})
