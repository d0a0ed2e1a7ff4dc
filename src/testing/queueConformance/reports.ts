/**
 * Conformance, reports committed with a settle (`MailQueue.settle`'s `extras`): a bounce or a
 * delay notice is recorded in the same transaction as the outcome that caused it — both or
 * neither — so no crash between the two can lose it; and a delay notice's mark on the original
 * (`delayNotified`) is kept and carried by its next lease.
 */
import { assert } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { dead, retryAt, type NewMessage } from "../../queue/MailQueue.ts"
import * as MessageId from "../../queue/MessageId.ts"
import {
  assertNothingToClaim,
  claimOne,
  type ConformanceTest,
  deliverAll,
  failureReason,
  fileBody,
  HOUR,
  memoryBody,
  randomBytes,
  readAll,
  SECOND,
  T0
} from "./support.ts"

/** A report to the original's sender, as the dispatcher makes one (null sender). */
const report = (at: number, body = memoryBody(["Subject: Undelivered Mail Returned to Sender\r\n\r\nreport\r\n"]).body): NewMessage => ({
  id: MessageId.make(at),
  envelope: { mailFrom: "", rcptTo: ["sender@example.net"], helo: "mx.example.com", clientAddress: "127.0.0.1", secure: false, listener: "bounce" },
  trace: "",
  body,
  receivedAt: at
})

export const reports = (test: ConformanceTest): void => {
  test("a settle commits its reports with the outcome: both are recorded, the report is queued", (q, a) =>
    Effect.gen(function*() {
      const original = { ...report(T0 - 10), id: MessageId.make(T0 - 10), envelope: { ...report(T0).envelope, mailFrom: "sender@example.net", rcptTo: ["gone@example.com"] } }
      yield* q.commit(original)
      const lease = yield* claimOne(q)
      // Two reports, one with a body large enough to be stored apart from its row.
      const big = randomBytes(300 * 1024, 7)
      const small = report(T0 - 2)
      const large = report(T0 - 1, memoryBody([Buffer.from("Subject: big\r\n\r\n"), big]).body)
      yield* q.settle(lease, [dead("gone@example.com", "550 5.1.1 no such user")], { reports: [small, large] })
      assert.strictEqual((yield* a.get(original.id)).pipe(Option.getOrUndefined)?.state, "dead")
      assert.strictEqual(yield* q.depth, 2, "the reports are pending")
      const first = yield* claimOne(q)
      assert.strictEqual(first.id, small.id)
      assert.deepStrictEqual([first.envelope.mailFrom, first.recipients], ["", [{ rcpt: "sender@example.net", attempt: 1 }]])
      yield* deliverAll(q, first)
      const second = yield* claimOne(q)
      assert.strictEqual(second.id, large.id)
      assert.isTrue((yield* readAll(second.body)).subarray(-big.length).equals(big), "the large report's body reads back whole")
      yield* deliverAll(q, second)
      assert.strictEqual(yield* q.depth, 0)
    }))

  test("a settle whose lease was lost records neither the outcome nor its reports", (q, a) =>
    Effect.gen(function*() {
      const original = { ...report(T0 - 10), envelope: { ...report(T0).envelope, mailFrom: "sender@example.net", rcptTo: ["gone@example.com"] } }
      yield* q.commit(original)
      const stale = yield* claimOne(q, "worker-1", 10 * SECOND)
      yield* TestClock.adjust(11 * SECOND)
      const current = yield* claimOne(q, "worker-2")
      const bounce = report(T0 + 20 * SECOND)
      const refused = yield* failureReason(q.settle(stale, [dead("gone@example.com", "550 no")], { reports: [bounce] }))
      assert.strictEqual(refused._tag, "LeaseLost")
      assert.isTrue(Option.isNone(yield* a.get(bounce.id)), "no report without its settle")
      assert.strictEqual((yield* a.get(original.id)).pipe(Option.getOrUndefined)?.recipients[0]?.state, "inflight")
      assert.strictEqual(yield* q.depth, 1)
      yield* q.settle(current, [dead("gone@example.com", "550 no")], { reports: [bounce] })
      assert.isTrue(Option.isSome(yield* a.get(bounce.id)))
    }))

  test("a report whose id is taken fails the settle: the outcome is not recorded either", (q, a) =>
    Effect.gen(function*() {
      const original = { ...report(T0 - 10), envelope: { ...report(T0).envelope, mailFrom: "sender@example.net", rcptTo: ["gone@example.com"] } }
      const other = report(T0 - 5)
      yield* q.commit(original)
      yield* q.commit(other)
      const lease = yield* claimOne(q)
      assert.strictEqual(lease.id, original.id)
      const clash = { ...report(T0), id: other.id }
      const refused = yield* failureReason(q.settle(lease, [dead("gone@example.com", "550 no")], { reports: [clash] }))
      assert.strictEqual(refused._tag, "StorageFailed")
      assert.strictEqual((yield* a.get(original.id)).pipe(Option.getOrUndefined)?.recipients[0]?.state, "inflight", "the outcome was not recorded")
    }))

  test("delayNotified marks the stored envelope, and the next lease carries it", (q, a) =>
    Effect.gen(function*() {
      const original = { ...report(T0 - 10), envelope: { ...report(T0).envelope, mailFrom: "sender@example.net", rcptTo: ["slow@example.com"] } }
      yield* q.commit(original)
      const lease = yield* claimOne(q)
      assert.isUndefined(lease.envelope.delayNotified)
      const notice = report(T0)
      yield* q.settle(lease, [retryAt("slow@example.com", T0 + HOUR, "451 4.4.1 later")], { reports: [notice], delayNotified: T0 })
      assert.strictEqual((yield* a.get(original.id)).pipe(Option.getOrUndefined)?.envelope.delayNotified, T0)
      const noticeLease = yield* claimOne(q)
      assert.strictEqual(noticeLease.id, notice.id)
      yield* deliverAll(q, noticeLease)
      yield* assertNothingToClaim(q)
      yield* TestClock.adjust(HOUR)
      const again = yield* claimOne(q)
      assert.strictEqual(again.id, original.id)
      assert.strictEqual(again.envelope.delayNotified, T0)
      yield* deliverAll(q, again)
    }))

  test("a report with a body in a spool file is stored like a commit's", (q) =>
    Effect.gen(function*() {
      const original = { ...report(T0 - 10), envelope: { ...report(T0).envelope, mailFrom: "sender@example.net", rcptTo: ["gone@example.com"] } }
      yield* q.commit(original)
      const lease = yield* claimOne(q)
      const content = Buffer.concat([Buffer.from("Subject: spooled\r\n\r\n"), randomBytes(280 * 1024, 11)])
      const spooled = report(T0, (yield* fileBody(content)).body)
      yield* q.settle(lease, [dead("gone@example.com", "550 no")], { reports: [spooled] })
      const got = yield* claimOne(q)
      assert.strictEqual(got.id, spooled.id)
      assert.isTrue((yield* readAll(got.body)).equals(content))
    }))
}
