/**
 * Group commit for the PostgreSQL queue: concurrent sessions share one transaction.
 *
 * A commit joins the batch being formed; a writer takes every message waiting and stores them
 * with ONE statement (messages, recipients and the NOTIFY that wakes other nodes' workers, all in
 * one implicit transaction), so the round trip and the WAL flush of `synchronous_commit = on` are
 * paid per batch, not per message. Each session gets its 250 only after that statement returned,
 * that is after COMMIT. While one batch is in flight the next one forms; `writers` batches may be
 * in flight at once so a slow flush does not idle the pool.
 *
 * A message already in the database (same id) is refused on its own (`ON CONFLICT DO NOTHING`),
 * without failing its batch. A large body (chunked, see `bodies.ts`) commits in a transaction of
 * its own: reading its spool file chunk by chunk inside a shared transaction would make every
 * session of the batch wait for it, and a read error would fail them all.
 */
import { Deferred, Effect, Queue } from "effect"
import type { Scope } from "effect"
import type { SqlClient } from "effect/sql"
import { encode as encodeEnvelope } from "../../protocol/Envelope.ts"
import type { NewMessage } from "../MailQueue.ts"
import { fromStorageException, MailQueueError } from "../MailQueueError.ts"
import * as Bodies from "./bodies.ts"
import { channel, chunkSize } from "./schema.ts"

interface Job {
  readonly message: NewMessage
  readonly done: Deferred.Deferred<void, MailQueueError>
}

export interface GroupCommit {
  /** Stores the message durably; completes after COMMIT. */
  readonly commit: (message: NewMessage) => Effect.Effect<void, MailQueueError>
}

export interface Options {
  readonly sql: SqlClient.SqlClient
  /** This node's id, sent with each NOTIFY so a node can ignore its own wake-ups. */
  readonly nodeId: string
  /** Batches in flight at once. */
  readonly writers: number
}

const exists = (id: string) => new MailQueueError({ reason: { _tag: "StorageFailed", detail: `message ${id} already exists` } })

/** One statement: the messages (new ids only), their recipients, one NOTIFY; the ids stored. */
const insertMessages = (
  sql: SqlClient.SqlClient,
  nodeId: string,
  batch: ReadonlyArray<NewMessage>,
  bodies: ReadonlyArray<Uint8Array>,
  chunks: ReadonlyArray<number>
) => {
  const ids = batch.map((m) => m.id)
  const rcpts = batch.flatMap((m) => [...new Set(m.envelope.rcptTo)].map((rcpt, ord) => ({ id: m.id, rcpt, ord, at: m.receivedAt })))
  return sql<{ id: string }>`
    WITH ins AS (
      INSERT INTO messages (id, envelope, trace, received_at, size, body, chunks, due_at, priority, held)
      SELECT t.id, t.envelope, t.trace, t.received_at, t.size, CASE WHEN t.chunks > 0 THEN NULL ELSE t.body END, t.chunks, t.received_at,
        t.priority, t.held
      FROM unnest(${ids}::text[], ${batch.map((m) => encodeEnvelope(m.envelope))}::text[], ${batch.map((m) => m.trace)}::text[],
                  ${batch.map((m) => BigInt(m.receivedAt))}::bigint[], ${batch.map((m) => BigInt(m.body.size))}::bigint[],
                  ${bodies}::bytea[], ${chunks}::integer[], ${batch.map((m) => m.envelope.priority ?? 0)}::smallint[],
                  ${batch.map((m) => m.held === true)}::boolean[])
        AS t(id, envelope, trace, received_at, size, body, chunks, priority, held)
      ON CONFLICT (id) DO NOTHING
      RETURNING id
    ), rcpt AS (
      INSERT INTO recipients (message_id, rcpt, ord, state, next_attempt_at)
      SELECT r.id, r.rcpt, r.ord, 'queued', r.at
      FROM unnest(${rcpts.map((r) => r.id)}::text[], ${rcpts.map((r) => r.rcpt)}::text[], ${rcpts.map((r) => r.ord)}::integer[],
                  ${rcpts.map((r) => BigInt(r.at))}::bigint[]) AS r(id, rcpt, ord, at)
      JOIN ins ON ins.id = r.id
    )
    SELECT ins.id, pg_notify(${channel}, ${`${nodeId} ${batch.length}`}) FROM ins`
}

/**
 * Stores one message inside the caller's transaction (a report committed with a settle): false
 * when its id is taken. A large body is written in chunks, as a commit does.
 */
export const storeInTransaction = (sql: SqlClient.SqlClient, nodeId: string, message: NewMessage) =>
  Effect.gen(function*() {
    const large = Bodies.isLarge(message.body)
    const body = large ? new Uint8Array(0) : yield* Bodies.inline(message.body)
    const rows = yield* insertMessages(sql, nodeId, [message], [body], [large ? Math.ceil(message.body.size / chunkSize) : 0])
    if (rows.length === 0) return false
    if (large) yield* Bodies.writeChunks(sql, message.id, message.body)
    return true
  })

export const make = (options: Options): Effect.Effect<GroupCommit, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { sql } = options
    const jobs = yield* Queue.unbounded<Job>()

    const insert = (batch: ReadonlyArray<Job>, bodies: ReadonlyArray<Uint8Array>, chunks: ReadonlyArray<number>) =>
      insertMessages(sql, options.nodeId, batch.map((j) => j.message), bodies, chunks)

    const settle = (batch: ReadonlyArray<Job>, stored: ReadonlySet<string>) =>
      Effect.forEach(batch, (j) => stored.has(j.message.id) ? Deferred.succeed(j.done, undefined) : Deferred.fail(j.done, exists(j.message.id)), { discard: true })

    const failAll = (batch: ReadonlyArray<Job>, error: MailQueueError) =>
      Effect.forEach(batch, (j) => Deferred.fail(j.done, error), { discard: true })

    const writeSmall = (batch: ReadonlyArray<Job>) =>
      Effect.gen(function*() {
        const bodies = yield* Effect.forEach(batch, (j) => Bodies.inline(j.message.body))
        const rows = yield* insert(batch, bodies, batch.map(() => 0))
        return new Set(rows.map((r) => r.id))
      })

    const writeLarge = (job: Job) =>
      Effect.gen(function*() {
        const rows = yield* insert([job], [new Uint8Array(0)], [Math.ceil(job.message.body.size / chunkSize)])
        if (rows.length === 0) return new Set<string>()
        yield* Bodies.writeChunks(sql, job.message.id, job.message.body)
        return new Set([job.message.id])
      }).pipe(sql.withTransaction)

    const write = (batch: ReadonlyArray<Job>, run: Effect.Effect<ReadonlySet<string>, unknown>) =>
      run.pipe(
        Effect.matchEffect({
          onSuccess: (stored) => settle(batch, stored),
          onFailure: (e) => failAll(batch, e instanceof MailQueueError ? e : fromStorageException(e, "committing to PostgreSQL"))
        }),
        // A batch cut short (shutdown) must not leave its sessions waiting forever.
        Effect.onInterrupt(() => failAll(batch, new MailQueueError({ reason: { _tag: "StorageFailed", detail: "queue closing" } })))
      )

    const writer = Effect.gen(function*() {
      const taken = yield* Queue.takeAll(jobs)
      // A second message with an id already in this batch is refused here: one INSERT cannot
      // tell the two apart.
      const seen = new Set<string>()
      const small: Array<Job> = []
      const large: Array<Job> = []
      for (const j of taken) {
        if (seen.has(j.message.id)) {
          yield* Deferred.fail(j.done, exists(j.message.id))
          continue
        }
        seen.add(j.message.id)
        if (Bodies.isLarge(j.message.body)) large.push(j)
        else small.push(j)
      }
      if (small.length > 0) yield* write(small, writeSmall(small))
      for (const j of large) yield* write([j], writeLarge(j))
    }).pipe(Effect.forever)

    for (let i = 0; i < Math.max(1, options.writers); i++) yield* Effect.forkScoped(writer)
    yield* Effect.addFinalizer(() => Queue.shutdown(jobs))

    return {
      commit: (message) =>
        Effect.gen(function*() {
          const done = yield* Deferred.make<void, MailQueueError>()
          yield* Queue.offer(jobs, { message, done })
          yield* Deferred.await(done)
        })
    }
  })
