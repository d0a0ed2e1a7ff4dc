/**
 * Conformance, message priority: claims take due work by effective priority (highest first),
 * then due time, then arrival; a message below normal that waited `priorityMaxWaitMs` since it
 * arrived counts as normal (ageing); a retry keeps its message's priority; an operator can
 * change a queued message's priority; `stats` counts pending messages by effective priority.
 */
import { assert } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { retryAt } from "../../queue/MailQueue.ts"
import { assertNothingToClaim, claimOne, type ConformanceTest, deliverAll, message, SECOND, T0 } from "./support.ts"

export const priority = (test: ConformanceTest): void => {
  test("claims the highest priority first, then the one due the longest, then arrival", (q) =>
    Effect.gen(function*() {
      const oldNormal = message({ receivedAt: T0 - 30 * SECOND })
      const low = message({ receivedAt: T0 - 40 * SECOND, priority: -5 })
      const high = message({ receivedAt: T0 - 10 * SECOND, priority: 5 })
      const critical = message({ receivedAt: T0 - 1 * SECOND, priority: 9 })
      const newNormal = message({ receivedAt: T0 - 20 * SECOND, priority: 0 })
      const highOlder = message({ receivedAt: T0 - 15 * SECOND, priority: 5 })
      for (const m of [oldNormal, low, high, critical, newNormal, highOlder]) yield* q.commit(m)
      const order = []
      for (let i = 0; i < 6; i++) order.push((yield* claimOne(q)).id)
      assert.deepStrictEqual(order, [critical.id, highOlder.id, high.id, oldNormal.id, newNormal.id, low.id])
      yield* assertNothingToClaim(q)
    }))

  test("equal priority and equal due time go by arrival (commit order)", (q) =>
    Effect.gen(function*() {
      const ms = [0, 1, 2, 3].map(() => message({ receivedAt: T0 - SECOND, priority: 5 }))
      for (const m of ms) yield* q.commit(m)
      const low = message({ receivedAt: T0 - SECOND, priority: -1 })
      yield* q.commit(low)
      const later = message({ receivedAt: T0 - SECOND, priority: 5 })
      yield* q.commit(later)
      const order = []
      for (let i = 0; i < 6; i++) order.push((yield* claimOne(q)).id)
      assert.deepStrictEqual(order, [...ms.map((m) => m.id), later.id, low.id])
    }))

  test("a message not yet due waits whatever its priority", (q) =>
    Effect.gen(function*() {
      const normal = message({ receivedAt: T0 - SECOND })
      const critical = message({ receivedAt: T0 + 10 * SECOND, priority: 9 })
      yield* q.commit(normal)
      yield* q.commit(critical)
      assert.strictEqual((yield* claimOne(q)).id, normal.id)
      yield* assertNothingToClaim(q)
      yield* TestClock.adjust(10 * SECOND)
      assert.strictEqual((yield* claimOne(q)).id, critical.id)
    }))

  test("ageing: a low-priority message that waited the maximum counts as normal", (q) =>
    Effect.gen(function*() {
      const low = message({ receivedAt: T0 - 9 * SECOND, priority: -9 })
      const n1 = message({ receivedAt: T0 - 5 * SECOND })
      const n2 = message({ receivedAt: T0 - 4 * SECOND })
      const n3 = message({ receivedAt: T0 - 3 * SECOND })
      for (const m of [low, n1, n2, n3]) yield* q.commit(m)
      // low has waited 9 s of its 10: still low.
      assert.strictEqual((yield* claimOne(q)).id, n1.id)
      yield* TestClock.adjust(SECOND)
      // Now it counts as normal, and it has been due the longest.
      assert.strictEqual((yield* claimOne(q)).id, low.id)
      assert.strictEqual((yield* claimOne(q)).id, n2.id)
      assert.strictEqual((yield* claimOne(q)).id, n3.id)
    }), { priorityMaxWaitMs: 10 * SECOND })

  test("ageing never lowers a priority, and 0 turns it off", (q) =>
    Effect.gen(function*() {
      const low = message({ receivedAt: T0 - 3600 * SECOND, priority: -5 })
      const normal = message({ receivedAt: T0 - SECOND })
      const high = message({ receivedAt: T0 - 2 * SECOND, priority: 5 })
      for (const m of [low, normal, high]) yield* q.commit(m)
      yield* TestClock.adjust(3600 * SECOND)
      assert.deepStrictEqual(
        [(yield* claimOne(q)).id, (yield* claimOne(q)).id, (yield* claimOne(q)).id],
        [high.id, normal.id, low.id]
      )
    }), { priorityMaxWaitMs: 0 })

  test("a retry keeps its message's priority", (q) =>
    Effect.gen(function*() {
      const high = message({ receivedAt: T0 - 10 * SECOND, priority: 5 })
      const low = message({ receivedAt: T0 - 20 * SECOND, priority: -5 })
      yield* q.commit(high)
      yield* q.commit(low)
      const first = yield* claimOne(q)
      assert.strictEqual(first.id, high.id)
      assert.strictEqual(first.envelope.priority, 5)
      yield* q.settle(first, [retryAt(first.recipients[0]!.rcpt, T0 + 30 * SECOND, "451 later")])
      const normal = message({ receivedAt: T0 + 5 * SECOND })
      yield* q.commit(normal)
      yield* TestClock.adjust(40 * SECOND)
      // All three due: the retried high one first although it has been due the shortest.
      const again = yield* claimOne(q)
      assert.strictEqual(again.id, high.id)
      assert.strictEqual(again.envelope.priority, 5)
      assert.deepStrictEqual(again.recipients.map((r) => r.attempt), [2])
      assert.strictEqual((yield* claimOne(q)).id, normal.id)
      assert.strictEqual((yield* claimOne(q)).id, low.id)
    }), { priorityMaxWaitMs: 3600 * SECOND })

  test("stats counts pending messages by effective priority, held and in flight included", (q, a) =>
    Effect.gen(function*() {
      const critical = message({ receivedAt: T0 - SECOND, priority: 9 })
      const highs = [0, 1].map(() => message({ receivedAt: T0 - SECOND, priority: 5 }))
      const normal = message({ receivedAt: T0 - SECOND })
      const agedLow = message({ receivedAt: T0 - 20 * SECOND, priority: -5 })
      const freshLow = message({ receivedAt: T0 - SECOND, priority: -9 })
      for (const m of [critical, ...highs, normal, agedLow, freshLow]) yield* q.commit(m)
      assert.isTrue(yield* a.hold(highs[0]!.id))
      const first = yield* claimOne(q)
      assert.strictEqual(first.id, critical.id)
      yield* deliverAll(q, first)
      // Out on a lease, still pending.
      assert.strictEqual((yield* claimOne(q)).id, highs[1]!.id)
      const stats = yield* a.stats
      assert.deepStrictEqual(stats.byPriority, [
        { priority: 5, messages: 2 },
        { priority: 0, messages: 2 },
        { priority: -9, messages: 1 }
      ])
      assert.strictEqual(stats.byPriority.reduce((n, p) => n + p.messages, 0), stats.depth)
      // The fresh low message reaches the ageing limit: it counts as normal from then on.
      yield* TestClock.adjust(10 * SECOND)
      assert.deepStrictEqual((yield* a.stats).byPriority, [{ priority: 5, messages: 2 }, { priority: 0, messages: 3 }])
    }), { priorityMaxWaitMs: 10 * SECOND })

  test("setPriority changes which message is claimed first and shows in get", (q, a) =>
    Effect.gen(function*() {
      const first = message({ receivedAt: T0 - 10 * SECOND })
      const second = message({ receivedAt: T0 - 5 * SECOND })
      yield* q.commit(first)
      yield* q.commit(second)
      assert.isTrue(yield* a.setPriority(second.id, 9))
      assert.isFalse(yield* a.setPriority("no-such-message", 9))
      const info = yield* a.get(second.id)
      if (Option.isNone(info)) return assert.fail("message not found")
      assert.strictEqual(info.value.envelope.priority, 9)
      assert.strictEqual((yield* claimOne(q)).id, second.id)
      assert.strictEqual((yield* claimOne(q)).id, first.id)
    }))
}
