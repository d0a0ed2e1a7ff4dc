/**
 * Two separate processes claiming from one PostgreSQL queue (`test/support/pgClaimWorker.ts`, 4
 * workers each, leases of 400 ms and no heartbeat; every 10th claim stalls past its lease, as a
 * paused node would). From what each process reports:
 * - no message is leased twice while a lease on it is valid: a later claim of a message comes
 *   after the earlier lease ended (settled) or expired;
 * - a stalled owner's settle after another process took the message over is refused (fencing);
 * - every message is delivered exactly once, and both processes did claim.
 * Both processes run on this machine, so their clocks are one clock.
 */
import { spawn } from "node:child_process"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"
import { message } from "../../src/testing/QueueConformance.ts"
import type { ClaimEvent, SettleEvent } from "../support/pgClaimWorker.ts"
import * as Pg from "../support/postgres.ts"

const MESSAGES = 300
const worker = new URL("../support/pgClaimWorker.ts", import.meta.url).pathname

/** Runs one worker process to its end (killed by its PID after 120 s); its events. */
const runWorker = (url: string, nodeId: string) =>
  Effect.callback<ReadonlyArray<ClaimEvent | SettleEvent>, Error>((resume) => {
    const child = spawn(process.execPath, [worker, url, nodeId, "4", "400", "10"], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000)
    child.stdout.on("data", (c: Buffer) => (out += c.toString()))
    child.stderr.on("data", (c: Buffer) => (err += c.toString()))
    child.on("close", (code) => {
      clearTimeout(timer)
      if (code !== 0) return resume(Effect.fail(new Error(`${nodeId} exited with ${String(code)}:\n${err}\n${out.slice(-2000)}`)))
      const events = out.split("\n").filter((l) => l.startsWith("{\"kind\"")).map((l) => JSON.parse(l) as ClaimEvent | SettleEvent)
      resume(Effect.succeed(events))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    })
  })

describe.skipIf(!Pg.available)("PostgreSQL queue: two processes claiming from one database", () => {
  it.live("no message leased twice while its lease is valid; stale settles refused; each delivered once", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const seed = yield* PgQueue.make({ url: Redacted.make(url), nodeId: "seed", heartbeat: false, maintenanceIntervalMs: 0 })
      const now = Date.now()
      yield* Effect.forEach(Array.from({ length: MESSAGES }, (_, i) => message({ receivedAt: now - MESSAGES + i })), (m) => seed.queue.commit(m), {
        concurrency: 20,
        discard: true
      })
      const [a, b] = yield* Effect.all([runWorker(url, "proc-a"), runWorker(url, "proc-b")], { concurrency: 2 })
      const events = [...a, ...b]
      const claims = events.filter((e): e is ClaimEvent => e.kind === "claim")
      const settles = new Map(events.filter((e): e is SettleEvent => e.kind === "settle").map((s) => [s.token, s]))

      let takeovers = 0
      let refused = 0
      const byMessage = new Map<string, Array<ClaimEvent>>()
      for (const c of claims) byMessage.set(c.id, [...(byMessage.get(c.id) ?? []), c])
      for (const [id, list] of byMessage) {
        const ordered = list.toSorted((x, y) => Number(BigInt(x.token) - BigInt(y.token)))
        for (let i = 1; i < ordered.length; i++) {
          const before = ordered[i - 1]!
          const next = ordered[i]!
          const s = settles.get(before.token)
          if (s?.outcome === "ok") {
            // Settled as delivered, the message is gone: no later claim may exist at all.
            assert.fail(`${id}: claimed again (token ${next.token}) after a successful settle (token ${before.token})`)
          }
          // The earlier lease was never settled in time: the next claim must come after its expiry.
          assert.isAtLeast(next.gotAt, before.expiresAt, `${id}: token ${next.token} granted while token ${before.token} was valid`)
          takeovers++
          if (s !== undefined && s.startedAt > next.gotAt) {
            assert.strictEqual(s.outcome, "LeaseLost", `${id}: the stale owner's settle (token ${before.token}) after a takeover was accepted`)
            refused++
          }
        }
      }
      const deliveredOnce = [...byMessage.keys()].filter((id) => byMessage.get(id)!.filter((c) => settles.get(c.token)?.outcome === "ok").length === 1)
      console.info(
        `two processes: ${claims.length} claims (proc-a ${a.filter((e) => e.kind === "claim").length}, proc-b ${b.filter((e) => e.kind === "claim").length}), ` +
          `${takeovers} takeovers after a lease expired, ${refused} stale settles refused, ${deliveredOnce.length}/${MESSAGES} delivered once`
      )
      assert.deepStrictEqual([...settles.values()].filter((s) => s.outcome === "error"), [], "a settle failed otherwise than LeaseLost")
      assert.strictEqual(byMessage.size, MESSAGES, "every message was claimed")
      assert.strictEqual(deliveredOnce.length, MESSAGES, "every message delivered exactly once")
      assert.isAbove(a.filter((e) => e.kind === "claim").length, 0, "process a claimed")
      assert.isAbove(b.filter((e) => e.kind === "claim").length, 0, "process b claimed")
      assert.isAbove(takeovers, 0, "no lease lapsed: the test did not exercise takeovers")
      assert.strictEqual(yield* seed.queue.depth, 0)
    }), 180_000)
})

if (!Pg.available) {
  describe("PostgreSQL queue: two processes", () => {
    it.skip(Pg.skipMessage, () => {})
  })
}
