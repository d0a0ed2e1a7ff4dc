/**
 * The PostgreSQL queue's batched claims and settles (`Claims.ts`, `Settles.ts`), on a database of
 * its own per test: workers claiming at once share statements yet each gets a message of its own,
 * the most urgent ones first; claims interrupted before their answer leave no message leased; and in a batch of settles a fenced-off lease fails alone while the others are recorded.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, Redacted } from "effect"
import { delivered, type Lease } from "../../src/queue/MailQueue.ts"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"
import { message } from "../../src/testing/QueueConformance.ts"
import * as Pg from "../support/postgres.ts"

const node = (url: string) => PgQueue.make({ url: Redacted.make(url), nodeId: "node-a" })

const deliverAll = (lease: Lease) => lease.recipients.map((r) => delivered(r.rcpt, "250 ok"))

describe.skipIf(!Pg.available)("PostgreSQL queue: batched claims and settles", () => {
  it.live("workers claiming at once each get a message of their own, the most urgent first", () =>
    Effect.gen(function*() {
      const q = (yield* node(yield* Pg.freshDatabase)).queue
      const now = Date.now()
      const urgent = Array.from({ length: 8 }, (_, i) => message({ receivedAt: now - 1000 + i, priority: 5 }))
      const normal = Array.from({ length: 8 }, (_, i) => message({ receivedAt: now - 2000 + i }))
      for (const m of [...normal, ...urgent]) yield* q.commit(m)
      const leases = yield* Effect.all(Array.from({ length: 8 }, (_, i) => q.claim({ owner: `w${i}`, leaseMs: 60_000 })), { concurrency: "unbounded" })
      const ids = leases.map((l) => (Option.isSome(l) ? l.value.id : "none"))
      assert.strictEqual(new Set(ids).size, 8, `distinct leases: ${ids.join(", ")}`)
      // Eight claims at once take exactly the eight urgent messages, whatever the batches were.
      assert.deepStrictEqual(ids.toSorted(), urgent.map((m) => m.id).toSorted())
      for (const [i, l] of leases.entries()) assert.strictEqual(Option.getOrThrow(l).owner, `w${i}`)
      yield* Effect.forEach(leases, (l) => q.settle(Option.getOrThrow(l), deliverAll(Option.getOrThrow(l))), { concurrency: "unbounded", discard: true })
      assert.strictEqual(yield* q.depth, 8)
    }), 120_000)

  it.live("claims interrupted before their answer leave no message leased", () =>
    Effect.gen(function*() {
      const pg = yield* node(yield* Pg.freshDatabase)
      const q = pg.queue
      const messages = Array.from({ length: 30 }, (_, i) => message({ receivedAt: Date.now() - 1000 + i }))
      yield* Effect.forEach(messages, (m) => q.commit(m), { concurrency: 10, discard: true })
      // Interrupted at different points: before their statement, during it, after their answer.
      // A claim that answered hands its lease over: a careful caller (the dispatcher) takes it
      // uninterruptibly and gives it back; the queue must give back every other one.
      const answered: Array<Lease> = []
      const claimTaking = Effect.uninterruptibleMask((restore) =>
        restore(q.claim({ owner: "doomed", leaseMs: 600_000 })).pipe(Effect.map(Option.map((l) => answered.push(l))))
      )
      for (const delayMs of [0, 1, 2, 5, 10]) {
        const fibers = yield* Effect.forEach(Array.from({ length: 4 }), () => Effect.forkChild(claimTaking, { startImmediately: true }))
        yield* Effect.sleep(delayMs)
        yield* Fiber.interruptAll(fibers)
      }
      yield* Effect.forEach(answered, (l) => q.release(l), { discard: true })
      // Releases of leases nobody took are on their way; then every message is claimable again.
      const claimed = new Set<string>()
      const deadline = Date.now() + 30_000
      while (claimed.size < messages.length && Date.now() < deadline) {
        const c = yield* q.claim({ owner: "survivor", leaseMs: 600_000 })
        if (Option.isNone(c)) {
          yield* Effect.sleep(50)
          continue
        }
        claimed.add(c.value.id)
        yield* q.settle(c.value, deliverAll(c.value))
      }
      assert.strictEqual(claimed.size, messages.length, "a message stayed leased to an interrupted claim")
      assert.deepStrictEqual(yield* pg.leasesByNode, [])
    }), 120_000)

  it.live("in a batch of settles a fenced-off lease fails alone; the others are recorded", () =>
    Effect.gen(function*() {
      const q = (yield* node(yield* Pg.freshDatabase)).queue
      const messages = Array.from({ length: 6 }, (_, i) => message({ receivedAt: Date.now() - 1000 + i }))
      for (const m of messages) yield* q.commit(m)
      const leases: Array<Lease> = []
      for (let i = 0; i < 6; i++) leases.push(Option.getOrThrow(yield* q.claim({ owner: "w", leaseMs: 60_000 })))
      // A stale copy of the third lease: a token that is not (or no longer) the message's.
      const stale: Lease = { ...leases[2]!, token: String(BigInt(leases[2]!.token) + 1_000_000n) }
      const results = yield* Effect.all(
        [...leases.filter((_, i) => i !== 2), stale].map((l) => Effect.result(q.settle(l, deliverAll(l)))),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(results.map((r) => r._tag), ["Success", "Success", "Success", "Success", "Success", "Failure"])
      const lost = results[5]!
      assert.strictEqual(lost._tag === "Failure" ? lost.failure.reason._tag : "", "LeaseLost")
      // The real lease is untouched by the stale settle: it settles, and the queue is empty.
      assert.strictEqual(yield* q.depth, 1)
      yield* q.settle(leases[2]!, deliverAll(leases[2]!))
      assert.strictEqual(yield* q.depth, 0)
    }), 120_000)
})
