/**
 * A delivery cut by the death of its process leaves a partial file in the Maildir's `tmp/`
 * (measured before this fix: 4.4 MB left for good after a SIGTERM during a 20 MiB delivery).
 * Here a writer process is SIGKILLed half-way through a 4 MiB file named the way the adapter
 * names its files; `incoming serve` on that root removes it at start, says so in its log, and
 * delivers normally. A file of another program in the same `tmp/` stays.
 */
import { spawn } from "node:child_process"
import { mkdirSync, readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { maildirFiles, serve } from "../support/server.ts"

/** Writes 4 MiB of a partial delivery under its own pid and host, says "written", then waits to be killed. */
const writerScript = (tmp: string) => `
const { openSync, writeSync } = require("node:fs")
const { hostname } = require("node:os")
const name = \`\${Math.floor(Date.now() / 1000)}.M0P\${process.pid}Q1_01PARTIALPARTIAL.\${hostname().replace(/[/:]/g, "_")},S=20971520\`
const fd = openSync(${JSON.stringify(tmp)} + "/" + name, "wx", 0o600)
writeSync(fd, Buffer.alloc(4 * 1024 * 1024, 120))
process.stdout.write("written\\n")
setTimeout(() => {}, 60_000)
`

describe("Maildir recovery at start (e2e)", () => {
  it.live("a partial file of a SIGKILLed writer is removed when incoming serve starts; others' files stay", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const maildir = join(dir, "mail")
      const tmp = join(maildir, "user@localhost", "tmp")
      mkdirSync(tmp, { recursive: true })
      writeFileSync(join(tmp, "1765000000.4242_1.mail.example"), "another program's file")

      const writer = spawn(process.execPath, ["-e", writerScript(tmp)], { stdio: ["ignore", "pipe", "inherit"] })
      yield* Effect.callback<void>((resume) => {
        writer.stdout!.once("data", () => resume(Effect.void))
      }).pipe(Effect.timeout("10 seconds"))
      const exited = Effect.callback<void>((resume) => {
        writer.once("exit", () => resume(Effect.void))
      })
      process.kill(writer.pid!, "SIGKILL")
      yield* exited
      const left = readdirSync(tmp).filter((n) => n.includes("01PARTIALPARTIAL"))
      assert.lengthOf(left, 1, "the killed writer left its partial file")

      const server = yield* serve(["--listen", "127.0.0.1:0", "--maildir", maildir, "--data-dir", join(dir, "data")])
      assert.deepStrictEqual(readdirSync(tmp), ["1765000000.4242_1.mail.example"])
      assert.match(server.output(), /maildir recovery: removed 1 partial file\(s\), 4194304 bytes/)

      const reply = yield* SmtpClient.send({ port: server.port, from: "a@remote.test", to: ["user@localhost"], data: "Subject: after\r\n\r\nhello\r\n" })
      assert.strictEqual(reply.code, 250, reply.text)
      for (let i = 0; i < 100 && maildirFiles(maildir, "user@localhost").length === 0; i++) yield* Effect.sleep("50 millis")
      assert.lengthOf(maildirFiles(maildir, "user@localhost"), 1)
    }), { timeout: 60_000 })
})
