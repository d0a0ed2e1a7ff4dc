import { Effect, Layer, Context, Option } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { MailQueue } from "../src/queue/MailQueue.ts"
import * as SqliteQueue from "../src/queue/SqliteQueue.ts"
import * as MemoryQueue from "../src/queue/MemoryQueue.ts"
import { message } from "../test/support/fixtures.ts"
import * as M from "../src/queue/MailQueue.ts"
const N = 10000
const batches: Array<number> = []
const bench = (name: string, layer: Layer.Layer<MailQueue, unknown>) => Effect.gen(function*() {
  const ctx = yield* Layer.build(layer)
  const q = Context.get(ctx, MailQueue)
  batches.length = 0
  let t0 = performance.now()
  yield* Effect.forEach(Array.from({ length: N }, (_, i) => i), (i) => q.commit(message(["u@x.test"], Date.now() + i)), { concurrency: 10, discard: true })
  const commitUs = (performance.now() - t0) * 1000 / N
  const commitBatches = batches.length
  t0 = performance.now()
  yield* Effect.forEach(Array.from({ length: 4 }), () => Effect.gen(function*() {
    while (true) {
      const l = yield* q.claim({ owner: "w", leaseMs: 60000 })
      if (Option.isNone(l)) return
      yield* q.settle(l.value, l.value.recipients.map((r) => M.delivered(r.rcpt, "ok")))
    }
  }), { concurrency: 4, discard: true })
  const drainUs = (performance.now() - t0) * 1000 / N
  console.log(name.padEnd(8), `commit ${commitUs.toFixed(1)} µs/msg (${commitBatches} batches)`, `claim+settle ${drainUs.toFixed(1)} µs/msg (${batches.length - commitBatches} batches)`)
}).pipe(Effect.scoped)
const dir = mkdtempSync(join("/work/main/.bench", "mbq-"))
await Effect.runPromise(bench("memory", MemoryQueue.layer({ maxDepth: 1e9 })))
await Effect.runPromise(bench("sqlite", SqliteQueue.layer({ dataDir: dir, maxDepth: 1e9, onBatch: (b) => batches.push(b.jobs) })))
