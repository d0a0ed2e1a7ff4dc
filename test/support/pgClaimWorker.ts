/**
 * One node of the two-process claim test (`test/queue/postgres-processes.test.ts`), run as its own
 * process: `node pgClaimWorker.ts URL NODE_ID WORKERS LEASE_MS STALL_EVERY`. Its workers claim
 * from the shared PostgreSQL queue until nothing is pending; every STALL_EVERY-th claim stalls
 * past its lease before settling (a paused node: no heartbeat here, so the lease lapses and the
 * other process may take the message over). Every claim and settle is printed as a JSON line
 * with the times around it, for the test to check that no message was leased twice while a lease
 * on it was valid and that a stale settle was refused.
 */
import { Effect, Option, Redacted } from "effect"
import { delivered } from "../../src/queue/MailQueue.ts"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"

export interface ClaimEvent {
  readonly kind: "claim"
  readonly node: string
  readonly id: string
  readonly token: string
  /** Epoch ms just before the claim was asked and just after it answered. */
  readonly askedAt: number
  readonly gotAt: number
  readonly expiresAt: number
}

export interface SettleEvent {
  readonly kind: "settle"
  readonly node: string
  readonly id: string
  readonly token: string
  readonly startedAt: number
  readonly doneAt: number
  readonly outcome: "ok" | "LeaseLost" | "error"
}

const [url, nodeId, workers, leaseMs, stallEvery] = process.argv.slice(2)
if (url === undefined || nodeId === undefined) {
  process.stderr.write("usage: pgClaimWorker.ts URL NODE_ID WORKERS LEASE_MS STALL_EVERY\n")
  process.exit(2)
}
const lease = Number(leaseMs ?? 400)
const every = Number(stallEvery ?? 10)
const emit = (e: ClaimEvent | SettleEvent) => Effect.sync(() => void process.stdout.write(`${JSON.stringify(e)}\n`))

const program = Effect.gen(function*() {
  const node = yield* PgQueue.make({ url: Redacted.make(url), nodeId, heartbeat: false, maintenanceIntervalMs: 0 })
  let claims = 0
  const deadline = Date.now() + 90_000
  const worker = (w: number) =>
    Effect.gen(function*() {
      while (Date.now() < deadline) {
        const askedAt = Date.now()
        const got = yield* node.queue.claim({ owner: `${nodeId}/w${w}`, leaseMs: lease })
        const gotAt = Date.now()
        if (Option.isNone(got)) {
          if ((yield* node.queue.depth) === 0) return
          yield* Effect.sleep("20 millis")
          continue
        }
        const l = got.value
        yield* emit({ kind: "claim", node: nodeId, id: l.id, token: l.token, askedAt, gotAt, expiresAt: l.expiresAt })
        if (++claims % every === 0) yield* Effect.sleep(lease * 1.5)
        const startedAt = Date.now()
        const outcome = yield* node.queue.settle(l, l.recipients.map((r) => delivered(r.rcpt, "250 ok"))).pipe(
          Effect.as("ok" as const),
          Effect.catch((e) => Effect.succeed(e.reason._tag === "LeaseLost" ? "LeaseLost" as const : "error" as const))
        )
        yield* emit({ kind: "settle", node: nodeId, id: l.id, token: l.token, startedAt, doneAt: Date.now(), outcome })
      }
    })
  yield* Effect.all(Array.from({ length: Number(workers ?? 4) }, (_, w) => worker(w)), { concurrency: "unbounded", discard: true })
})

Effect.runPromise(Effect.scoped(program)).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${String(e)}\n`)
    process.exit(1)
  }
)
