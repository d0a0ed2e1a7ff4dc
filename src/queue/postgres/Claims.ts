/**
 * Claims of the PostgreSQL queue, coalesced: the workers that ask for work while a claim
 * statement is out wait for the next one, which leases for all of them at once (`claim_many` in
 * `schema.ts`: one statement, one plan, one COMMIT for the batch).
 *
 * Why: at a few hundred messages a second a single-message claim cost the database about four
 * times the CPU per message of a batch of ten (measured on PostgreSQL 15: ~1 ms against ~0.25 ms),
 * and the delivery path's statements were taking the CPU that the sessions' commits needed.
 *
 * Nothing is claimed ahead: a batch leases exactly as many messages as there are workers waiting,
 * in claim order, the most urgent to the worker that asked first — what the same claims one after
 * another would have leased. So priorities, holds and other nodes see no difference, and no lease
 * sits in memory waiting for a worker. A worker interrupted while its claim is out has its lease
 * given back (`release`), whichever side of the statement the interruption falls on.
 */
import { Cause, Clock, Deferred, Effect, Option } from "effect"
import type { Scope } from "effect"
import type { SqlClient } from "effect/sql"
import { fromStorageException, type MailQueueError } from "../MailQueueError.ts"
import * as Batcher from "./Batcher.ts"

/** A leased message as `claim_many` returns it. */
export interface ClaimRow {
  readonly id: string
  readonly token: bigint
  readonly expires_at: bigint
  readonly envelope: string
  readonly trace: string
  readonly received_at: bigint
  readonly size: bigint
  readonly rcpts: ReadonlyArray<string>
  readonly attempts: ReadonlyArray<number>
  /** Rank in the batch, from 1: the row for the batch's n-th waiter. */
  readonly n: number
}

interface Waiter {
  readonly owner: string
  readonly leaseMs: number
  readonly done: Deferred.Deferred<Option.Option<ClaimRow>, MailQueueError>
  /** Interrupted before its answer: a lease leased for it is released instead. */
  cancelled: boolean
}

export interface Claims {
  readonly claim: (owner: string, leaseMs: number) => Effect.Effect<Option.Option<ClaimRow>, MailQueueError>
}

export interface Options {
  readonly sql: SqlClient.SqlClient
  readonly nodeId: string
  readonly priorityMaxWaitMs: number
  /** Gives back a lease nobody will use (its worker was interrupted). */
  readonly release: (row: ClaimRow) => Effect.Effect<void>
  /** The most leases one statement takes; more waiters wait for the next. */
  readonly maxBatch?: number | undefined
}

export const make = (options: Options): Effect.Effect<Claims, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { sql } = options
    const maxBatch = Math.max(1, options.maxBatch ?? 32)

    const claimFor = (batch: ReadonlyArray<Waiter>) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const rows = yield* sql<ClaimRow>`SELECT * FROM claim_many(${options.nodeId}, ${batch.map((w) => w.owner)}::text[], ${BigInt(now)},
          ${batch.map((w) => BigInt(w.leaseMs))}::bigint[], ${BigInt(options.priorityMaxWaitMs)})`
        const byRank = new Map(rows.map((r) => [r.n, r]))
        // Synchronous from here on: a waiter's interruption is seen either before its answer
        // (cancelled: release here) or after it (the waiter releases), never in between.
        const unused: Array<ClaimRow> = []
        batch.forEach((w, i) => {
          const row = byRank.get(i + 1)
          if (row !== undefined && w.cancelled) unused.push(row)
          else Deferred.doneUnsafe(w.done, Effect.succeed(Option.fromNullishOr(row)))
        })
        yield* Effect.forEach(unused, options.release, { discard: true })
      }).pipe(
        // Any failure (a defect too) answers the batch: the claimer goes on with the next one.
        Effect.catchCause((cause) =>
          Effect.sync(() => {
            const error = fromStorageException(Cause.squash(cause), "claiming")
            for (const w of batch) Deferred.doneUnsafe(w.done, Effect.fail(error))
          })
        )
      )

    // Nobody claims once the queue closes (the dispatcher stops first); answer stragglers anyway.
    const offer = yield* Batcher.make<Waiter>({
      maxBatch,
      prepare: (taken) => taken.filter((w) => !w.cancelled),
      write: claimFor,
      abandon: (w) => Deferred.doneUnsafe(w.done, Effect.succeed(Option.none()))
    })

    return {
      claim: (owner, leaseMs) =>
        Effect.suspend(() => {
          const w: Waiter = { owner, leaseMs, done: Deferred.makeUnsafe(), cancelled: false }
          offer(w)
          return Deferred.await(w.done).pipe(
            Effect.onInterrupt(() =>
              Effect.suspend(() => {
                if (!Deferred.isDoneUnsafe(w.done)) {
                  w.cancelled = true
                  return Effect.void
                }
                return Deferred.await(w.done).pipe(
                  Effect.flatMap((row) => (Option.isSome(row) ? options.release(row.value) : Effect.void)),
                  Effect.ignore
                )
              })
            )
          )
        })
    }
  })
