/**
 * `incoming queue` as an operator meets it: a mistyped `--data-dir` is refused without creating
 * anything, a memory-queue server's queue is said to be out of reach (also where an earlier
 * SQLite server left its queue.db), and `hold`/`release` keep a
 * message from delivery across a server restart.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as SqliteQueue from "../../src/queue/SqliteQueue.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { cli, waitUntil } from "../support/queueCli.ts"
import { serve } from "../support/server.ts"

describe("incoming queue: missing queues and hold", () => {
  it.live("read-only commands on a mistyped data dir say so and create nothing", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const typo = join(dir, "typo")
      for (const args of [["stats"], ["list"], ["show", "01ABCDEFGHJKMNPQ"]]) {
        const r = yield* cli(...args, "--data-dir", typo)
        assert.strictEqual(r.code, 1, args.join(" "))
        assert.include(r.stderr, `no queue at ${typo}`)
      }
      assert.isFalse(existsSync(typo), "the mistyped directory was created")
    }), { timeout: 120_000 })

  it.live("against a memory-queue server, the CLI says its queue is not visible", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const data = join(dir, "data")
      const server = yield* serve(["--listen", "127.0.0.1:0", "--queue", "memory", "--deliver", "discard", "--data-dir", data])
      const r = yield* cli("stats", "--data-dir", data)
      assert.strictEqual(r.code, 1)
      assert.include(r.stderr, "keeps its queue in memory")
      assert.match(r.stderr, /\(pid \d+ on /)
      assert.isFalse(existsSync(join(data, "queue.db")))
      yield* server.signal("SIGTERM")
    }), { timeout: 120_000 })

  it.live("a memory-queue server on a data dir with an earlier SQLite queue.db: the stale queue is not shown as its own", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const data = join(dir, "data")
      // An earlier SQLite server left its (empty) queue behind.
      yield* Effect.scoped(Layer.build(SqliteQueue.layer({ dataDir: data })))
      assert.isTrue(existsSync(join(data, "queue.db")))
      const server = yield* serve(["--listen", "127.0.0.1:0", "--queue", "memory", "--deliver", "discard", "--data-dir", data])
      for (const args of [["stats"], ["list"]]) {
        const r = yield* cli(...args, "--data-dir", data)
        assert.strictEqual(r.code, 1, `${args.join(" ")} answered from the stale queue.db:\n${r.stdout}`)
        assert.include(r.stderr, "keeps its queue in memory")
      }
      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
      // With the memory server gone, the SQLite queue left there is readable again.
      assert.strictEqual((yield* cli("stats", "--data-dir", data)).code, 0)
    }), { timeout: 120_000 })

  it.live("a held message is not delivered, across a restart, until released", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const maildir = join(dir, "mail")
      const data = join(dir, "data")
      mkdirSync(maildir, { recursive: true })
      // A file where the Maildir should be: the first delivery fails and the message waits.
      writeFileSync(join(maildir, "held@localhost"), "")
      const args = ["--listen", "127.0.0.1:0", "--maildir", maildir, "--data-dir", data, "--retry-base", "2"]
      const first = yield* serve(args)
      const sent = yield* SmtpClient.send({ port: first.port, from: "a@remote.test", to: ["held@localhost"], data: "Subject: held\r\n\r\nbody\r\n" })
      const id = /queued as (\w+)/.exec(sent.text)![1]!
      yield* waitUntil(cli("show", id, "--json", "--data-dir", data), (r) => r.code === 0 && JSON.parse(r.stdout).state === "retry")
      const held = yield* cli("hold", id, "--data-dir", data)
      assert.strictEqual(held.code, 0, held.stderr)
      assert.strictEqual((yield* cli("hold", "01NOSUCHMESSAGE0", "--data-dir", data)).code, 1)
      // The mailbox works again, but the message is held: the retries come and go.
      rmSync(join(maildir, "held@localhost"))
      yield* first.signal("SIGTERM")
      assert.strictEqual(yield* first.exitCode, 0)
      const second = yield* serve(args)
      yield* Effect.sleep("5 seconds")
      const shown = JSON.parse((yield* cli("show", id, "--json", "--data-dir", data)).stdout)
      assert.deepStrictEqual([shown.state, shown.held], ["held", true])
      assert.include((yield* cli("list", "--state", "held", "--data-dir", data)).stdout, id)
      assert.strictEqual(JSON.parse((yield* cli("stats", "--json", "--data-dir", data)).stdout).held, 1)
      assert.isFalse(existsSync(join(maildir, "held@localhost", "new")) && readdirSync(join(maildir, "held@localhost", "new")).length > 0)

      assert.strictEqual((yield* cli("release", id, "--data-dir", data)).code, 0)
      assert.strictEqual((yield* cli("release", id, "--data-dir", data)).code, 1, "not held any more")
      yield* waitUntil(cli("show", id, "--json", "--data-dir", data), (r) => r.code !== 0)
      assert.strictEqual(readdirSync(join(maildir, "held@localhost", "new")).length, 1, "delivered once released")
      yield* second.signal("SIGTERM")
    }), { timeout: 240_000 })
})
