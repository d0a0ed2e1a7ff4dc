/**
 * `incoming_queue_depth_by_priority` over a real server, on every queue backend (memory, SQLite,
 * PostgreSQL when its server answers): messages sent over SMTP with `MT-PRIORITY` at several levels
 * while the delivery adapter is held shut, so they wait in the queue; the admin endpoint's
 * `/metrics` then shows the pending depth per priority bucket (adding up to `incoming_queue_depth`),
 * and every bucket reads 0 again once the adapter lets them through.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Layer, Option, Redacted, type Scope } from "effect"
import { Health } from "../../src/admin/Admin.ts"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import type { QueueChoice } from "../../src/IncomingOptions.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as Pg from "../support/postgres.ts"

interface Backend {
  readonly name: string
  readonly skip?: string | undefined
  readonly queue: Effect.Effect<QueueChoice, never, Scope.Scope>
}

const backends: ReadonlyArray<Backend> = [
  { name: "memory", queue: Effect.succeed({ kind: "memory" }) },
  { name: "sqlite", queue: Effect.succeed({ kind: "sqlite" }) },
  {
    name: "postgres",
    skip: Pg.available ? undefined : Pg.skipMessage,
    queue: Effect.map(Pg.freshDatabase, (url): QueueChoice => ({ kind: "postgres", url: Redacted.make(url), poolSize: 4 }))
  }
]

/** MT-PRIORITY levels sent (undefined: none) and the bucket each lands in. */
const sent: ReadonlyArray<readonly [level: number | undefined, count: number]> = [
  [undefined, 5],
  [0, 1],
  [9, 2],
  [5, 2],
  [3, 1],
  [-5, 3],
  [-9, 1]
]
const expected = { critical: 2, high: 3, normal: 6, low: 4 }
const total = sent.reduce((n, [, count]) => n + count, 0)

/** An adapter that counts what it is given and holds every delivery until `gate` opens. */
const gatedAdapter = (gate: Deferred.Deferred<void>) => {
  const started: Array<string> = []
  const adapter = DA.DeliveryAdapter.of({
    name: "gated",
    deliver: (d) =>
      Effect.gen(function*() {
        started.push(d.id)
        yield* Deferred.await(gate)
        return DA.all(d, (rcpt) => DA.ok(rcpt))
      })
  })
  return { adapter, started }
}

/** The gauges of one scrape: the per-priority buckets and the total depth. */
const scrape = (port: number) =>
  Effect.promise(async () => {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`)
    assert.strictEqual(res.status, 200)
    const text = await res.text()
    const value = (series: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${series} `))
      return line === undefined ? undefined : Number(line.slice(series.length + 1))
    }
    const byPriority = Object.fromEntries(
      (["critical", "high", "normal", "low"] as const).map((p) => [p, value(`incoming_queue_depth_by_priority{priority="${p}"}`)])
    )
    return { byPriority, depth: value("incoming_queue_depth"), text }
  })

const waitFor = <A>(what: string, probe: Effect.Effect<A>, done: (a: A) => boolean, timeoutMs: number) =>
  Effect.gen(function*() {
    const until = Date.now() + timeoutMs
    while (true) {
      const a = yield* probe
      if (done(a)) return a
      if (Date.now() > until) return assert.fail(`timed out waiting for ${what}: ${JSON.stringify(a)}`)
      yield* Effect.sleep(50)
    }
  })

describe("queue depth by priority on /metrics", () => {
  for (const backend of backends) {
    it.live.skipIf(backend.skip !== undefined)(`${backend.name}: per-priority depth while delivery is held, 0 after`, () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const gated = gatedAdapter(gate)
        const ctx = yield* Layer.build(
          TestIncoming.layerWith({
            queue: yield* backend.queue,
            admin: { host: "127.0.0.1", port: 0 },
            // Loopback is trusted, so its MT-PRIORITY counts.
            relay: { trustedNetworks: ["127.0.0.0/8"] }
          }).pipe(Layer.provide(Layer.succeed(DA.DeliveryAdapter, gated.adapter)))
        )
        const smtp = Context.get(ctx, Listeners).all[0]!.port
        const admin = Option.getOrThrow(yield* Context.get(ctx, Health).admin).port

        for (const [level, count] of sent) {
          for (let i = 0; i < count; i++) {
            const reply = yield* SmtpClient.send({
              port: smtp,
              from: "sender@remote.test",
              to: ["user@example.test"],
              mailParameters: level === undefined ? [] : [`MT-PRIORITY=${level}`],
              data: `Subject: level ${level ?? "none"} #${i}\r\n\r\nhello\r\n`
            })
            assert.strictEqual(reply.code, 250, reply.text)
          }
        }
        // Everything is queued (250 came after each commit); the workers hold a message each at the gate.
        const held = yield* scrape(admin)
        assert.deepStrictEqual(held.byPriority, expected, held.text)
        assert.strictEqual(held.depth, total)
        assert.include(held.text, "# TYPE incoming_queue_depth_by_priority gauge")

        yield* Deferred.succeed(gate, undefined)
        // Settles land after the adapter returns: poll until every bucket has drained.
        const drained = yield* waitFor("the queue to drain", scrape(admin), (s) => s.depth === 0, 60_000)
        assert.deepStrictEqual(drained.byPriority, { critical: 0, high: 0, normal: 0, low: 0 })
        assert.strictEqual(new Set(gated.started).size, total)
      }).pipe(Effect.scoped), { timeout: 120_000 })
  }
})
