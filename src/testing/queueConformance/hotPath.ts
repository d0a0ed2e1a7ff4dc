/**
 * Conformance, the hot path (`MailQueue`): commit and claim, bodies read back byte for byte,
 * claim order, leases that expire or are released, partial delivery, settles, the depth bound,
 * `nextDueAt`, `awaitWork`, and concurrent claims and commits.
 */
import { assert } from "@effect/vitest"
import { Effect, Fiber, Option, type Scope } from "effect"
import { TestClock } from "effect/testing"
import { dead, delivered, retryAt } from "../../queue/MailQueue.ts"
import {
  assertNothingToClaim,
  type BodyProbe,
  claimOne,
  type ConformanceTest,
  deliverAll,
  failureReason,
  fileBody,
  HOUR,
  ids,
  memoryBody,
  message,
  randomBytes,
  readAll,
  SECOND,
  T0
} from "./support.ts"

export const hotPath = (test: ConformanceTest): void => {
  test("commit then claim returns the message with all its recipients at attempt 1", (q, a) =>
    Effect.gen(function*() {
      const m = message({ rcpts: ["a@example.com", "b@example.com", "c@example.org"] })
      yield* q.commit(m)
      assert.strictEqual(yield* q.depth, 1)
      const lease = yield* claimOne(q, "worker-1", 30 * SECOND)
      assert.strictEqual(lease.id, m.id)
      assert.strictEqual(lease.owner, "worker-1")
      assert.strictEqual(lease.expiresAt, T0 + 30 * SECOND)
      assert.strictEqual(lease.receivedAt, m.receivedAt)
      assert.deepStrictEqual(lease.envelope, m.envelope)
      assert.deepStrictEqual(lease.recipients, [
        { rcpt: "a@example.com", attempt: 1 },
        { rcpt: "b@example.com", attempt: 1 },
        { rcpt: "c@example.org", attempt: 1 }
      ])
      assert.isAbove(lease.token.length, 0)
      const info = yield* a.get(m.id)
      if (Option.isNone(info)) return assert.fail("claimed message not found")
      assert.strictEqual(info.value.state, "inflight")
      assert.deepStrictEqual(info.value.recipients.map((r) => [r.rcpt, r.state, r.attempts]), [
        ["a@example.com", "inflight", 1],
        ["b@example.com", "inflight", 1],
        ["c@example.org", "inflight", 1]
      ])
      assert.strictEqual(yield* q.depth, 1, "a leased message is still pending")
    }))

  const bodies: ReadonlyArray<readonly [string, Effect.Effect<readonly [BodyProbe, Buffer], never, Scope.Scope>]> = [
    ["small in-memory body in several chunks", Effect.sync(() => {
      const chunks = ["Subject: hi\r\n", "\r\n", "line one\r\n", "line two\r\n"]
      return [memoryBody(chunks), Buffer.from(chunks.join(""))] as const
    })],
    ["small file body", Effect.gen(function*() {
      const content = Buffer.from("Subject: from a file\r\n\r\nbody\r\n")
      return [yield* fileBody(content), content] as const
    })],
    ["large in-memory body", Effect.sync(() => {
      const content = randomBytes(600 * 1024, 1)
      const chunks = [content.subarray(0, 100_000), content.subarray(100_000, 400_001), content.subarray(400_001)]
      return [memoryBody(chunks), content] as const
    })],
    ["large file body", Effect.gen(function*() {
      const content = randomBytes(700 * 1024, 2)
      return [yield* fileBody(content), content] as const
    })]
  ]
  for (const [what, make] of bodies) {
    test(`reads back the trace then the body, byte for byte (${what})`, (q, a) =>
      Effect.gen(function*() {
        const [probe, content] = yield* make
        const m = message({ body: probe.body })
        const expected = Buffer.concat([Buffer.from(m.trace), content])
        yield* q.commit(m)
        const stored = yield* a.readMessage(m.id)
        assert.strictEqual(stored.size, expected.length)
        assert.isTrue((yield* readAll(stored)).equals(expected), "readMessage bytes differ")
        assert.isTrue((yield* readAll(stored)).equals(expected), "a second stream must start from the beginning")
        const lease = yield* claimOne(q)
        assert.strictEqual(lease.body.size, expected.length)
        assert.isTrue((yield* readAll(lease.body)).equals(expected), "lease body bytes differ")
        const info = yield* a.get(m.id)
        assert.strictEqual(Option.getOrUndefined(info)?.size, content.length)
        yield* deliverAll(q, lease)
        assert.strictEqual(probe.released(), 1, "the spooled body is released once the queue no longer needs it")
        const gone = yield* failureReason(a.readMessage(m.id))
        assert.strictEqual(gone._tag, "NotFound")
      }))
  }

  test("claims the oldest message first", (q) =>
    Effect.gen(function*() {
      const m1 = message({ receivedAt: T0 - 3 * SECOND })
      const m2 = message({ receivedAt: T0 - 2 * SECOND })
      const m3 = message({ receivedAt: T0 - 1 * SECOND })
      yield* q.commit(m1)
      yield* q.commit(m2)
      yield* q.commit(m3)
      assert.deepStrictEqual(
        [(yield* claimOne(q)).id, (yield* claimOne(q)).id, (yield* claimOne(q)).id],
        [m1.id, m2.id, m3.id]
      )
      yield* assertNothingToClaim(q)
    }))

  test("orders claims by how long a message has been due, not by arrival", (q) =>
    Effect.gen(function*() {
      const old = message({ receivedAt: T0 - 10 })
      yield* q.commit(old)
      const lease = yield* claimOne(q)
      yield* q.settle(lease, [retryAt(lease.recipients[0]!.rcpt, T0 + 50 * SECOND, "451 try later")])
      yield* TestClock.adjust(20 * SECOND)
      const newer = message({ receivedAt: T0 + 20 * SECOND })
      yield* q.commit(newer)
      yield* TestClock.adjust(40 * SECOND)
      // newer has been due since T0+20s, old only since T0+50s.
      assert.strictEqual((yield* claimOne(q)).id, newer.id)
      assert.strictEqual((yield* claimOne(q)).id, old.id)
    }))

  test("a leased message is claimable again only once its lease expired; the old lease is then lost", (q, a) =>
    Effect.gen(function*() {
      const m = message({ rcpts: ["a@example.com", "b@example.com"] })
      yield* q.commit(m)
      const first = yield* claimOne(q, "worker-1", 10 * SECOND)
      yield* assertNothingToClaim(q)
      yield* TestClock.adjust(10 * SECOND - 1)
      yield* assertNothingToClaim(q)
      yield* TestClock.adjust(1)
      // The first worker "crashed": its lease expired and another worker takes the message over.
      const second = yield* claimOne(q, "worker-2", 10 * SECOND)
      assert.strictEqual(second.id, m.id)
      assert.notStrictEqual(second.token, first.token)
      assert.deepStrictEqual(second.recipients, [
        { rcpt: "a@example.com", attempt: 2 },
        { rcpt: "b@example.com", attempt: 2 }
      ])
      assert.strictEqual((yield* failureReason(deliverAll(q, first)))._tag, "LeaseLost")
      assert.strictEqual((yield* failureReason(q.release(first)))._tag, "LeaseLost")
      yield* deliverAll(q, second)
      assert.isTrue(Option.isNone(yield* a.get(m.id)))
    }))

  test("delivered for every recipient removes the message and decrements depth", (q, a) =>
    Effect.gen(function*() {
      const probe = memoryBody(["Subject: x\r\n\r\nbody\r\n"])
      const m = message({ rcpts: ["a@example.com", "b@example.com"], body: probe.body, receivedAt: T0 - 10 })
      const other = message({ receivedAt: T0 - 9 })
      yield* q.commit(m)
      yield* q.commit(other)
      assert.strictEqual(yield* q.depth, 2)
      assert.strictEqual(q.depthUnsafe(), 2, "the synchronous read agrees")
      const lease = yield* claimOne(q)
      assert.strictEqual(lease.id, m.id)
      yield* deliverAll(q, lease)
      assert.strictEqual(yield* q.depth, 1)
      assert.strictEqual(q.depthUnsafe(), 1, "the synchronous read follows settles")
      assert.isTrue(Option.isNone(yield* a.get(m.id)))
      assert.deepStrictEqual(ids(yield* a.list()), [other.id])
      const stats = yield* a.stats
      assert.strictEqual(stats.messages, 1)
      assert.strictEqual(stats.depth, 1)
      assert.strictEqual(stats.recipients.delivered, 0)
      assert.strictEqual(probe.released(), 1)
      assert.strictEqual((yield* failureReason(a.readMessage(m.id)))._tag, "NotFound")
    }))

  test("partial delivery: the retrying recipient comes back at its time, alone, at attempt 2", (q, a) =>
    Effect.gen(function*() {
      const m = message({ rcpts: ["ok@example.com", "later@example.com"] })
      yield* q.commit(m)
      const lease = yield* claimOne(q)
      yield* q.settle(lease, [
        delivered("ok@example.com", "250 2.0.0 done"),
        retryAt("later@example.com", T0 + 60 * SECOND, "451 4.2.0 mailbox busy")
      ])
      const info = yield* a.get(m.id)
      if (Option.isNone(info)) return assert.fail("message vanished after a partial delivery")
      assert.strictEqual(info.value.state, "retry")
      const [ok, later] = info.value.recipients
      assert.deepStrictEqual([ok?.rcpt, ok?.state, ok?.lastReply], ["ok@example.com", "delivered", "250 2.0.0 done"])
      assert.deepStrictEqual(
        [later?.rcpt, later?.state, later?.attempts, later?.nextAttemptAt, later?.lastReply],
        ["later@example.com", "retry", 1, T0 + 60 * SECOND, "451 4.2.0 mailbox busy"]
      )
      assert.strictEqual(yield* q.depth, 1)
      yield* assertNothingToClaim(q)
      yield* TestClock.adjust(60 * SECOND - 1)
      yield* assertNothingToClaim(q)
      yield* TestClock.adjust(1)
      const again = yield* claimOne(q)
      assert.strictEqual(again.id, m.id)
      assert.deepStrictEqual(again.recipients, [{ rcpt: "later@example.com", attempt: 2 }])
      yield* deliverAll(q, again)
      assert.isTrue(Option.isNone(yield* a.get(m.id)))
      assert.strictEqual(yield* q.depth, 0)
    }))

  test("a leased recipient settled with no outcome goes back to the queue, its attempt not counted", (q, a) =>
    Effect.gen(function*() {
      const m = message({ rcpts: ["a@example.com", "b@example.com"] })
      yield* q.commit(m)
      const lease = yield* claimOne(q)
      yield* q.settle(lease, [delivered("a@example.com", "250 ok")])
      const info = Option.getOrUndefined(yield* a.get(m.id))
      assert.deepStrictEqual(info?.recipients.map((r) => [r.rcpt, r.state, r.attempts]), [
        ["a@example.com", "delivered", 1],
        ["b@example.com", "queued", 0]
      ])
      const again = yield* claimOne(q)
      assert.deepStrictEqual(again.recipients, [{ rcpt: "b@example.com", attempt: 1 }])
    }))

  test("release gives the lease back: claimable at once, attempt not counted", (q, a) =>
    Effect.gen(function*() {
      const m = message()
      yield* q.commit(m)
      const first = yield* claimOne(q)
      assert.strictEqual(first.recipients[0]?.attempt, 1)
      yield* q.release(first)
      const info = Option.getOrUndefined(yield* a.get(m.id))
      assert.deepStrictEqual(info?.recipients.map((r) => [r.state, r.attempts]), [["queued", 0]])
      const second = yield* claimOne(q)
      assert.strictEqual(second.id, m.id)
      assert.strictEqual(second.recipients[0]?.attempt, 1)
      assert.strictEqual((yield* failureReason(q.release(first)))._tag, "LeaseLost")
    }))

  test("commit fails with Full at maxDepth, stores nothing, and succeeds again once depth drops", (q, a) =>
    Effect.gen(function*() {
      assert.strictEqual(q.maxDepth, 2)
      yield* q.commit(message({ receivedAt: T0 - 10 }))
      yield* q.commit(message({ receivedAt: T0 - 9 }))
      const third = message({ receivedAt: T0 - 8 })
      const reason = yield* failureReason(q.commit(third))
      assert.deepStrictEqual(reason, { _tag: "Full", depth: 2, maxDepth: 2 })
      assert.isTrue(Option.isNone(yield* a.get(third.id)))
      assert.strictEqual(yield* q.depth, 2)
      // A dead message does not count against the limit.
      const lease = yield* claimOne(q)
      yield* q.settle(lease, [dead(lease.recipients[0]!.rcpt, "550 no")])
      yield* q.commit(third)
      assert.strictEqual(yield* q.depth, 2)
    }), { maxDepth: 2 })

  test("a second commit with the same id fails and keeps the first message", (q, a) =>
    Effect.gen(function*() {
      const first = message({ body: memoryBody(["first\r\n"]).body })
      yield* q.commit(first)
      const reason = yield* failureReason(q.commit({ ...first, body: memoryBody(["second\r\n"]).body }))
      assert.strictEqual(reason._tag, "StorageFailed")
      const stored = yield* readAll(yield* a.readMessage(first.id))
      assert.strictEqual(stored.toString(), first.trace + "first\r\n")
      assert.strictEqual(yield* q.depth, 1)
    }))

  test("an operation happens when its effect runs, not when the method is called; each run is one more", (q, a) =>
    Effect.gen(function*() {
      const first = message({ receivedAt: T0 - 2 * SECOND })
      const second = message({ receivedAt: T0 - SECOND })
      // Built, not run: nothing is stored and nothing is leased.
      const commitFirst = q.commit(first)
      const claim = q.claim({ owner: "worker-1", leaseMs: 60 * SECOND })
      assert.strictEqual(yield* q.depth, 0)
      assert.isTrue(Option.isNone(yield* a.get(first.id)), "calling commit stored the message")
      yield* commitFirst
      assert.strictEqual(yield* q.depth, 1)
      // A claim built before the commit leases what is due when it runs.
      const lease = yield* claim
      if (Option.isNone(lease)) return assert.fail("the claim found nothing")
      assert.strictEqual(lease.value.id, first.id)
      const settle = deliverAll(q, lease.value)
      const leased = yield* a.get(first.id)
      assert.strictEqual(Option.isSome(leased) ? leased.value.state : "gone", "inflight", "calling settle recorded it")
      // The same claim effect run again is another claim: it leases the next message.
      yield* q.commit(second)
      const next = yield* claim
      assert.strictEqual(Option.isSome(next) ? next.value.id : "none", second.id)
      yield* settle
      assert.isTrue(Option.isNone(yield* a.get(first.id)), "the settle, once run, removed the delivered message")
      assert.strictEqual(yield* q.depth, 1)
      assert.isTrue(Option.isNone(yield* claim), "a third run found a message to claim")
    }))

  test("nextDueAt is the earliest time a claim can succeed", (q) =>
    Effect.gen(function*() {
      assert.isTrue(Option.isNone(yield* q.nextDueAt))
      const m = message({ receivedAt: T0 - 5 * SECOND })
      yield* q.commit(m)
      assert.deepStrictEqual(yield* q.nextDueAt, Option.some(T0 - 5 * SECOND))
      const lease = yield* claimOne(q, "worker-1", 30 * SECOND)
      assert.deepStrictEqual(yield* q.nextDueAt, Option.some(T0 + 30 * SECOND), "a leased message is due when its lease expires")
      yield* q.settle(lease, [retryAt(lease.recipients[0]!.rcpt, T0 + 10 * SECOND, "451 later")])
      assert.deepStrictEqual(yield* q.nextDueAt, Option.some(T0 + 10 * SECOND))
      const lease2 = yield* Effect.andThen(TestClock.adjust(10 * SECOND), claimOne(q))
      yield* deliverAll(q, lease2)
      assert.isTrue(Option.isNone(yield* q.nextDueAt))
    }))

  test("awaitWork wakes on commit, and otherwise returns after its timeout", (q) =>
    Effect.gen(function*() {
      const idle = yield* Effect.forkChild(q.awaitWork(10 * SECOND))
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow
      assert.isUndefined(idle.pollUnsafe(), "awaitWork returned with nothing to do")
      yield* TestClock.adjust(10 * SECOND)
      yield* Fiber.join(idle)

      const waiting = yield* Effect.forkChild(q.awaitWork(HOUR))
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow
      assert.isUndefined(waiting.pollUnsafe())
      yield* q.commit(message())
      for (let i = 0; i < 20 && waiting.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
      assert.isDefined(waiting.pollUnsafe(), "commit did not wake the waiting worker")
    }))

  test("awaitWork does not miss a commit that happened while nobody was waiting", (q) =>
    Effect.gen(function*() {
      yield* q.commit(message())
      const late = yield* Effect.forkChild(q.awaitWork(HOUR))
      for (let i = 0; i < 20 && late.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
      assert.isDefined(late.pollUnsafe(), "a worker that checked the queue just before the commit would sleep an hour")
    }))

  test("concurrent claims never lease one message twice", (q) =>
    Effect.gen(function*() {
      const messages = Array.from({ length: 5 }, (_, i) => message({ receivedAt: T0 - 100 + i }))
      yield* Effect.forEach(messages, (m) => q.commit(m), { discard: true })
      const claims = yield* Effect.all(
        Array.from({ length: 10 }, (_, i) => q.claim({ owner: `worker-${i}`, leaseMs: 60 * SECOND })),
        { concurrency: "unbounded" }
      )
      const leased = claims.filter(Option.isSome).map((c) => c.value.id)
      assert.strictEqual(leased.length, 5)
      assert.deepStrictEqual(leased.toSorted(), messages.map((m) => m.id).toSorted())
    }))

  test("concurrent commits are all stored", (q, a) =>
    Effect.gen(function*() {
      const messages = Array.from({ length: 25 }, (_, i) => message({ receivedAt: T0 - 100 + i }))
      yield* Effect.forEach(messages, (m) => q.commit(m), { concurrency: "unbounded", discard: true })
      assert.strictEqual(yield* q.depth, 25)
      assert.deepStrictEqual(ids(yield* a.list()), messages.map((m) => m.id))
    }))
}
