/**
 * The PostgreSQL queue as several nodes see it, on real time and a database of its own per test:
 * two nodes (separate pools, separate node ids) claiming concurrently never lease one message
 * twice; an expired lease is taken over and the old owner's settle is refused (fencing); the
 * heartbeat keeps a slow delivery's lease; the reaper returns dead nodes' leases; a commit on one
 * node wakes the other's idle worker through NOTIFY; a message held from one node is claimed by
 * none until released (and the release wakes them); and the node rides out its connections being
 * killed (`pg_terminate_backend`): commits fail with 451 4.3.0 meanwhile, then work again.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, Redacted } from "effect"
import { delivered, type Lease } from "../../src/queue/MailQueue.ts"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"
import { message } from "../../src/testing/QueueConformance.ts"
import * as Pg from "../support/postgres.ts"

const node = (url: string, nodeId: string, options: Partial<PgQueue.PgQueueOptions> = {}) =>
  PgQueue.make({ url: Redacted.make(url), nodeId, ...options })

const claimAll = (q: PgQueue.PgQueue["queue"], owner: string, leaseMs: number) =>
  Effect.gen(function*() {
    const got: Array<Lease> = []
    while (true) {
      const c = yield* q.claim({ owner, leaseMs })
      if (Option.isNone(c)) return got
      got.push(c.value)
    }
  })

const pgDatabase = (url: string) => new URL(url).pathname.slice(1)

describe.skipIf(!Pg.available)("PostgreSQL queue: nodes, leases, fencing, wake-ups, outages", () => {
  it.live("two nodes claiming concurrently never lease one message twice", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const a = yield* node(url, "node-a")
      const b = yield* node(url, "node-b")
      // Both nodes' pools connected before the race: a node whose first claim still waits for a
      // connection can find the other one done with all 60 (seen once in CI).
      for (const n of [a, b]) assert.isTrue(Option.isNone(yield* n.queue.claim({ owner: "warm-up", leaseMs: 60_000 })))
      const messages = Array.from({ length: 60 }, (_, i) => message({ receivedAt: Date.now() - 1000 + i }))
      yield* Effect.forEach(messages, (m) => a.queue.commit(m), { concurrency: 20, discard: true })
      const claims = yield* Effect.all(
        [...Array.from({ length: 4 }, (_, i) => claimAll(a.queue, `a/w${i}`, 60_000)), ...Array.from({ length: 4 }, (_, i) => claimAll(b.queue, `b/w${i}`, 60_000))],
        { concurrency: "unbounded" }
      )
      const ids = claims.flat().map((l) => l.id)
      assert.strictEqual(ids.length, 60, "every message claimed once")
      assert.strictEqual(new Set(ids).size, 60, "no message claimed twice")
      assert.isAbove(claims.slice(0, 4).flat().length, 0, "node a claimed some")
      assert.isAbove(claims.slice(4).flat().length, 0, "node b claimed some")
      const leases = yield* a.leasesByNode
      assert.deepStrictEqual(leases.map((l) => [l.node, l.leases]).toSorted(), [
        ["node-a", claims.slice(0, 4).flat().length],
        ["node-b", claims.slice(4).flat().length]
      ].toSorted())
    }), 120_000)

  it.live("an expired lease is taken over, and the old owner's settle and release are refused", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      // Node a stands for a node that stalled: no heartbeat renews its lease.
      const a = yield* node(url, "node-a", { heartbeat: false })
      const b = yield* node(url, "node-b")
      const m = message({ receivedAt: Date.now() - 10 })
      yield* a.queue.commit(m)
      const first = Option.getOrThrow(yield* a.queue.claim({ owner: "a/w0", leaseMs: 1_000 }))
      assert.isTrue(Option.isNone(yield* b.queue.claim({ owner: "b/w0", leaseMs: 30_000 })), "not claimable while the lease is valid")
      yield* Effect.sleep("1500 millis")
      const second = Option.getOrThrow(yield* b.queue.claim({ owner: "b/w0", leaseMs: 30_000 }))
      assert.strictEqual(second.id, m.id)
      assert.isAbove(Number(second.token), Number(first.token), "a new fencing token")
      assert.deepStrictEqual(second.recipients, [{ rcpt: "rcpt@example.com", attempt: 2 }])
      const refused = yield* a.queue.settle(first, [delivered("rcpt@example.com", "250 from the stale owner")]).pipe(Effect.flip)
      assert.strictEqual(refused.reason._tag, "LeaseLost")
      assert.strictEqual((yield* a.queue.release(first).pipe(Effect.flip)).reason._tag, "LeaseLost")
      const info = Option.getOrThrow(yield* b.admin.get(m.id))
      assert.strictEqual(info.state, "inflight", "the stale settle changed nothing")
      assert.isUndefined(info.recipients[0]!.lastReply)
      yield* b.queue.settle(second, [delivered("rcpt@example.com", "250 ok")])
      assert.isTrue(Option.isNone(yield* b.admin.get(m.id)))
    }), 120_000)

  it.live("the heartbeat keeps a slow delivery's lease; the reaper returns a silent node's lease", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const live = yield* node(url, "node-live")
      const silent = yield* node(url, "node-silent", { heartbeat: false })
      const reaper = yield* node(url, "node-reaper", { maintenanceIntervalMs: 300 })
      const kept = message({ receivedAt: Date.now() - 20 })
      const lost = message({ receivedAt: Date.now() - 10 })
      yield* live.queue.commit(kept)
      yield* live.queue.commit(lost)
      const held = Option.getOrThrow(yield* live.queue.claim({ owner: "live/w0", leaseMs: 1_200 }))
      const abandoned = Option.getOrThrow(yield* silent.queue.claim({ owner: "silent/w0", leaseMs: 1_200 }))
      assert.deepStrictEqual([held.id, abandoned.id], [kept.id, lost.id])
      yield* Effect.sleep("3500 millis")
      // Three lease lengths later: the live node's lease was renewed, the silent one's reaped.
      assert.strictEqual(Option.getOrThrow(yield* reaper.admin.get(kept.id)).state, "inflight")
      const reaped = Option.getOrThrow(yield* reaper.admin.get(lost.id))
      assert.deepStrictEqual(reaped.recipients.map((r) => [r.state, r.attempts]), [["queued", 1]], "returned, its attempt counted")
      assert.deepStrictEqual((yield* reaper.leasesByNode).map((l) => l.node), ["node-live"])
      const retaken = Option.getOrThrow(yield* reaper.queue.claim({ owner: "reaper/w0", leaseMs: 30_000 }))
      assert.strictEqual(retaken.id, lost.id)
      yield* live.queue.settle(held, [delivered("rcpt@example.com", "250 ok")])
      assert.isTrue(Option.isNone(yield* live.admin.get(kept.id)))
    }), 120_000)

  it.live("a commit on one node wakes an idle worker of another through NOTIFY", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const a = yield* node(url, "node-a")
      const b = yield* node(url, "node-b")
      yield* Effect.sleep("300 millis") // both LISTENing
      const latencies: Array<number> = []
      for (let i = 0; i < 5; i++) {
        const waiting = yield* Effect.forkChild(Effect.gen(function*() {
          yield* b.queue.awaitWork(60_000)
          return performance.now()
        }))
        yield* Effect.sleep("100 millis")
        const sent = performance.now()
        yield* a.queue.commit(message({ receivedAt: Date.now() }))
        const woke = yield* Fiber.join(waiting)
        latencies.push(woke - sent)
      }
      console.info(`NOTIFY wake-up latency across nodes (commit start to wake, ms): ${latencies.map((l) => l.toFixed(1)).join(", ")}`)
      // Far below the 60 s the worker would otherwise have slept (and the dispatcher's 1 s poll).
      for (const l of latencies) assert.isBelow(l, 5_000)
    }), 120_000)

  it.live("a message held from one node is claimed by no node; its release wakes them and it is claimed", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const a = yield* node(url, "node-a")
      const b = yield* node(url, "node-b")
      const operator = yield* node(url, "node-operator")
      const held = message({ receivedAt: Date.now() - 20 })
      const other = message({ receivedAt: Date.now() - 10 })
      yield* a.queue.commit(held)
      assert.isTrue(yield* operator.admin.hold(held.id))
      yield* b.queue.commit(other)
      // Every node's workers together, claiming until nothing is left: only the other message.
      const claims = yield* Effect.all(
        [claimAll(a.queue, "a/w0", 60_000), claimAll(a.queue, "a/w1", 60_000), claimAll(b.queue, "b/w0", 60_000), claimAll(b.queue, "b/w1", 60_000)],
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(claims.flat().map((l) => l.id), [other.id], "the held message was claimed by no node")
      assert.strictEqual(Option.getOrThrow(yield* a.admin.get(held.id)).state, "held", "seen as held from another node")
      assert.strictEqual((yield* b.admin.stats).held, 1)
      assert.strictEqual(yield* a.queue.depth, 2, "a held message is still pending")
      assert.isTrue(Option.isNone(yield* a.queue.nextDueAt) || Option.getOrThrow(yield* a.queue.nextDueAt) > Date.now() + 30_000, "not due while held")

      // The release, on the operator's node, wakes an idle worker of node b through NOTIFY.
      yield* Effect.sleep("300 millis") // b LISTENing
      const waiting = yield* Effect.forkChild(b.queue.awaitWork(60_000).pipe(Effect.as("woken")))
      yield* Effect.sleep("100 millis")
      assert.isTrue(yield* operator.admin.unhold(held.id))
      assert.isFalse(yield* operator.admin.unhold(held.id), "released already")
      assert.isTrue(Option.isSome(yield* Fiber.join(waiting).pipe(Effect.timeoutOption("10 seconds"))), "the release woke node b")
      const lease = Option.getOrThrow(yield* b.queue.claim({ owner: "b/w0", leaseMs: 60_000 }))
      assert.strictEqual(lease.id, held.id)
      assert.deepStrictEqual(lease.recipients, [{ rcpt: "rcpt@example.com", attempt: 1 }])
      assert.strictEqual((yield* a.admin.stats).held, 0)
    }), 120_000)

  it.live("connections killed by pg_terminate_backend: commits fail with 451 4.3.0, then the node recovers by itself", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const a = yield* node(url, "node-a")
      const b = yield* node(url, "node-b")
      const before = message({ receivedAt: Date.now() - 100 })
      yield* a.queue.commit(before)
      const kill = Effect.gen(function*() {
        const sql = yield* PgQueue.connect({ url: Redacted.make(Pg.adminUrl), poolSize: 1 }, "killer-admin")
        const rows = yield* sql<{ n: bigint }>`
          SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
          WHERE datname = ${pgDatabase(url)} AND pid <> pg_backend_pid()`
        return Number(rows[0]?.n ?? 0)
      }).pipe(Effect.scoped)
      const killed = yield* kill
      assert.isAtLeast(killed, 2, "the nodes' connections were terminated")
      // Right after: a commit may fail (never silently: a 451 4.3.0 for the session) or succeed on
      // a fresh connection; within seconds commits succeed again without a restart.
      const outcomes: Array<string> = []
      const after = message({ receivedAt: Date.now() })
      let stored = false
      for (let i = 0; i < 40 && !stored; i++) {
        const r = yield* a.queue.commit(i === 0 ? after : { ...after }).pipe(Effect.result)
        if (r._tag === "Success") stored = true
        else {
          outcomes.push(`${r.failure.reason._tag} ${r.failure.reply.code} ${r.failure.reply.enhanced}`)
          if (r.failure.reason._tag === "StorageFailed" && /already exists/.test(r.failure.message)) stored = true
          else yield* Effect.sleep("250 millis")
        }
      }
      console.info(`commits after pg_terminate_backend: ${outcomes.length} refused (${[...new Set(outcomes)].join("; ") || "none"}), then stored`)
      assert.isTrue(stored, "the node recovered by itself")
      for (const o of outcomes) assert.match(o, /^StorageFailed 451 4\.3\.0$/)
      // Nothing acknowledged was lost, and the other node (also cut off) claims both.
      const claimed = yield* Effect.gen(function*() {
        for (let i = 0; i < 40; i++) {
          const r = yield* claimAll(b.queue, "b/w0", 30_000).pipe(Effect.option)
          if (Option.isSome(r)) return r.value
          yield* Effect.sleep("250 millis")
        }
        return []
      })
      assert.deepStrictEqual(claimed.map((l) => l.id).toSorted(), [before.id, after.id].toSorted())
      // And b's LISTEN came back: a commit on a wakes it again.
      yield* Effect.sleep("1500 millis")
      const waiting = yield* Effect.forkChild(b.queue.awaitWork(60_000).pipe(Effect.as("woken")))
      yield* Effect.sleep("100 millis")
      yield* a.queue.commit(message({ receivedAt: Date.now() }))
      const woke = yield* Fiber.join(waiting).pipe(Effect.timeoutOption("10 seconds"))
      assert.isTrue(Option.isSome(woke), "NOTIFY reaches the other node after its LISTEN reconnected")
    }), 120_000)
})

if (!Pg.available) {
  describe("PostgreSQL queue: nodes", () => {
    it.skip(Pg.skipMessage, () => {})
  })
}
