/**
 * The queue and delivery path without sockets: CPU per message of `MailQueue.commit` and of the
 * dispatcher's claim → deliver (discard) → settle, in one process, for the memory or the SQLite
 * queue. What `npm run bench` cannot separate: there every message also pays the session, the
 * replies and the kernel's wake-ups of the load generator, which move with everything else
 * (docs/benchmark.md, issue 20). Here the delivery side is measured alone, so a change to the
 * queue, the writer channel or the dispatcher can be A/B'd within a few percent.
 *
 *   node scripts/bench/deliver.ts [--queue memory|sqlite] [--count 20000] [--rounds 8]
 *                                 [--concurrency 10] [--workers 4] [--size 1024] [--mode backlog|live]
 *
 * Each round commits `count` messages from `concurrency` committers (as that many sessions
 * would). `backlog`: every commit first, then the workers drain the queue; the two phases are
 * reported apart (with SQLite the workers already deliver while the committers wait for their
 * group commits, so there "commit" includes most of the delivery: read the sum). `live`: each
 * committer yields an event-loop turn after each commit, so the workers deliver while commits
 * arrive, as in a server (one figure for both; an idle event-loop
 * turn costs ~4 µs here and is included). Reported per round: main-thread CPU µs per message
 * (`process.threadCpuUsage`), all threads (the SQLite writer too) and wall µs per message. The
 * first rounds run while V8 still compiles: read the last ones (the summary is their median).
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { Effect, Layer } from "effect"
import * as Dispatcher from "../../src/delivery/Dispatcher.ts"
import * as DiscardAdapter from "../../src/delivery/DiscardAdapter.ts"
import { MailQueue, type NewMessage } from "../../src/queue/MailQueue.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import * as MessageId from "../../src/queue/MessageId.ts"
import * as SqliteQueue from "../../src/queue/SqliteQueue.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"

const { values: argv } = parseArgs({
  options: {
    queue: { type: "string", default: "memory" },
    count: { type: "string", default: "20000" },
    rounds: { type: "string", default: "8" },
    concurrency: { type: "string", default: "10" },
    workers: { type: "string", default: "4" },
    size: { type: "string", default: "1024" },
    mode: { type: "string", default: "backlog" }
  }
})
const count = Number(argv.count)
const rounds = Number(argv.rounds)
const concurrency = Number(argv.concurrency)
const size = Number(argv.size)
const mode = argv.mode === "live" ? "live" : "backlog"
if (argv.queue !== "memory" && argv.queue !== "sqlite") throw new Error(`--queue: memory or sqlite, not ${argv.queue}`)

const dataDir = argv.queue === "sqlite" ? mkdtempSync(join(tmpdir(), "incoming-deliver-")) : undefined
const queueLayer = dataDir === undefined
  ? MemoryQueue.layer({ maxDepth: 10_000_000 })
  : SqliteQueue.layer({ dataDir, maxDepth: 10_000_000 })
const services = Layer.mergeAll(queueLayer, Telemetry.layer(), DiscardAdapter.layer)
const layer = Dispatcher.layer({ workers: Number(argv.workers) }).pipe(Layer.provideMerge(services))

// One body for all messages, as the spool hands it over (a view of a larger buffer).
const bytes = Buffer.alloc(size + 64, "x").subarray(32, 32 + size)
const message = (): NewMessage => ({
  id: MessageId.make(),
  envelope: {
    mailFrom: "sender@example.com",
    rcptTo: ["rcpt@bench.test"],
    helo: "client.example.com",
    clientAddress: "127.0.0.1",
    secure: false,
    listener: "smtp"
  },
  trace: "Received: from client.example.com ([127.0.0.1]) by bench.test with ESMTP id X; Sun, 6 Dec 2026 00:00:00 +0000\r\n",
  body: { _tag: "InMemory", size, chunks: [bytes], release: Effect.void },
  receivedAt: Date.now()
})

interface Sample {
  readonly main: number
  readonly all: number
  readonly wall: number
}
const sample = (): Sample => {
  const t = process.threadCpuUsage()
  const p = process.cpuUsage()
  return { main: t.user + t.system, all: p.user + p.system, wall: performance.now() * 1000 }
}
const perMessage = (a: Sample, b: Sample) => ({ main: (b.main - a.main) / count, all: (b.all - a.all) / count, wall: (b.wall - a.wall) / count })
const show = (x: { main: number; all: number; wall: number }) => `main ${x.main.toFixed(1)} / all ${x.all.toFixed(1)} / wall ${x.wall.toFixed(1)}`
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

const program = Effect.gen(function*() {
  const queue = yield* MailQueue
  yield* Dispatcher.Dispatcher
  const drained = Effect.gen(function*() {
    while (queue.depthUnsafe() > 0) yield* turn
  })
  const commitAll = (each: (m: NewMessage) => Effect.Effect<void, unknown>) =>
    Effect.forEach(Array.from({ length: concurrency }, (_, i) => i), (i) =>
      Effect.gen(function*() {
        for (let n = i; n < count; n += concurrency) yield* each(message())
      }), { concurrency, discard: true })
  console.log(`# queue=${argv.queue} mode=${mode} count=${count} concurrency=${concurrency} workers=${argv.workers} size=${size} node ${process.version}`)
  console.log("# CPU µs per message: main thread / all threads / wall")
  const last: Array<{ main: number; all: number; wall: number }> = []
  for (let r = 1; r <= rounds; r++) {
    const a = sample()
    if (mode === "backlog") {
      yield* commitAll((m) => queue.commit(m))
      const b = sample()
      yield* drained
      const c = sample()
      const deliver = perMessage(b, c)
      console.log(`round ${r}: commit ${show(perMessage(a, b))} | deliver ${show(deliver)}`)
      if (r > rounds / 2) last.push(perMessage(a, c))
    } else {
      yield* commitAll((m) => Effect.andThen(queue.commit(m), turn))
      yield* drained
      const total = perMessage(a, sample())
      console.log(`round ${r}: commit + deliver ${show(total)}`)
      if (r > rounds / 2) last.push(total)
    }
  }
  console.log(`# median of the last ${last.length} rounds, commit + deliver: ${show({ main: median(last.map((x) => x.main)), all: median(last.map((x) => x.all)), wall: median(last.map((x) => x.wall)) })}`)
})

try {
  await Effect.runPromise(program.pipe(Effect.provide(layer)))
} finally {
  if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true })
}
