/**
 * The spool's callback core (`Spool.receiveUnsafe`) stopped at each point of a spilled body's
 * life, on real files: before the end (the file goes, the memory budget is back), and after the
 * end while the file is still being closed — the one window where the outcome already exists but
 * has not been handed over. Stopped there, the outcome is never handed over and the file is
 * removed once closed: nobody would release it otherwise.
 */
import { existsSync, readdirSync } from "node:fs"
import { PassThrough } from "node:stream"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Exit } from "effect"
import * as Spool from "../../src/spool/Spool.ts"
import type { SpooledBody } from "../../src/spool/SpooledBody.ts"
import type { SpoolError } from "../../src/spool/SpoolError.ts"
import { TestIncoming } from "../../src/testing/index.ts"

const setup = Effect.gen(function*() {
  const dir = yield* TestIncoming.tempDir()
  const spool = yield* Spool.make({ dir, inMemoryThreshold: 1024 })
  return { spool, files: () => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".spool")) : []) }
})

const line = `${"x".repeat(78)}\r\n`
const options = (id: string) => ({ id, maxSize: 1_000_000, lineEndings: "reject" as const })

const waitUntil = (check: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !check(); i++) yield* Effect.sleep(10)
    return check()
  })

describe("Spool.receiveUnsafe stopped", () => {
  it.live("before the end: nothing handed over, the spilled file removed, the memory budget back", () =>
    Effect.gen(function*() {
      const { files, spool } = yield* setup
      const source = new PassThrough()
      const outcomes: Array<Exit.Exit<SpooledBody, SpoolError>> = []
      const stop = spool.receiveUnsafe(source, options("early"), (exit) => outcomes.push(exit))
      source.write(line.repeat(40))
      assert.isTrue(yield* waitUntil(() => files().length === 1), "spilled")
      stop()
      source.end(line)
      assert.isTrue(yield* waitUntil(() => files().length === 0), `left: ${files().join(", ")}`)
      assert.strictEqual(yield* spool.memoryInUse, 0)
      yield* Effect.sleep(50)
      assert.deepStrictEqual(outcomes, [])
    }).pipe(Effect.scoped))

  it.live("after the end, while the spilled file closes: nothing handed over, the file removed", () =>
    Effect.gen(function*() {
      const { files, spool } = yield* setup
      const source = new PassThrough()
      const outcomes: Array<Exit.Exit<SpooledBody, SpoolError>> = []
      const stop = spool.receiveUnsafe(source, options("late"), (exit) => outcomes.push(exit))
      // Registered after the spool's own listener: runs right after it saw the end and began
      // closing the file, before the close completes (it needs the file system).
      source.once("end", () => {
        assert.strictEqual(outcomes.length, 0, "not handed over yet: the file is still closing")
        stop()
      })
      source.write(line.repeat(40))
      assert.isTrue(yield* waitUntil(() => files().length === 1), "spilled")
      source.end(line)
      assert.isTrue(yield* waitUntil(() => source.readableEnded && files().length === 0), `left: ${files().join(", ")}`)
      yield* Effect.sleep(50)
      assert.deepStrictEqual(outcomes, [])
      assert.strictEqual(yield* spool.memoryInUse, 0)
    }).pipe(Effect.scoped))

  it.live("not stopped: the spilled body is handed over once, its file in place until released", () =>
    Effect.gen(function*() {
      const { files, spool } = yield* setup
      const source = new PassThrough()
      const outcomes: Array<Exit.Exit<SpooledBody, SpoolError>> = []
      spool.receiveUnsafe(source, options("kept"), (exit) => outcomes.push(exit))
      source.write(line.repeat(40))
      source.end(line)
      assert.isTrue(yield* waitUntil(() => outcomes.length === 1))
      const exit = outcomes[0]!
      assert.isTrue(exit._tag === "Success" && exit.value._tag === "File" && exit.value.size === line.length * 41)
      assert.deepStrictEqual(files(), ["kept.spool"])
      if (exit._tag === "Success") yield* exit.value.release
      assert.deepStrictEqual(files(), [])
    }).pipe(Effect.scoped))
})
