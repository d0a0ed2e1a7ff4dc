/**
 * Conformance, the operator's side (`QueueAdmin`): dead letters and their purge, retry-now,
 * delete, `get`/`list` with their filters, `stats`, and reading an unknown message.
 */
import { assert } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { dead, delivered, retryAt } from "../../queue/MailQueue.ts"
import {
  assertNothingToClaim,
  claimOne,
  type ConformanceTest,
  deliverAll,
  failureReason,
  HOUR,
  ids,
  message,
  type Queue,
  T0
} from "./support.ts"

export const admin = (test: ConformanceTest): void => {
  test("dead letters are kept and listed as dead, and purged only once their TTL passed", (q, a) =>
    Effect.gen(function*() {
      const m = message({ rcpts: ["gone@example.com"] })
      yield* q.commit(m)
      const lease = yield* claimOne(q)
      yield* q.settle(lease, [dead("gone@example.com", "550 5.1.1 no such user")])
      const info = Option.getOrUndefined(yield* a.get(m.id))
      assert.strictEqual(info?.state, "dead")
      assert.deepStrictEqual(
        info?.recipients.map((r) => [r.state, r.lastReply, r.expiresAt]),
        [["dead", "550 5.1.1 no such user", T0 + HOUR]]
      )
      assert.strictEqual(yield* q.depth, 0, "a dead message is not pending")
      yield* assertNothingToClaim(q)
      assert.deepStrictEqual(ids(yield* a.list({ state: "dead" })), [m.id])
      assert.deepStrictEqual(ids(yield* a.list({ state: "queued" })), [])
      assert.strictEqual(yield* q.purgeExpired, 0)
      yield* TestClock.adjust(HOUR - 1)
      assert.strictEqual(yield* q.purgeExpired, 0)
      assert.isTrue(Option.isSome(yield* a.get(m.id)), "purged before its TTL")
      yield* TestClock.adjust(1)
      assert.strictEqual(yield* q.purgeExpired, 1)
      assert.isTrue(Option.isNone(yield* a.get(m.id)))
      assert.deepStrictEqual(yield* a.list(), [])
      assert.strictEqual((yield* a.stats).messages, 0)
    }), { deadLetterTtlMs: HOUR })

  test("purgeDead removes every dead recipient now and keeps the pending ones", (q, a) =>
    Effect.gen(function*() {
      const m1 = message({ rcpts: ["dead1@example.com", "ok@example.com"], receivedAt: T0 - 10 })
      const m2 = message({ rcpts: ["dead2@example.com", "retry@example.com"], receivedAt: T0 - 9 })
      const m3 = message({ rcpts: ["queued@example.com"], receivedAt: T0 - 8 })
      yield* q.commit(m1)
      yield* q.commit(m2)
      const l1 = yield* claimOne(q)
      yield* q.settle(l1, [dead("dead1@example.com", "550 no"), delivered("ok@example.com", "250 ok")])
      const l2 = yield* claimOne(q)
      yield* q.settle(l2, [dead("dead2@example.com", "550 no"), retryAt("retry@example.com", T0 + HOUR, "451 later")])
      yield* q.commit(m3)
      assert.strictEqual((yield* a.stats).recipients.dead, 2)
      assert.strictEqual(yield* a.purgeDead, 2)
      assert.isTrue(Option.isNone(yield* a.get(m1.id)), "a message left with only delivered recipients is removed")
      assert.deepStrictEqual(
        Option.getOrUndefined(yield* a.get(m2.id))?.recipients.map((r) => [r.rcpt, r.state]),
        [["retry@example.com", "retry"]]
      )
      assert.strictEqual(Option.getOrUndefined(yield* a.get(m3.id))?.state, "queued")
      const stats = yield* a.stats
      assert.strictEqual(stats.recipients.dead, 0)
      assert.strictEqual(stats.messages, 2)
      assert.strictEqual(stats.depth, 2)
    }))

  test("retryNow makes retry-waiting and dead recipients due at once", (q, a) =>
    Effect.gen(function*() {
      const waiting = message({ receivedAt: T0 - 10 })
      const deadOne = message({ receivedAt: T0 - 9 })
      const queued = message({ receivedAt: T0 - 8 })
      yield* q.commit(waiting)
      yield* q.commit(deadOne)
      const l1 = yield* claimOne(q)
      yield* q.settle(l1, [retryAt(l1.recipients[0]!.rcpt, T0 + HOUR, "451 later")])
      const l2 = yield* claimOne(q)
      yield* q.settle(l2, [dead(l2.recipients[0]!.rcpt, "550 no")])
      assert.strictEqual(yield* q.depth, 1)
      yield* assertNothingToClaim(q)

      assert.isTrue(yield* a.retryNow(waiting.id))
      const again = yield* claimOne(q)
      assert.strictEqual(again.id, waiting.id)
      assert.strictEqual(again.recipients[0]?.attempt, 2)

      assert.isTrue(yield* a.retryNow(deadOne.id))
      assert.strictEqual(yield* q.depth, 2, "a replayed dead message is pending again")
      const revived = Option.getOrUndefined(yield* a.get(deadOne.id))
      assert.deepStrictEqual(revived?.recipients.map((r) => [r.state, r.expiresAt]), [["queued", undefined]])
      const replay = yield* claimOne(q)
      assert.strictEqual(replay.id, deadOne.id)
      assert.strictEqual(replay.recipients[0]?.attempt, 2)

      yield* q.commit(queued)
      assert.isFalse(yield* a.retryNow(queued.id), "nothing to retry in a queued message")
      assert.isFalse(yield* a.retryNow("NOSUCHMESSAGE000"))
    }))

  test("remove deletes a message in any state; its lease is lost", (q, a) =>
    Effect.gen(function*() {
      const leased = message({ receivedAt: T0 - 10 })
      const queued = message({ receivedAt: T0 - 9 })
      yield* q.commit(leased)
      yield* q.commit(queued)
      const lease = yield* claimOne(q)
      assert.strictEqual(lease.id, leased.id)
      assert.isTrue(yield* a.remove(queued.id))
      assert.isFalse(yield* a.remove(queued.id))
      assert.strictEqual(yield* q.depth, 1)
      assert.isTrue(Option.isNone(yield* a.get(queued.id)))
      assert.strictEqual((yield* failureReason(a.readMessage(queued.id)))._tag, "NotFound")
      assert.isTrue(yield* a.remove(leased.id))
      assert.strictEqual(yield* q.depth, 0)
      assert.strictEqual((yield* failureReason(deliverAll(q, lease)))._tag, "LeaseLost")
      assert.deepStrictEqual(yield* a.list(), [])
    }))

  /** One message in each of the states retry, dead, inflight, queued (in that arrival order). */
  const populate = (q: Queue) =>
    Effect.gen(function*() {
      const retry = message({ rcpts: ["r1@example.com", "r2@example.com"], receivedAt: T0 - 10 })
      const deadOne = message({ rcpts: ["d@example.com"], receivedAt: T0 - 9 })
      const inflight = message({ rcpts: ["i@example.com"], receivedAt: T0 - 8 })
      const queued = message({ rcpts: ["q1@example.com", "q2@example.com", "q3@example.com"], receivedAt: T0 - 7 })
      yield* q.commit(retry)
      const l1 = yield* claimOne(q)
      yield* q.settle(l1, [delivered("r1@example.com", "250 ok"), retryAt("r2@example.com", T0 + HOUR, "451 later")])
      yield* q.commit(deadOne)
      const l2 = yield* claimOne(q)
      yield* q.settle(l2, [dead("d@example.com", "550 no")])
      yield* q.commit(inflight)
      yield* claimOne(q)
      yield* q.commit(queued)
      return { retry, deadOne, inflight, queued }
    })

  test("get and list report each message's state; list filters by state and honours limit", (q, a) =>
    Effect.gen(function*() {
      const m = yield* populate(q)
      const all = [m.retry.id, m.deadOne.id, m.inflight.id, m.queued.id]
      assert.deepStrictEqual(ids(yield* a.list()), all)
      assert.deepStrictEqual(ids(yield* a.list({ state: "all" })), all)
      assert.deepStrictEqual(ids(yield* a.list({ state: "retry" })), [m.retry.id])
      assert.deepStrictEqual(ids(yield* a.list({ state: "dead" })), [m.deadOne.id])
      assert.deepStrictEqual(ids(yield* a.list({ state: "inflight" })), [m.inflight.id])
      assert.deepStrictEqual(ids(yield* a.list({ state: "queued" })), [m.queued.id])
      assert.deepStrictEqual(ids(yield* a.list({ state: "delivered" })), [])
      assert.deepStrictEqual(ids(yield* a.list({ limit: 2 })), all.slice(0, 2))
      assert.deepStrictEqual(
        (yield* a.list()).map((i) => i.state),
        ["retry", "dead", "inflight", "queued"]
      )
      const info = yield* a.get(m.queued.id)
      if (Option.isNone(info)) return assert.fail("queued message not found")
      assert.strictEqual(info.value.id, m.queued.id)
      assert.deepStrictEqual(info.value.envelope, m.queued.envelope)
      assert.strictEqual(info.value.receivedAt, m.queued.receivedAt)
      assert.strictEqual(info.value.size, m.queued.body.size)
      assert.deepStrictEqual(info.value.recipients.map((r) => [r.rcpt, r.state, r.attempts, r.nextAttemptAt]), [
        ["q1@example.com", "queued", 0, m.queued.receivedAt],
        ["q2@example.com", "queued", 0, m.queued.receivedAt],
        ["q3@example.com", "queued", 0, m.queued.receivedAt]
      ])
      assert.isTrue(Option.isNone(yield* a.get("NOSUCHMESSAGE000")))
    }))

  test("stats counts messages, pending depth and recipients by state", (q, a) =>
    Effect.gen(function*() {
      yield* populate(q)
      const stats = yield* a.stats
      assert.strictEqual(stats.messages, 4)
      assert.strictEqual(stats.depth, 3)
      assert.deepStrictEqual(stats.recipients, { queued: 3, inflight: 1, retry: 1, delivered: 1, dead: 1 })
      assert.strictEqual(yield* q.depth, 3)
    }))

  test("readMessage of an unknown id fails with NotFound", (q, a) =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* failureReason(a.readMessage("NOSUCHMESSAGE000")), {
        _tag: "NotFound",
        id: "NOSUCHMESSAGE000"
      })
    }))
}
