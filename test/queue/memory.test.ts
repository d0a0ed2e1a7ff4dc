/**
 * The in-process queue against the shared `MailQueue` conformance kit, and its claim order under
 * churn: fresh messages wait in a heap while the rest are scanned (src/queue/MemoryQueue.ts), and
 * every claim must still take what a scan of all messages would.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { conformance } from "../../src/testing/QueueConformance.ts"
import { claimOne, message, SECOND, T0 } from "../../src/testing/queueConformance/support.ts"
import { type Lease, retryAt, delivered } from "../../src/queue/MailQueue.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import * as Priority from "../../src/protocol/Priority.ts"

conformance("memory", (options) => MemoryQueue.layer(options))

/** A small deterministic generator (the test must fail the same way every run). */
const lcg = (seed: number) => () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31

describe("memory queue claim order", () => {
  it.effect("matches a full scan's order through commits, retries, holds and reprioritising", () =>
    Effect.scoped(Effect.gen(function*() {
      yield* TestClock.setTime(T0)
      const { admin, queue: q } = yield* MemoryQueue.make({ priorityMaxWaitMs: 0 })
      const rnd = lcg(7)
      // What a full scan would pick: highest priority, then earliest due, then commit order.
      interface Known { readonly id: string; readonly seq: number; priority: number; dueAt: number; held: boolean; leased: boolean }
      const known = new Map<string, Known>()
      let seq = 0
      const expected = (now: number) =>
        [...known.values()]
          .filter((k) => !k.held && !k.leased && k.dueAt <= now)
          .sort((a, b) => b.priority - a.priority || a.dueAt - b.dueAt || a.seq - b.seq)[0]?.id
      const leases: Array<Lease> = []
      for (let round = 0; round < 400; round++) {
        const now = T0 + round * SECOND
        yield* TestClock.setTime(now)
        const roll = rnd()
        if (roll < 0.45) {
          // Commits, some received "earlier" or at the same instant, some not at normal priority.
          const receivedAt = now - Math.floor(rnd() * 3) * SECOND
          const priority = rnd() < 0.2 ? Math.floor(rnd() * 5) - 2 : undefined
          const m = message({ receivedAt, ...(priority === undefined ? {} : { priority }) })
          yield* q.commit(m)
          known.set(m.id, { id: m.id, seq: ++seq, priority: priority ?? Priority.normal, dueAt: receivedAt, held: false, leased: false })
        } else if (roll < 0.75) {
          const want = expected(now)
          const got = yield* q.claim({ owner: "w", leaseMs: 3_600 * SECOND })
          assert.strictEqual(Option.isSome(got) ? got.value.id : undefined, want, `round ${round}`)
          if (Option.isSome(got)) {
            known.get(got.value.id)!.leased = true
            leases.push(got.value)
          }
        } else if (roll < 0.9 && leases.length > 0) {
          // Settle a lease: delivered, or a retry due a little later.
          const lease = leases.splice(Math.floor(rnd() * leases.length), 1)[0]!
          const k = known.get(lease.id)!
          if (rnd() < 0.5) {
            yield* q.settle(lease, lease.recipients.map((r) => delivered(r.rcpt, "250 ok")))
            known.delete(lease.id)
          } else {
            const at = now + Math.floor(rnd() * 4) * SECOND
            yield* q.settle(lease, lease.recipients.map((r) => retryAt(r.rcpt, at, "451 later")))
            k.leased = false
            k.dueAt = at
          }
        } else {
          // An operator holds, releases or reprioritises a waiting message.
          const waiting = [...known.values()].filter((k) => !k.leased)
          const k = waiting[Math.floor(rnd() * waiting.length)]
          if (k === undefined) continue
          if (k.held) {
            yield* admin.unhold(k.id)
            k.held = false
          } else if (rnd() < 0.5) {
            yield* admin.hold(k.id)
            k.held = true
          } else {
            const priority = Math.floor(rnd() * 5) - 2
            yield* admin.setPriority(k.id, priority)
            k.priority = priority
          }
        }
      }
      // Drain what is left, in order.
      yield* TestClock.setTime(T0 + 1_000 * SECOND)
      for (const k of known.values()) if (k.held) yield* admin.unhold(k.id)
      for (const k of known.values()) k.held = false
      for (;;) {
        const want = expected(T0 + 1_000 * SECOND)
        if (want === undefined) break
        assert.strictEqual((yield* claimOne(q)).id, want)
        known.get(want)!.leased = true
      }
    })))
})
