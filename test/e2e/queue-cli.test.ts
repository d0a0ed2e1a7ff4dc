/**
 * `incoming queue ...` against the data directory of a running server: list, show, stats (by priority too),
 * retry, delete and purge, as tables and as JSON.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { cli, waitUntil } from "../support/queueCli.ts"
import { serve } from "../support/server.ts"

describe("incoming queue (CLI)", () => {
  it.live("inspects and repairs the queue while the server runs", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const maildir = join(dir, "mail")
      const data = join(dir, "data")
      // A file where a recipient's Maildir should be: its deliveries fail until it is removed.
      mkdirSync(maildir, { recursive: true })
      writeFileSync(join(maildir, "blocked@localhost"), "")
      writeFileSync(join(maildir, "gone@localhost"), "")
      const server = yield* serve([
        "--listen", "127.0.0.1:0", "--maildir", maildir, "--data-dir", data, "--retry-base", "3600", "--max-attempts", "2"
      ])
      const send = (to: string) => SmtpClient.send({ port: server.port, from: "a@remote.test", to: [to], data: `Subject: for ${to}\r\n\r\nbody\r\n` })
      const blocked = /queued as (\w+)/.exec((yield* send("blocked@localhost")).text)![1]!
      const gone = /queued as (\w+)/.exec((yield* send("gone@localhost")).text)![1]!

      const listed = yield* waitUntil(cli("list", "--state", "retry", "--json", "--data-dir", data), (r) => JSON.parse(r.stdout || "[]").length === 2)
      const retrying = JSON.parse(listed.stdout) as Array<{ id: string; state: string; recipients: Array<{ attempts: number; lastReply: string }> }>
      assert.deepStrictEqual(retrying.map((m) => m.id).toSorted(), [blocked, gone].toSorted())
      assert.strictEqual(retrying[0]!.recipients[0]!.attempts, 1)
      assert.include(retrying[0]!.recipients[0]!.lastReply, "maildir write failed")

      const table = yield* cli("list", "--data-dir", data)
      assert.match(table.stdout, /^ID\s+STATE\s+PRIORITY\s+SIZE/)
      assert.match(table.stdout, new RegExp(`${blocked}\\s+retry\\s+normal\\s`))
      assert.include(table.stdout, blocked)

      const shown = yield* cli("show", blocked, "--data-dir", data)
      assert.include(shown.stdout, "blocked@localhost")
      assert.include(shown.stdout, "state:       retry")
      assert.include(shown.stdout, "priority:    normal")

      // set-priority from this other process, on the running server's database.
      const raised = yield* cli("set-priority", blocked, "high", "--data-dir", data)
      assert.strictEqual(raised.code, 0, raised.stderr)
      assert.include(raised.stdout, `${blocked}: priority high`)
      assert.include((yield* cli("show", blocked, "--data-dir", data)).stdout, "priority:    high")
      const byJson = JSON.parse((yield* cli("set-priority", blocked, "-3", "--json", "--data-dir", data)).stdout)
      assert.deepStrictEqual(byJson, { id: blocked, priority: -3 })
      const shownJson = JSON.parse((yield* cli("show", blocked, "--json", "--data-dir", data)).stdout)
      assert.strictEqual(shownJson.envelope.priority, -3)
      // stats adds pending mail by priority once some is not normal.
      const levels = yield* cli("stats", "--data-dir", data)
      assert.include(levels.stdout, "PRIORITY")
      assert.match(levels.stdout, /^-3\s+1\s*$/m)
      const bad = yield* cli("set-priority", blocked, "12", "--data-dir", data)
      assert.notStrictEqual(bad.code, 0)
      assert.include(bad.stderr + bad.stdout, "expected low, normal, high, critical or an integer from -9 to 9")
      assert.notStrictEqual((yield* cli("set-priority", "NoSuchMessage", "high", "--data-dir", data)).code, 0)
      const raw = yield* cli("show", blocked, "--raw", "--data-dir", data)
      assert.match(raw.stdout, /^Received: from /)
      assert.include(raw.stdout, "Subject: for blocked@localhost")

      // Second (last) attempt now: both are dead-lettered.
      assert.strictEqual((yield* cli("retry", blocked, "--data-dir", data)).code, 0)
      assert.strictEqual((yield* cli("retry", gone, "--data-dir", data)).code, 0)
      yield* waitUntil(cli("list", "--state", "dead", "--json", "--data-dir", data), (r) => JSON.parse(r.stdout || "[]").length === 2)

      // The operator fixes one mailbox and replays all dead letters: that one is delivered.
      const { rmSync } = yield* Effect.promise(() => import("node:fs"))
      rmSync(join(maildir, "blocked@localhost"))
      const replay = yield* cli("retry", "--all-dead", "--json", "--data-dir", data)
      assert.deepStrictEqual(JSON.parse(replay.stdout).retried.toSorted(), [blocked, gone].toSorted())
      yield* waitUntil(cli("show", blocked, "--json", "--data-dir", data), (r) => r.code !== 0)
      const stats = JSON.parse((yield* waitUntil(cli("stats", "--json", "--data-dir", data), (r) => JSON.parse(r.stdout).recipients.dead === 1)).stdout)
      assert.strictEqual(stats.backend, "sqlite")
      assert.strictEqual(stats.recipients.dead, 1)

      assert.strictEqual(JSON.parse((yield* cli("purge", "--dead", "--json", "--data-dir", data)).stdout).purged, 1)
      const missing = yield* cli("delete", gone, "--data-dir", data)
      assert.strictEqual(missing.code, 1)
      assert.include(missing.stderr, `no message ${gone}`)
      assert.deepStrictEqual(JSON.parse((yield* cli("list", "--json", "--data-dir", data)).stdout), [])

      // delete removes a live message.
      const third = /queued as (\w+)/.exec((yield* send("gone@localhost")).text)![1]!
      yield* waitUntil(cli("show", third, "--json", "--data-dir", data), (r) => r.code === 0 && JSON.parse(r.stdout).state === "retry")
      assert.strictEqual((yield* cli("delete", third, "--data-dir", data)).code, 0)
      assert.strictEqual((yield* cli("show", third, "--data-dir", data)).code, 1)
      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
    }), { timeout: 180_000 }) // ~15 CLI processes: each loads the whole CLI (1.3 s of CPU; 4 s on a busy 2-core machine)
})
