/**
 * One server per data dir, as processes: a second `incoming serve` on the data dir of a live
 * one exits 1 with one line naming the holder (pid, host, start time) and touches nothing — the
 * first server's large DATA, spilled to a spool file while the second starts, still completes
 * with 250 and is delivered. A holder that died (SIGKILL) leaves a stale lock that the next
 * server takes over, saying whose it was.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { runCli, serve, waitForMaildir } from "../support/server.ts"

const KiB = 1024

/** Waits (bounded) until `dir` holds a file ending in `suffix`. */
const waitForFile = (dir: string, suffix: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      if (existsSync(dir) && readdirSync(dir).some((f) => f.endsWith(suffix))) return true
      yield* Effect.sleep("25 millis")
    }
    return false
  })

describe("one server per data dir", () => {
  it.live("a second serve on a live server's data dir exits 1 naming the holder; the first's large DATA completes and is delivered", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-datadir-")
      const data = join(dir, "data")
      const maildir = join(dir, "mail")
      const args = ["--listen", "127.0.0.1:0", "--data-dir", data, "--maildir", maildir, "--queue", "sqlite"]
      const first = yield* serve(args)

      const client = yield* SmtpClient.connect({ port: first.port, timeoutMs: 30_000 })
      assert.strictEqual((yield* client.command("EHLO slow.test")).code, 250)
      assert.strictEqual((yield* client.command("MAIL FROM:<slow@remote.test>")).code, 250)
      assert.strictEqual((yield* client.command("RCPT TO:<user@localhost>")).code, 250)
      assert.strictEqual((yield* client.command("DATA")).code, 354)
      // Past the in-memory threshold (128 KiB) the body spills to data/spool/<id>.spool.
      const line = `${"y".repeat(78)}\r\n`
      const half = line.repeat(Math.ceil((300 * KiB) / line.length))
      yield* client.write(`Subject: slow and large\r\n\r\n${half}`)
      assert.isTrue(yield* waitForFile(join(data, "spool"), ".spool"), "the first server's DATA never spilled to the spool")

      // A bounded run: before the fix the second server started (and swept the spool) instead of exiting.
      const second = yield* runCli(["serve", "--log-format", "json", ...args], { cwd: dir, timeoutMs: 15_000 })
      assert.strictEqual(second.code, 1, `second server: ${second.stdout}${second.stderr}`)
      const lines = second.stderr.trim().split("\n")
      assert.strictEqual(lines.length, 1, second.stderr)
      assert.match(
        lines[0]!,
        new RegExp(`^incoming: data_dir: ${data}: in use by another incoming server \\(pid ${first.proc.pid} on \\S+, started \\d{4}-\\d\\d-\\d\\dT[^)]+\\)`)
      )
      assert.notInclude(second.stdout, "listening on")
      assert.notInclude(second.stdout, "serving")
      assert.isTrue(existsSync(join(data, "spool")) && readdirSync(join(data, "spool")).some((f) => f.endsWith(".spool")), "the spool file was removed")

      // The first server's transaction was not disturbed.
      yield* client.write(`${half}.\r\n`)
      const reply = yield* client.read
      assert.strictEqual(reply.code, 250, reply.text)
      const [file] = yield* waitForMaildir(maildir, "user@localhost", (f) => f.length >= 1)
      assert.isDefined(file, "the message was not delivered")
      const body = readFileSync(file!, "utf8")
      assert.include(body, "Subject: slow and large")
      assert.isAbove(statSync(file!).size, 2 * half.length)

      yield* first.signal("SIGTERM")
      assert.strictEqual(yield* first.exitCode, 0)
    }), { timeout: 60_000 })

  it.live("a lock left by a server that was killed is taken over, naming the dead holder", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-datadir-")
      const data = join(dir, "data")
      const maildir = join(dir, "mail")
      const args = ["--listen", "127.0.0.1:0", "--data-dir", data, "--maildir", maildir]
      const dead = yield* serve(args)
      const pid = dead.proc.pid
      yield* dead.signal("SIGKILL")
      yield* dead.exitCode

      const next = yield* serve(args)
      const line = yield* next.waitFor(/taking over/)
      assert.include(line, `pid ${pid}`)
      const reply = yield* SmtpClient.send({ port: next.port, from: "a@remote.test", to: ["user@localhost"], data: "Subject: after\r\n\r\nx\r\n" })
      assert.strictEqual(reply.code, 250, reply.text)
      yield* next.signal("SIGTERM")
      assert.strictEqual(yield* next.exitCode, 0)
    }), { timeout: 60_000 })
})
