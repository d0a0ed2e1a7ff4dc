/**
 * Settles of the PostgreSQL queue, batched: the outcomes that are ready while a settle statement is
 * out are recorded together by the next one (`settle_many` in `schema.ts`: `settle` for each lease,
 * in one transaction), so a busy node pays one round trip, one COMMIT and one WAL flush per batch
 * instead of per delivery.
 *
 * Every guarantee of a single settle holds per lease: each is fenced by its own token (a lease lost
 * to another node answers `lost` and the others still count), the caller's effect completes only
 * after the batch's COMMIT, and leases are settled in id order so two nodes' batches lock rows in
 * the same order (no deadlock between them). A batch that fails as a whole (a defect, a constraint)
 * is retried lease by lease, so one bad settle cannot fail the others; a lost connection fails them
 * all, as it would have failed each.
 */
import { Cause, Deferred, Effect } from "effect"
import type { Scope } from "effect"
import { type SqlClient, SqlError } from "effect/sql"
import type { Settlement } from "../MailQueue.ts"
import { fromStorageException, MailQueueError } from "../MailQueueError.ts"
import * as Batcher from "./Batcher.ts"

/** What `settle` answered: `lost` (fenced off), `done` (all delivered: gone), `idle` (dead letters only) or `pending`. */
export type Outcome = "lost" | "done" | "idle" | "pending"

export interface SettleRequest {
  readonly id: string
  readonly token: bigint
  readonly settlements: ReadonlyArray<Settlement>
  readonly now: number
}

interface Job extends SettleRequest {
  readonly done: Deferred.Deferred<Outcome, MailQueueError>
}

export interface Settles {
  /** Records a lease's outcomes; completes after the COMMIT that holds them. */
  readonly settle: (request: SettleRequest) => Effect.Effect<Outcome, MailQueueError>
}

export interface Options {
  readonly sql: SqlClient.SqlClient
  readonly deadLetterTtlMs: number
  /** The most leases one statement settles; more wait for the next. */
  readonly maxBatch?: number | undefined
}

const stateOf = (s: Settlement) => (s._tag === "Delivered" ? "delivered" : s._tag === "Retry" ? "retry" : "dead")

const isOutcome = (s: string | undefined): s is Outcome => s === "lost" || s === "done" || s === "idle" || s === "pending"

export const make = (options: Options): Effect.Effect<Settles, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { sql } = options
    const maxBatch = Math.max(1, options.maxBatch ?? 64)

    /** One statement for the batch (sorted by id); the outcomes in the batch's order. */
    const settleMany = (batch: ReadonlyArray<Job>) => {
      const first: Array<number> = []
      const count: Array<number> = []
      const all = batch.flatMap((j) => {
        first.push(first.length === 0 ? 1 : first.at(-1)! + count.at(-1)!)
        count.push(j.settlements.length)
        return j.settlements
      })
      // One clock for the batch: the latest of its requests (a dead letter's TTL starts no earlier).
      const now = Math.max(...batch.map((j) => j.now))
      return sql<{ i: number; outcome: string }>`SELECT * FROM settle_many(
        ${batch.map((j) => j.id)}::text[], ${batch.map((j) => j.token)}::bigint[], ${first}::integer[], ${count}::integer[],
        ${all.map((s) => s.rcpt)}::text[], ${all.map(stateOf)}::text[],
        ${all.map((s) => BigInt(s._tag === "Retry" ? s.at : 0))}::bigint[], ${all.map((s) => s.reply)}::text[],
        ${BigInt(now)}, ${BigInt(options.deadLetterTtlMs)})`.pipe(
        Effect.flatMap((rows) => {
          const byIndex = new Map(rows.map((r) => [r.i, r.outcome]))
          const outcomes = batch.map((_, k) => byIndex.get(k + 1))
          return outcomes.every(isOutcome)
            ? Effect.succeed(outcomes)
            : Effect.die(new Error(`settle_many answered ${JSON.stringify(rows)} for ${batch.length} leases`))
        })
      )
    }

    const answer = (batch: ReadonlyArray<Job>, run: Effect.Effect<ReadonlyArray<Outcome>, unknown>) =>
      run.pipe(
        Effect.matchCauseEffect({
          onSuccess: (outcomes) => Effect.sync(() => batch.forEach((j, k) => Deferred.doneUnsafe(j.done, Effect.succeed(outcomes[k]!)))),
          onFailure: (cause) =>
            Effect.sync(() => {
              const error = fromStorageException(Cause.squash(cause), "settling")
              for (const j of batch) Deferred.doneUnsafe(j.done, Effect.fail(error))
            })
        })
      )

    const write = (batch: ReadonlyArray<Job>) =>
      batch.length === 1
        ? answer(batch, settleMany(batch))
        : settleMany(batch).pipe(
          Effect.matchCauseEffect({
            onSuccess: (outcomes) => answer(batch, Effect.succeed(outcomes)),
            // The database is away: each alone would fail too. Anything else: one lease at a time.
            onFailure: (cause) =>
              isConnectionLoss(cause)
                ? answer(batch, Effect.failCause(cause))
                : Effect.forEach(batch, (j) => answer([j], settleMany([j])), { discard: true })
          })
        )

    const closing = new MailQueueError({ reason: { _tag: "StorageFailed", detail: "queue closing" } })
    const offer = yield* Batcher.make<Job>({
      maxBatch,
      prepare: (taken) => taken.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
      write,
      abandon: (j) => Deferred.doneUnsafe(j.done, Effect.fail(closing))
    })

    return {
      settle: (request) =>
        Effect.suspend(() => {
          const done = Deferred.makeUnsafe<Outcome, MailQueueError>()
          offer({ ...request, done })
          return Deferred.await(done)
        })
    }
  })

/** Whether a failure is the database being unreachable (retrying lease by lease would not help). */
const isConnectionLoss = (cause: Cause.Cause<unknown>): boolean => {
  const e = Cause.squash(cause)
  return SqlError.isSqlError(e) && e.reason._tag === "ConnectionError"
}
