/**
 * Conformance, hold and release (`QueueAdmin.hold`/`unhold`, Postfix's `postsuper -h`/`-H`): a
 * held message is never claimed until released, keeps its recipients' states and times, counts
 * as pending, and shows as held in `get`, `list` and `stats`. A message committed held
 * (`NewMessage.held`, a milter's quarantine) is held from its first instant.
 */
import { assert } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { dead, delivered, retryAt } from "../../queue/MailQueue.ts"
import { assertNothingToClaim, claimOne, type ConformanceTest, deliverAll, HOUR, ids, memoryBody, message, readAll, T0 } from "./support.ts"

export const hold = (test: ConformanceTest): void => {
  test("a held message is not claimed until released, and shows as held meanwhile", (q, a) =>
    Effect.gen(function*() {
      const held = message({ rcpts: ["a@example.com", "b@example.com"], receivedAt: T0 - 10 })
      const other = message({ receivedAt: T0 - 9 })
      yield* q.commit(held)
      assert.isTrue(yield* a.hold(held.id))
      yield* q.commit(other)
      const lease0 = yield* claimOne(q)
      assert.strictEqual(lease0.id, other.id, "the held message is skipped, the next one claimed")
      yield* assertNothingToClaim(q)
      yield* deliverAll(q, lease0)
      assert.strictEqual(yield* q.depth, 1, "a held message is still pending")

      const info = Option.getOrUndefined(yield* a.get(held.id))
      assert.strictEqual(info?.state, "held")
      assert.isTrue(info?.held)
      assert.deepStrictEqual(info?.recipients.map((r) => [r.state, r.attempts]), [["queued", 0], ["queued", 0]])
      assert.deepStrictEqual(ids(yield* a.list({ state: "held" })), [held.id])
      assert.deepStrictEqual(ids(yield* a.list({ state: "queued" })), [])
      assert.strictEqual((yield* a.stats).held, 1)

      yield* TestClock.adjust(HOUR)
      yield* assertNothingToClaim(q)

      assert.isTrue(yield* a.unhold(held.id))
      assert.isFalse(yield* a.unhold(held.id), "releasing a message that is not held does nothing")
      const info2 = Option.getOrUndefined(yield* a.get(held.id))
      assert.deepStrictEqual([info2?.state, info2?.held], ["queued", false])
      assert.strictEqual((yield* a.stats).held, 0)
      const lease = yield* claimOne(q)
      assert.strictEqual(lease.id, held.id)
      assert.deepStrictEqual(lease.recipients, [{ rcpt: "a@example.com", attempt: 1 }, { rcpt: "b@example.com", attempt: 1 }])
      yield* deliverAll(q, lease)
      assert.isTrue(Option.isNone(yield* a.get(held.id)))
    }))

  test("a message committed held is never claimed (not even handed to a busy worker) until released", (q, a) =>
    Effect.gen(function*() {
      // A worker that just claimed: a backend that hands fresh commits straight to its workers
      // would do so now, but not with a held one.
      const warm = message({ receivedAt: T0 - 20 })
      yield* q.commit(warm)
      yield* deliverAll(q, yield* claimOne(q))
      const held = { ...message({ rcpts: ["a@example.com", "b@example.com"], body: memoryBody(["held body\r\n"]).body, receivedAt: T0 - 10 }), held: true }
      yield* q.commit(held)
      yield* assertNothingToClaim(q)
      assert.strictEqual(yield* q.depth, 1, "a held message is pending")
      const info = Option.getOrUndefined(yield* a.get(held.id))
      assert.deepStrictEqual([info?.state, info?.held], ["held", true])
      assert.deepStrictEqual(info?.recipients.map((r) => [r.rcpt, r.state, r.attempts]), [["a@example.com", "queued", 0], ["b@example.com", "queued", 0]])
      assert.deepStrictEqual(ids(yield* a.list({ state: "held" })), [held.id])
      assert.strictEqual((yield* a.stats).held, 1)
      yield* TestClock.adjust(HOUR)
      yield* assertNothingToClaim(q)
      assert.isTrue(yield* a.unhold(held.id))
      const lease = yield* claimOne(q)
      assert.strictEqual(lease.id, held.id)
      assert.deepStrictEqual(lease.recipients, [{ rcpt: "a@example.com", attempt: 1 }, { rcpt: "b@example.com", attempt: 1 }])
      assert.strictEqual((yield* readAll(lease.body)).toString("latin1").endsWith("held body\r\n"), true)
      yield* deliverAll(q, lease)
      assert.strictEqual(yield* q.depth, 0)
    }))

  test("hold and unhold answer false for an unknown message, hold false for one with nothing pending", (q, a) =>
    Effect.gen(function*() {
      assert.isFalse(yield* a.hold("NOSUCHMESSAGE000"))
      assert.isFalse(yield* a.unhold("NOSUCHMESSAGE000"))
      const m = message()
      yield* q.commit(m)
      const lease = yield* claimOne(q)
      yield* q.settle(lease, [dead(lease.recipients[0]!.rcpt, "550 no")])
      assert.isFalse(yield* a.hold(m.id), "a dead message has nothing to hold")
    }))

  test("a retrying message held keeps its time; retry-now does not release it", (q, a) =>
    Effect.gen(function*() {
      const m = message()
      yield* q.commit(m)
      const first = yield* claimOne(q)
      yield* q.settle(first, [retryAt(first.recipients[0]!.rcpt, T0 + HOUR, "451 later")])
      assert.isTrue(yield* a.hold(m.id))
      const info = Option.getOrUndefined(yield* a.get(m.id))
      assert.deepStrictEqual(info?.recipients.map((r) => [r.state, r.attempts, r.nextAttemptAt]), [["retry", 1, T0 + HOUR]])
      assert.strictEqual(info?.state, "held")
      yield* TestClock.adjust(2 * HOUR)
      yield* assertNothingToClaim(q)
      yield* a.retryNow(m.id)
      yield* assertNothingToClaim(q)
      assert.strictEqual(Option.getOrUndefined(yield* a.get(m.id))?.state, "held")
      assert.isTrue(yield* a.unhold(m.id))
      const again = yield* claimOne(q)
      assert.deepStrictEqual(again.recipients, [{ rcpt: first.recipients[0]!.rcpt, attempt: 2 }])
    }))

  test("a message held while leased: the delivery under way settles, what it leaves pending stays held", (q, a) =>
    Effect.gen(function*() {
      const m = message({ rcpts: ["ok@example.com", "later@example.com", "back@example.com"] })
      yield* q.commit(m)
      const lease = yield* claimOne(q)
      assert.isTrue(yield* a.hold(m.id))
      assert.strictEqual(Option.getOrUndefined(yield* a.get(m.id))?.state, "inflight", "a delivery under way shows as such")
      yield* q.settle(lease, [
        delivered("ok@example.com", "250 ok"),
        retryAt("later@example.com", T0 + 1000, "451 later")
      ])
      const info = Option.getOrUndefined(yield* a.get(m.id))
      assert.strictEqual(info?.state, "held")
      assert.deepStrictEqual(info?.recipients.map((r) => [r.rcpt, r.state]), [
        ["ok@example.com", "delivered"],
        ["later@example.com", "retry"],
        ["back@example.com", "queued"]
      ])
      yield* TestClock.adjust(HOUR)
      yield* assertNothingToClaim(q)
      assert.isTrue(yield* a.unhold(m.id))
      const again = yield* claimOne(q)
      assert.deepStrictEqual(again.recipients.map((r) => r.rcpt).toSorted(), ["back@example.com", "later@example.com"])
    }))

  test("a lease given back on a held message leaves it held and unclaimed", (q, a) =>
    Effect.gen(function*() {
      const m = message()
      yield* q.commit(m)
      const lease = yield* claimOne(q)
      assert.isTrue(yield* a.hold(m.id))
      yield* q.release(lease)
      yield* assertNothingToClaim(q)
      const info = Option.getOrUndefined(yield* a.get(m.id))
      assert.deepStrictEqual([info?.state, info?.recipients[0]?.attempts], ["held", 0])
    }))
}
