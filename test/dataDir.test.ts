/**
 * The data dir lock in one process (SQLite tracks its locks per process too, so two servers in
 * one test process see each other as two processes would): exclusive against exclusive, the
 * shared mode of a queue shared by design, the spool swept only by an exclusive holder, and the
 * preflight's words for a directory that cannot be used.
 */
import { mkdirSync, readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer } from "effect"
import * as DataDir from "../src/DataDir.ts"
import * as MemoryQueue from "../src/queue/MemoryQueue.ts"
import { Listeners } from "../src/smtp/Listener.ts"
import { SmtpClient, TestIncoming } from "../src/testing/index.ts"

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? exit.cause.reasons.flatMap((r) => (r._tag === "Fail" ? [r.error] : []))[0] : undefined

describe("DataDir", () => {
  it.live("a second exclusive holder is refused, naming the first; after release it is free again", () =>
    Effect.gen(function*() {
      const dir = join(yield* TestIncoming.tempDir(), "data")
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const held = yield* DataDir.acquire({ dir })
        assert.isTrue(held.exclusive)
        const second = yield* Effect.exit(Effect.scoped(DataDir.acquire({ dir })))
        return failureOf(second)
      }))
      assert.strictEqual(first?.reason._tag, "Locked")
      assert.match(first!.message, new RegExp(`^data_dir: ${dir}: in use by another incoming server \\(pid ${process.pid} on \\S+, started \\d{4}-`))
      // Released: the record is gone with it (a clean stop), and the directory can be taken again.
      assert.notInclude(readdirSync(dir), "server.json")
      const again = yield* Effect.exit(Effect.scoped(DataDir.acquire({ dir })))
      assert.isTrue(Exit.isSuccess(again))
    }))

  it.live("shared holders coexist; an exclusive one is refused while they run, and they while it runs", () =>
    Effect.gen(function*() {
      const dir = join(yield* TestIncoming.tempDir(), "data")
      yield* Effect.scoped(Effect.gen(function*() {
        const a = yield* DataDir.acquire({ dir, shared: true })
        const b = yield* DataDir.acquire({ dir, shared: true })
        assert.isFalse(a.exclusive || b.exclusive)
        const exclusive = failureOf(yield* Effect.exit(Effect.scoped(DataDir.acquire({ dir }))))
        assert.strictEqual(exclusive?.message, `data_dir: ${dir}: in use by another incoming server (no record: a server with a shared queue); stop it first or give this server another data_dir`)
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        yield* DataDir.acquire({ dir })
        const shared = failureOf(yield* Effect.exit(Effect.scoped(DataDir.acquire({ dir, shared: true }))))
        assert.strictEqual(shared?.reason._tag, "Locked")
      }))
    }))

  it.live("Incoming.layer: an exclusive server sweeps spool leftovers; servers with a shared queue run side by side and sweep nothing", () =>
    Effect.gen(function*() {
      const dataDir = join(yield* TestIncoming.tempDir(), "data")
      mkdirSync(join(dataDir, "spool"), { recursive: true })
      writeFileSync(join(dataDir, "spool", "LEFTOVER.spool"), "x")
      const shared = { kind: "custom" as const, layer: MemoryQueue.layer(), shared: true }
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Layer.build(TestIncoming.layer({ dataDir, queue: shared }))
        yield* Layer.build(TestIncoming.layer({ dataDir, queue: shared }))
        assert.deepStrictEqual(readdirSync(join(dataDir, "spool")), ["LEFTOVER.spool"], "a shared-queue server removed a file that may be another's")
        const exclusive = failureOf(yield* Effect.exit(Layer.build(TestIncoming.layer({ dataDir }))))
        assert.strictEqual(exclusive?._tag, "DataDirError")
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        const ctx = yield* Layer.build(TestIncoming.layer({ dataDir }))
        assert.deepStrictEqual(readdirSync(join(dataDir, "spool")), [])
        // And it serves.
        const port = Context.get(ctx, Listeners).all[0]!.port
        const reply = yield* SmtpClient.send({ port, from: "a@remote.test", to: ["u@example.test"], data: "x" })
        assert.strictEqual(reply.code, 250)
      }))
    }))

  it.live("check: the words for a data dir that cannot be used, without creating anything", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      writeFileSync(join(root, "file"), "x")
      assert.strictEqual(DataDir.check(join(root, "file", "data")), `not a directory (${join(root, "file")} is a file)`)
      assert.strictEqual(DataDir.check(join(root, "file")), "not a directory")
      assert.isUndefined(DataDir.check(join(root, "new", "deeper")))
      assert.deepStrictEqual(readdirSync(root), ["file"], "check created something")
    }))
})
