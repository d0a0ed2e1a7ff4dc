/**
 * The SQLite queue's writer channel alone, without sessions or delivery: what one batch round
 * trip costs the main thread in `GroupCommit` (src/queue/internal/GroupCommit.ts) against a bare
 * worker doing the same (`postMessage`, `BEGIN IMMEDIATE; COMMIT`, a reply resolving a promise),
 * and what waking a sleeping worker costs the thread that posts to it. One committer, one op (a
 * `recount`, which writes nothing) per batch, so every round trip is a batch: the channel's fixed
 * cost per batch, which deliver.ts and the full bench only show mixed with everything else
 * (docs/benchmark.md, issue 20).
 *
 *   node scripts/bench/channel.ts [--count 2000] [--rounds 5] [--durable true|false]
 *
 * Main-thread CPU is `process.threadCpuUsage` over a whole round (on these VMs the per-thread clock
 * advances in coarse steps: a single call reads nothing); the wake-up probe reports wall time per
 * `postMessage`. The first round of each runs while V8 still compiles. Files go to a temporary
 * directory, removed at the end; the polling worker of the wake-up probe stops by itself.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { parseArgs } from "node:util"
import { MessageChannel, Worker } from "node:worker_threads"
import { Effect } from "effect"
import * as GroupCommit from "../../src/queue/internal/GroupCommit.ts"
import { migrate } from "../../src/queue/internal/sqliteSchema.ts"

const { values: argv } = parseArgs({
  options: {
    count: { type: "string", default: "2000" },
    rounds: { type: "string", default: "5" },
    durable: { type: "string", default: "true" }
  },
  strict: true
})
const count = Number(argv.count)
const rounds = Number(argv.rounds)
const durable = argv.durable !== "false"
if (!(count > 0 && count <= 100_000 && rounds > 0 && rounds <= 50)) throw new Error("--count 1-100000, --rounds 1-50")

const dir = mkdtempSync(join(tmpdir(), "incoming-channel-"))

/** Runs rounds of `count` round trips (each awaited before the next) and reports per round trip. */
const measure = async (label: string, run: () => Promise<void>): Promise<void> => {
  for (let r = 1; r <= rounds; r++) {
    const cpu = process.threadCpuUsage()
    const t0 = performance.now()
    await run()
    const wallUs = ((performance.now() - t0) * 1000) / count
    const used = process.threadCpuUsage(cpu)
    const mainUs = (used.user + used.system) / count
    process.stdout.write(`${label} round ${r}: main ${mainUs.toFixed(1)} µs, wall ${wallUs.toFixed(1)} µs per round trip\n`)
  }
}

// GroupCommit's writer thread opens an existing queue database, as SqliteQueue leaves it.
const queuePath = join(dir, "queue.db")
const setup = new DatabaseSync(queuePath)
setup.exec("PRAGMA journal_mode = WAL")
migrate(setup)
setup.close()

await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const writer = yield* GroupCommit.make({
    path: queuePath,
    busyTimeoutMs: 5_000,
    maxPageCount: undefined,
    depth: () => 0,
    committed: () => undefined,
    afterCommit: () => Effect.void,
    syncBodies: Effect.void
  })
  // One fiber submits and waits, op after op, as a session's commit does.
  const round = Effect.gen(function*() {
    for (let i = 0; i < count; i++) yield* writer.submit<void>({ op: "recount" }, { durable })
  })
  yield* Effect.promise(() => measure("GroupCommit", () => Effect.runPromise(round)))
})))

// The same round trip with nothing around it: the floor of any worker-thread group commit.
const bare = new Worker(
  `const { parentPort, workerData } = require("node:worker_threads")
   const { DatabaseSync } = require("node:sqlite")
   const db = new DatabaseSync(workerData.path)
   db.exec("PRAGMA journal_mode = WAL")
   db.exec(workerData.durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")
   db.exec("CREATE TABLE IF NOT EXISTS t (x)")
   parentPort.on("message", () => {
     db.exec("BEGIN IMMEDIATE")
     db.exec("COMMIT")
     parentPort.postMessage(0)
   })`,
  { eval: true, workerData: { path: join(dir, "bare.db"), durable } }
)
let answered: (() => void) | undefined
bare.on("message", () => {
  const resolve = answered
  answered = undefined
  resolve?.()
})
await measure("bare worker", async () => {
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve) => {
      answered = resolve
      bare.postMessage(0)
    })
  }
})

// The wake-up: posting to a worker asleep in its event loop (after a timer turn, so it is back
// there), against posting to one that polls its port and never sleeps.
const perPost = async (post: () => void, gap: () => Promise<void>): Promise<number> => {
  let wall = 0
  for (let i = 0; i < count; i++) {
    await gap()
    const t0 = performance.now()
    post()
    wall += performance.now() - t0
  }
  return (wall * 1000) / count
}
let reply: Promise<void> = Promise.resolve()
const asleep = await perPost(() => {
  reply = new Promise<void>((resolve) => {
    answered = resolve
  })
  bare.postMessage(0)
}, async () => {
  await reply
  await new Promise((resolve) => setTimeout(resolve, 0))
})
await bare.terminate()
const { port1, port2 } = new MessageChannel()
const polling = new Worker(
  `const { workerData, receiveMessageOnPort } = require("node:worker_threads")
   const end = Date.now() + workerData.ms
   while (Date.now() < end) while (receiveMessageOnPort(workerData.port) !== undefined) {}`,
  { eval: true, workerData: { port: port2, ms: 20_000 }, transferList: [port2] }
)
await new Promise((resolve) => setTimeout(resolve, 200))
const awake = await perPost(() => port1.postMessage(0), () => new Promise((resolve) => setImmediate(resolve)))
await polling.terminate()
port1.close()
process.stdout.write(`postMessage to a sleeping worker ${asleep.toFixed(1)} µs, to a polling one ${awake.toFixed(1)} µs (wall, per call)\n`)
rmSync(dir, { recursive: true, force: true })
