/**
 * The `MailQueue` conformance kit: one set of tests every backend must pass, so the memory,
 * SQLite and PostgreSQL queues keep exactly the same semantics (claim order, leases, partial
 * delivery, retries, dead letters, depth, wake-ups).
 *
 * A backend's test file calls `conformance(name, makeLayer)`; `makeLayer` must return a fresh,
 * empty queue on every call (a new temp directory, schema...). Tests run under `TestClock`, so
 * the backend must take time from Effect's `Clock`.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, type Layer, Option, type Scope } from "effect"
import { TestClock } from "effect/testing"
import type { Envelope } from "../protocol/Envelope.ts"
import type { SpooledBody } from "../spool/SpooledBody.ts"
import * as BodyStream from "../queue/internal/bodyStream.ts"
import {
  dead,
  delivered,
  type Lease,
  MailQueue,
  type MessageBody,
  type NewMessage,
  type QueueOptions,
  retryAt
} from "../queue/MailQueue.ts"
import type { MailQueueError, MailQueueErrorReason } from "../queue/MailQueueError.ts"
import * as MessageId from "../queue/MessageId.ts"

/** Builds a fresh, empty queue with these options (the rest at their defaults). */
export type MakeQueueLayer<E> = (options: Partial<QueueOptions>) => Layer.Layer<MailQueue, E>

type Queue = MailQueue["Service"]

/** Test time starts here (not at 0) so that time arithmetic bugs cannot hide behind zeros. */
export const T0 = Date.UTC(2026, 0, 1)

const SECOND = 1000
const HOUR = 3600 * SECOND

export const envelope = (rcptTo: ReadonlyArray<string>): Envelope => ({
  mailFrom: "sender@example.net",
  rcptTo,
  helo: "client.example.net",
  clientAddress: "192.0.2.10",
  secure: false,
  listener: "mx"
})

/** A body plus a count of how often the queue released it. */
export interface BodyProbe {
  readonly body: SpooledBody
  readonly released: () => number
}

export const memoryBody = (chunks: ReadonlyArray<string | Uint8Array>): BodyProbe => {
  let released = 0
  const bytes = chunks.map((c) => (typeof c === "string" ? Buffer.from(c, "utf8") : c))
  return {
    body: {
      _tag: "InMemory",
      size: bytes.reduce((n, c) => n + c.byteLength, 0),
      chunks: bytes,
      release: Effect.sync(() => {
        released++
      })
    },
    released: () => released
  }
}

/** A spool file in a temp directory removed with the scope; releasing removes the file, as the spool does. */
export const fileBody = (content: Uint8Array, parent: string = tmpdir()): Effect.Effect<BodyProbe, never, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(parent, "incoming-spool-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const path = join(dir, "body.spool")
    writeFileSync(path, content)
    let released = 0
    return {
      body: {
        _tag: "File",
        size: content.byteLength,
        path,
        release: Effect.sync(() => {
          released++
          rmSync(path, { force: true })
        })
      },
      released: () => released
    }
  })

export const message = (options: {
  readonly rcpts?: ReadonlyArray<string>
  readonly receivedAt?: number
  readonly body?: SpooledBody
  readonly trace?: string
  readonly id?: string
} = {}): NewMessage => {
  const receivedAt = options.receivedAt ?? T0
  return {
    id: options.id ?? MessageId.make(receivedAt),
    envelope: envelope(options.rcpts ?? ["rcpt@example.com"]),
    trace: options.trace ?? "Received: from client.example.net by mx.example.com; test\r\n",
    body: options.body ?? memoryBody(["Subject: test\r\n\r\nhello\r\n"]).body,
    receivedAt
  }
}

export const readAll = (body: MessageBody): Effect.Effect<Buffer> => Effect.promise(() => BodyStream.collect(body.stream()))

const claimOne = (q: Queue, owner = "worker-1", leaseMs = 60 * SECOND) =>
  Effect.gen(function*() {
    const claimed = yield* q.claim({ owner, leaseMs })
    if (Option.isNone(claimed)) return assert.fail("expected a message to claim")
    return claimed.value
  })

const assertNothingToClaim = (q: Queue) =>
  Effect.gen(function*() {
    const claimed = yield* q.claim({ owner: "worker-x", leaseMs: 60 * SECOND })
    assert.isTrue(Option.isNone(claimed), `expected nothing to claim, got ${Option.isSome(claimed) ? claimed.value.id : ""}`)
  })

const failureReason = <A>(effect: Effect.Effect<A, MailQueueError>): Effect.Effect<MailQueueErrorReason> =>
  Effect.matchEffect(effect, {
    onSuccess: () => Effect.sync(() => assert.fail("expected the operation to fail")),
    onFailure: (e) => Effect.succeed(e.reason)
  })

const deliverAll = (q: Queue, lease: Lease) => q.settle(lease, lease.recipients.map((r) => delivered(r.rcpt, "250 ok")))

const ids = (infos: ReadonlyArray<{ readonly id: string }>) => infos.map((i) => i.id)

const randomBytes = (n: number, seed: number): Buffer => {
  const out = Buffer.alloc(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    out[i] = x >> 16
  }
  return out
}

export const conformance = <E>(name: string, makeLayer: MakeQueueLayer<E>): void => {
  const withQueue = <A, E2>(
    options: Partial<QueueOptions>,
    body: (q: Queue) => Effect.Effect<A, E2, Scope.Scope>
  ): Effect.Effect<A, E | E2, Scope.Scope> =>
    Effect.gen(function*() {
      yield* TestClock.setTime(T0)
      return yield* body(yield* MailQueue)
    }).pipe(Effect.provide(makeLayer(options)))

  const test = <A, E2>(title: string, body: (q: Queue) => Effect.Effect<A, E2, Scope.Scope>, options: Partial<QueueOptions> = {}) =>
    it.effect(title, () => withQueue(options, body))

  describe(`MailQueue conformance: ${name}`, () => {
    test("commit then claim returns the message with all its recipients at attempt 1", (q) =>
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
        const info = yield* q.get(m.id)
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
      test(`reads back the trace then the body, byte for byte (${what})`, (q) =>
        Effect.gen(function*() {
          const [probe, content] = yield* make
          const m = message({ body: probe.body })
          const expected = Buffer.concat([Buffer.from(m.trace), content])
          yield* q.commit(m)
          const stored = yield* q.readMessage(m.id)
          assert.strictEqual(stored.size, expected.length)
          assert.isTrue((yield* readAll(stored)).equals(expected), "readMessage bytes differ")
          assert.isTrue((yield* readAll(stored)).equals(expected), "a second stream must start from the beginning")
          const lease = yield* claimOne(q)
          assert.strictEqual(lease.body.size, expected.length)
          assert.isTrue((yield* readAll(lease.body)).equals(expected), "lease body bytes differ")
          const info = yield* q.get(m.id)
          assert.strictEqual(Option.getOrUndefined(info)?.size, content.length)
          yield* deliverAll(q, lease)
          assert.strictEqual(probe.released(), 1, "the spooled body is released once the queue no longer needs it")
          const gone = yield* failureReason(q.readMessage(m.id))
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

    test("a leased message is claimable again only once its lease expired; the old lease is then lost", (q) =>
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
        assert.isTrue(Option.isNone(yield* q.get(m.id)))
      }))

    test("delivered for every recipient removes the message and decrements depth", (q) =>
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
        assert.isTrue(Option.isNone(yield* q.get(m.id)))
        assert.deepStrictEqual(ids(yield* q.list()), [other.id])
        const stats = yield* q.stats
        assert.strictEqual(stats.messages, 1)
        assert.strictEqual(stats.depth, 1)
        assert.strictEqual(stats.recipients.delivered, 0)
        assert.strictEqual(probe.released(), 1)
        assert.strictEqual((yield* failureReason(q.readMessage(m.id)))._tag, "NotFound")
      }))

    test("partial delivery: the retrying recipient comes back at its time, alone, at attempt 2", (q) =>
      Effect.gen(function*() {
        const m = message({ rcpts: ["ok@example.com", "later@example.com"] })
        yield* q.commit(m)
        const lease = yield* claimOne(q)
        yield* q.settle(lease, [
          delivered("ok@example.com", "250 2.0.0 done"),
          retryAt("later@example.com", T0 + 60 * SECOND, "451 4.2.0 mailbox busy")
        ])
        const info = yield* q.get(m.id)
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
        assert.isTrue(Option.isNone(yield* q.get(m.id)))
        assert.strictEqual(yield* q.depth, 0)
      }))

    test("a leased recipient settled with no outcome goes back to the queue, its attempt not counted", (q) =>
      Effect.gen(function*() {
        const m = message({ rcpts: ["a@example.com", "b@example.com"] })
        yield* q.commit(m)
        const lease = yield* claimOne(q)
        yield* q.settle(lease, [delivered("a@example.com", "250 ok")])
        const info = Option.getOrUndefined(yield* q.get(m.id))
        assert.deepStrictEqual(info?.recipients.map((r) => [r.rcpt, r.state, r.attempts]), [
          ["a@example.com", "delivered", 1],
          ["b@example.com", "queued", 0]
        ])
        const again = yield* claimOne(q)
        assert.deepStrictEqual(again.recipients, [{ rcpt: "b@example.com", attempt: 1 }])
      }))

    test("dead letters are kept and listed as dead, and purged only once their TTL passed", (q) =>
      Effect.gen(function*() {
        const m = message({ rcpts: ["gone@example.com"] })
        yield* q.commit(m)
        const lease = yield* claimOne(q)
        yield* q.settle(lease, [dead("gone@example.com", "550 5.1.1 no such user")])
        const info = Option.getOrUndefined(yield* q.get(m.id))
        assert.strictEqual(info?.state, "dead")
        assert.deepStrictEqual(
          info?.recipients.map((r) => [r.state, r.lastReply, r.expiresAt]),
          [["dead", "550 5.1.1 no such user", T0 + HOUR]]
        )
        assert.strictEqual(yield* q.depth, 0, "a dead message is not pending")
        yield* assertNothingToClaim(q)
        assert.deepStrictEqual(ids(yield* q.list({ state: "dead" })), [m.id])
        assert.deepStrictEqual(ids(yield* q.list({ state: "queued" })), [])
        assert.strictEqual(yield* q.purgeExpired, 0)
        yield* TestClock.adjust(HOUR - 1)
        assert.strictEqual(yield* q.purgeExpired, 0)
        assert.isTrue(Option.isSome(yield* q.get(m.id)), "purged before its TTL")
        yield* TestClock.adjust(1)
        assert.strictEqual(yield* q.purgeExpired, 1)
        assert.isTrue(Option.isNone(yield* q.get(m.id)))
        assert.deepStrictEqual(yield* q.list(), [])
        assert.strictEqual((yield* q.stats).messages, 0)
      }), { deadLetterTtlMs: HOUR })

    test("purgeDead removes every dead recipient now and keeps the pending ones", (q) =>
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
        assert.strictEqual((yield* q.stats).recipients.dead, 2)
        assert.strictEqual(yield* q.purgeDead, 2)
        assert.isTrue(Option.isNone(yield* q.get(m1.id)), "a message left with only delivered recipients is removed")
        assert.deepStrictEqual(
          Option.getOrUndefined(yield* q.get(m2.id))?.recipients.map((r) => [r.rcpt, r.state]),
          [["retry@example.com", "retry"]]
        )
        assert.strictEqual(Option.getOrUndefined(yield* q.get(m3.id))?.state, "queued")
        const stats = yield* q.stats
        assert.strictEqual(stats.recipients.dead, 0)
        assert.strictEqual(stats.messages, 2)
        assert.strictEqual(stats.depth, 2)
      }))

    test("release gives the lease back: claimable at once, attempt not counted", (q) =>
      Effect.gen(function*() {
        const m = message()
        yield* q.commit(m)
        const first = yield* claimOne(q)
        assert.strictEqual(first.recipients[0]?.attempt, 1)
        yield* q.release(first)
        const info = Option.getOrUndefined(yield* q.get(m.id))
        assert.deepStrictEqual(info?.recipients.map((r) => [r.state, r.attempts]), [["queued", 0]])
        const second = yield* claimOne(q)
        assert.strictEqual(second.id, m.id)
        assert.strictEqual(second.recipients[0]?.attempt, 1)
        assert.strictEqual((yield* failureReason(q.release(first)))._tag, "LeaseLost")
      }))

    test("retryNow makes retry-waiting and dead recipients due at once", (q) =>
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

        assert.isTrue(yield* q.retryNow(waiting.id))
        const again = yield* claimOne(q)
        assert.strictEqual(again.id, waiting.id)
        assert.strictEqual(again.recipients[0]?.attempt, 2)

        assert.isTrue(yield* q.retryNow(deadOne.id))
        assert.strictEqual(yield* q.depth, 2, "a replayed dead message is pending again")
        const revived = Option.getOrUndefined(yield* q.get(deadOne.id))
        assert.deepStrictEqual(revived?.recipients.map((r) => [r.state, r.expiresAt]), [["queued", undefined]])
        const replay = yield* claimOne(q)
        assert.strictEqual(replay.id, deadOne.id)
        assert.strictEqual(replay.recipients[0]?.attempt, 2)

        yield* q.commit(queued)
        assert.isFalse(yield* q.retryNow(queued.id), "nothing to retry in a queued message")
        assert.isFalse(yield* q.retryNow("NOSUCHMESSAGE000"))
      }))

    test("remove deletes a message in any state; its lease is lost", (q) =>
      Effect.gen(function*() {
        const leased = message({ receivedAt: T0 - 10 })
        const queued = message({ receivedAt: T0 - 9 })
        yield* q.commit(leased)
        yield* q.commit(queued)
        const lease = yield* claimOne(q)
        assert.strictEqual(lease.id, leased.id)
        assert.isTrue(yield* q.remove(queued.id))
        assert.isFalse(yield* q.remove(queued.id))
        assert.strictEqual(yield* q.depth, 1)
        assert.isTrue(Option.isNone(yield* q.get(queued.id)))
        assert.strictEqual((yield* failureReason(q.readMessage(queued.id)))._tag, "NotFound")
        assert.isTrue(yield* q.remove(leased.id))
        assert.strictEqual(yield* q.depth, 0)
        assert.strictEqual((yield* failureReason(deliverAll(q, lease)))._tag, "LeaseLost")
        assert.deepStrictEqual(yield* q.list(), [])
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

    test("get and list report each message's state; list filters by state and honours limit", (q) =>
      Effect.gen(function*() {
        const m = yield* populate(q)
        const all = [m.retry.id, m.deadOne.id, m.inflight.id, m.queued.id]
        assert.deepStrictEqual(ids(yield* q.list()), all)
        assert.deepStrictEqual(ids(yield* q.list({ state: "all" })), all)
        assert.deepStrictEqual(ids(yield* q.list({ state: "retry" })), [m.retry.id])
        assert.deepStrictEqual(ids(yield* q.list({ state: "dead" })), [m.deadOne.id])
        assert.deepStrictEqual(ids(yield* q.list({ state: "inflight" })), [m.inflight.id])
        assert.deepStrictEqual(ids(yield* q.list({ state: "queued" })), [m.queued.id])
        assert.deepStrictEqual(ids(yield* q.list({ state: "delivered" })), [])
        assert.deepStrictEqual(ids(yield* q.list({ limit: 2 })), all.slice(0, 2))
        assert.deepStrictEqual(
          (yield* q.list()).map((i) => i.state),
          ["retry", "dead", "inflight", "queued"]
        )
        const info = yield* q.get(m.queued.id)
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
        assert.isTrue(Option.isNone(yield* q.get("NOSUCHMESSAGE000")))
      }))

    test("stats counts messages, pending depth and recipients by state", (q) =>
      Effect.gen(function*() {
        yield* populate(q)
        const stats = yield* q.stats
        assert.strictEqual(stats.messages, 4)
        assert.strictEqual(stats.depth, 3)
        assert.deepStrictEqual(stats.recipients, { queued: 3, inflight: 1, retry: 1, delivered: 1, dead: 1 })
        assert.strictEqual(yield* q.depth, 3)
      }))

    test("commit fails with Full at maxDepth, stores nothing, and succeeds again once depth drops", (q) =>
      Effect.gen(function*() {
        assert.strictEqual(q.maxDepth, 2)
        yield* q.commit(message({ receivedAt: T0 - 10 }))
        yield* q.commit(message({ receivedAt: T0 - 9 }))
        const third = message({ receivedAt: T0 - 8 })
        const reason = yield* failureReason(q.commit(third))
        assert.deepStrictEqual(reason, { _tag: "Full", depth: 2, maxDepth: 2 })
        assert.isTrue(Option.isNone(yield* q.get(third.id)))
        assert.strictEqual(yield* q.depth, 2)
        // A dead message does not count against the limit.
        const lease = yield* claimOne(q)
        yield* q.settle(lease, [dead(lease.recipients[0]!.rcpt, "550 no")])
        yield* q.commit(third)
        assert.strictEqual(yield* q.depth, 2)
      }), { maxDepth: 2 })

    test("a second commit with the same id fails and keeps the first message", (q) =>
      Effect.gen(function*() {
        const first = message({ body: memoryBody(["first\r\n"]).body })
        yield* q.commit(first)
        const reason = yield* failureReason(q.commit({ ...first, body: memoryBody(["second\r\n"]).body }))
        assert.strictEqual(reason._tag, "StorageFailed")
        const stored = yield* readAll(yield* q.readMessage(first.id))
        assert.strictEqual(stored.toString(), first.trace + "first\r\n")
        assert.strictEqual(yield* q.depth, 1)
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

    test("concurrent commits are all stored", (q) =>
      Effect.gen(function*() {
        const messages = Array.from({ length: 25 }, (_, i) => message({ receivedAt: T0 - 100 + i }))
        yield* Effect.forEach(messages, (m) => q.commit(m), { concurrency: "unbounded", discard: true })
        assert.strictEqual(yield* q.depth, 25)
        assert.deepStrictEqual(ids(yield* q.list()), messages.map((m) => m.id))
      }))

    test("readMessage of an unknown id fails with NotFound", (q) =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* failureReason(q.readMessage("NOSUCHMESSAGE000")), {
          _tag: "NotFound",
          id: "NOSUCHMESSAGE000"
        })
      }))
  })
}
