/**
 * The durable embedded `MailQueue` (the default backend): one SQLite database through
 * `node:sqlite` at `<dataDir>/queue.db`, plus `<dataDir>/bodies/` for bodies too large to keep
 * in a row.
 *
 * Durability: WAL with `synchronous=FULL`, so `COMMIT` returns only once the log is on disk; a
 * body file and its directory entry are flushed before the row naming it commits. Throughput:
 * every write goes through one group-commit writer (`internal/GroupCommit.ts`), so concurrent
 * sessions share each transaction and its fsync. Recovery: the process that owns the directory
 * returns leases of a dead predecessor to the queue, dead-letters messages whose body file is
 * missing or truncated (with the reason, never silently), and removes body files no row names.
 * Another process (the `incoming queue` CLI) can open the same directory while the server runs:
 * WAL lets it read, `busy_timeout` lets it write, and it skips the owner-only recovery.
 *
 * Time comes from Effect's `Clock`; the number of pending messages is kept in memory because
 * every MAIL command asks for it, and recounted when another process changed the database.
 */
import { randomUUID } from "node:crypto"
import { mkdir } from "node:fs/promises"
import { join } from "node:path"
import { DatabaseSync, type SQLOutputValue } from "node:sqlite"
import { Clock, Deferred, Effect, Exit, Layer, Option } from "effect"
import type { Envelope } from "../smtp/Envelope.ts"
import { concat } from "../spool/SpooledBody.ts"
import * as BodyFiles from "./internal/bodyFiles.ts"
import * as BodyStream from "./internal/bodyStream.ts"
import * as GroupCommit from "./internal/GroupCommit.ts"
import * as InstanceLock from "./internal/InstanceLock.ts"
import {
  bytes,
  decodeEnvelope,
  encodeEnvelope,
  int,
  migrate,
  optionalInt,
  optionalText,
  text
} from "./internal/sqliteSchema.ts"
import * as WorkSignal from "./internal/WorkSignal.ts"
import {
  defaultQueueOptions,
  type Lease,
  type ListFilter,
  MailQueue,
  type MessageBody,
  type MessageInfo,
  type MessageState,
  messageState,
  type NewMessage,
  type QueueOptions,
  type QueueStats,
  type RecipientState,
  type RecipientStatus,
  type Settlement
} from "./MailQueue.ts"
import { fromStorageException, MailQueueError } from "./MailQueueError.ts"

export interface SqliteQueueOptions extends Partial<QueueOptions> {
  /** Directory holding `queue.db` and `bodies/`; created if missing. */
  readonly dataDir: string
  /** Bodies up to this many bytes are stored in their row; larger ones in `bodies/<id>`. Default 256 KiB. */
  readonly inlineThreshold?: number | undefined
  /** How long a write waits for another process's transaction (the CLI) before failing. Default 5 s. */
  readonly busyTimeoutMs?: number | undefined
  /** Caps the database at this many pages: tests use it to run out of space on purpose. */
  readonly maxPageCount?: number | undefined
  /** Called after every group-commit batch (tests, diagnostics). */
  readonly onBatch?: ((info: GroupCommit.BatchInfo) => void) | undefined
}

export const defaultInlineThreshold = 256 * 1024

type BatchInfo = GroupCommit.BatchInfo
export type { BatchInfo }

/** Per-batch bookkeeping, applied only if the batch commits. */
interface Batch {
  depthDelta: number
  notify: boolean
  readonly removeFiles: Array<string>
}

interface StoredBody {
  readonly inline: Uint8Array | null
  readonly file: string | null
  /** Undoes the body's storage if its commit fails. */
  readonly undo: Effect.Effect<void>
}

type Row = Record<string, SQLOutputValue>

// Ranks follow `messageState`: the least-finished recipient decides the message's state.
const stateRank: Record<MessageState, number> = { inflight: 5, queued: 4, retry: 3, dead: 2, delivered: 1 }

const isRecipientState = (s: string): s is RecipientState =>
  s === "queued" || s === "inflight" || s === "retry" || s === "delivered" || s === "dead"

// Ids become file names under bodies/: nothing that could escape the directory or look like a temp file.
const validId = (id: string): boolean => /^[A-Za-z0-9_-]{1,128}$/.test(id)

// STRICT integer columns refuse fractions, and one refused row would abort a whole batch.
const ms = (n: number): number => Math.floor(n)

const storageFailed = (detail: string) => new MailQueueError({ reason: { _tag: "StorageFailed", detail } })
const leaseLost = (id: string) => new MailQueueError({ reason: { _tag: "LeaseLost", id } })
const notFound = (id: string) => new MailQueueError({ reason: { _tag: "NotFound", id } })

const openDatabase = (path: string, options: SqliteQueueOptions) =>
  Effect.try({
    try: () => {
      const db = new DatabaseSync(path, { timeout: options.busyTimeoutMs ?? 5000 })
      try {
        const mode = db.prepare("PRAGMA journal_mode = WAL").get()?.journal_mode
        if (mode !== "wal") throw new Error(`could not enable WAL (journal_mode is ${String(mode)})`)
        db.exec("PRAGMA synchronous = FULL")
        db.exec("PRAGMA foreign_keys = ON")
        if (options.maxPageCount !== undefined) db.exec(`PRAGMA max_page_count = ${Math.floor(options.maxPageCount)}`)
        migrate(db)
        return db
      } catch (cause) {
        db.close()
        throw cause
      }
    },
    catch: (cause) => fromStorageException(cause, `open ${path}`)
  })

const prepare = (db: DatabaseSync) => ({
  dataVersion: db.prepare("PRAGMA data_version"),
  exists: db.prepare("SELECT 1 AS found FROM messages WHERE id = ?"),
  insertMessage: db.prepare(
    "INSERT INTO messages (id, envelope, trace, received_at, size, body, body_file) VALUES (?, ?, ?, ?, ?, ?, ?)"
  ),
  insertRecipient: db.prepare(
    "INSERT INTO recipients (message_id, rcpt, state, attempts, next_attempt_at) VALUES (?, ?, 'queued', 0, ?)"
  ),
  releaseExpired: db.prepare(
    `UPDATE recipients SET state = 'queued', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     WHERE state = 'inflight' AND lease_expires_at <= ?`
  ),
  releaseAll: db.prepare(
    `UPDATE recipients SET state = 'queued', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     WHERE state = 'inflight'`
  ),
  // The message due the longest whose other recipients are not out on a lease; the partial index
  // recipients_due yields rows in (next_attempt_at, rowid) order, so this stops at the first hit.
  nextDue: db.prepare(
    `SELECT r.message_id AS id FROM recipients AS r
     WHERE r.state IN ('queued', 'retry') AND r.next_attempt_at <= ?
       AND NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')
     ORDER BY r.next_attempt_at, r.rowid LIMIT 1`
  ),
  nextDueAt: db.prepare(
    `SELECT r.next_attempt_at AS at FROM recipients AS r
     WHERE r.state IN ('queued', 'retry')
       AND NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')
     ORDER BY r.next_attempt_at, r.rowid LIMIT 1`
  ),
  nextLeaseExpiry: db.prepare("SELECT MIN(lease_expires_at) AS at FROM recipients WHERE state = 'inflight'"),
  lease: db.prepare(
    `UPDATE recipients SET state = 'inflight', attempts = attempts + 1, lease_owner = ?, lease_token = ?, lease_expires_at = ?
     WHERE message_id = ? AND state IN ('queued', 'retry') AND next_attempt_at <= ?
     RETURNING rowid AS seq, rcpt, attempts`
  ),
  head: db.prepare("SELECT envelope, trace, received_at, size, body_file FROM messages WHERE id = ?"),
  leased: db.prepare(
    "SELECT rowid AS seq, rcpt FROM recipients WHERE message_id = ? AND lease_token = ? AND state = 'inflight'"
  ),
  setDelivered: db.prepare(
    `UPDATE recipients SET state = 'delivered', last_reply = ?, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     WHERE rowid = ?`
  ),
  setRetry: db.prepare(
    `UPDATE recipients SET state = 'retry', next_attempt_at = ?, last_reply = ?, lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL
     WHERE rowid = ?`
  ),
  setDead: db.prepare(
    `UPDATE recipients SET state = 'dead', expires_at = ?, last_reply = ?, lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL
     WHERE rowid = ?`
  ),
  // Back to the queue untouched: the attempt the claim counted did not happen.
  unclaim: db.prepare(
    `UPDATE recipients SET state = 'queued', attempts = MAX(0, attempts - 1), lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL
     WHERE rowid = ?`
  ),
  hasPending: db.prepare(
    `SELECT EXISTS (SELECT 1 FROM recipients WHERE message_id = ? AND state IN ('queued', 'retry', 'inflight')) AS pending`
  ),
  deleteIfDone: db.prepare(
    `DELETE FROM messages WHERE id = $id
       AND NOT EXISTS (SELECT 1 FROM recipients WHERE message_id = $id AND state <> 'delivered')
     RETURNING body_file`
  ),
  deleteMessage: db.prepare("DELETE FROM messages WHERE id = ? RETURNING body_file"),
  requeue: db.prepare(
    `UPDATE recipients SET state = 'queued', next_attempt_at = ?, expires_at = NULL
     WHERE message_id = ? AND state IN ('retry', 'dead')`
  ),
  purgeExpired: db.prepare("DELETE FROM recipients WHERE state = 'dead' AND expires_at <= ? RETURNING message_id"),
  purgeDead: db.prepare("DELETE FROM recipients WHERE state = 'dead' RETURNING message_id"),
  deadLetter: db.prepare(
    `UPDATE recipients SET state = 'dead', last_reply = ?, expires_at = ?, lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL
     WHERE message_id = ? AND state IN ('queued', 'retry', 'inflight')`
  ),
  countPending: db.prepare(
    "SELECT COUNT(DISTINCT message_id) AS n FROM recipients WHERE state IN ('queued', 'retry', 'inflight')"
  ),
  countMessages: db.prepare("SELECT COUNT(*) AS n FROM messages"),
  countByState: db.prepare("SELECT state, COUNT(*) AS n FROM recipients GROUP BY state"),
  bodyFiles: db.prepare("SELECT id, size, body_file FROM messages WHERE body_file IS NOT NULL"),
  info: db.prepare("SELECT id, envelope, received_at, size FROM messages WHERE id = ?"),
  recipients: db.prepare(
    `SELECT rcpt, state, attempts, next_attempt_at, last_reply, expires_at FROM recipients
     WHERE message_id = ? ORDER BY rowid`
  ),
  list: db.prepare(
    `SELECT m.id, m.envelope, m.received_at, m.size,
       MAX(CASE r.state WHEN 'inflight' THEN 5 WHEN 'queued' THEN 4 WHEN 'retry' THEN 3 WHEN 'dead' THEN 2 ELSE 1 END)
         AS rank
     FROM messages AS m JOIN recipients AS r ON r.message_id = m.id
     GROUP BY m.seq
     HAVING $rank = 0 OR rank = $rank
     ORDER BY m.received_at, m.seq
     LIMIT $limit`
  ),
  bodyRef: db.prepare("SELECT trace, size, body, body_file FROM messages WHERE id = ?"),
  inlineBody: db.prepare("SELECT body FROM messages WHERE id = ?")
})

export const make = Effect.fnUntraced(function*(options: SqliteQueueOptions) {
  const opts: QueueOptions = {
    deadLetterTtlMs: options.deadLetterTtlMs ?? defaultQueueOptions.deadLetterTtlMs,
    maxDepth: options.maxDepth ?? defaultQueueOptions.maxDepth
  }
  const inlineThreshold = options.inlineThreshold ?? defaultInlineThreshold
  const bodiesDir = join(options.dataDir, "bodies")
  const dbPath = join(options.dataDir, "queue.db")

  yield* Effect.tryPromise({
    try: () => mkdir(bodiesDir, { recursive: true, mode: 0o700 }),
    catch: (cause) => fromStorageException(cause, `create ${bodiesDir}`)
  })
  const owner = yield* InstanceLock.acquire(join(options.dataDir, "queue.lock"))
  const db = yield* Effect.acquireRelease(openDatabase(dbPath, options), (db) => Effect.sync(() => db.close()))
  // The database file and bodies/ may have just been created: make their directory entries durable.
  yield* BodyFiles.syncPath(options.dataDir)
  const sql = prepare(db)

  const read = <A>(what: string, f: () => A): Effect.Effect<A, MailQueueError> =>
    Effect.try({ try: f, catch: (cause) => fromStorageException(cause, what) })

  const transaction = (f: () => void): void => {
    db.exec("BEGIN IMMEDIATE")
    try {
      f()
      db.exec("COMMIT")
    } catch (cause) {
      if (db.isTransaction) db.exec("ROLLBACK")
      throw cause
    }
  }

  const bodyPath = (file: string) => join(bodiesDir, file)

  // ---- start-up recovery (owner only) ----
  const recovered = { leases: 0, deadLettered: 0, orphans: 0 }
  if (owner) {
    const files = yield* read("list body files", () =>
      sql.bodyFiles.all().map((row) => ({ id: text(row.id), size: int(row.size), file: text(row.body_file) })))
    const checked = yield* Effect.forEach(
      files,
      (f) => Effect.map(BodyFiles.sizeOf(bodyPath(f.file)), (actual) => ({ ...f, actual })),
      { concurrency: 16 }
    )
    const broken = checked.filter((f) => f.actual !== f.size)
    const now = yield* Clock.currentTimeMillis
    yield* read("recover", () =>
      transaction(() => {
        // Only one owner runs at a time, so every lease still out belongs to a process that died.
        recovered.leases = Number(sql.releaseAll.run().changes)
        for (const f of broken) {
          const reason = f.actual === undefined
            ? `queue: body file bodies/${f.file} is missing`
            : `queue: body file bodies/${f.file} has ${f.actual} bytes, expected ${f.size}`
          sql.deadLetter.run(reason, ms(now + opts.deadLetterTtlMs), f.id)
        }
      }))
    recovered.deadLettered = broken.length
    recovered.orphans = yield* BodyFiles.sweep(
      bodiesDir,
      new Set(checked.filter((f) => f.actual !== undefined).map((f) => f.file))
    )
    for (const f of broken) {
      yield* Effect.logError(`queue: message ${f.id} dead-lettered at start-up: body file bodies/${f.file} missing or damaged`)
    }
  } else {
    yield* Effect.logDebug(`queue: ${options.dataDir} is owned by another process; start-up recovery skipped`)
  }

  // ---- depth ----
  let depth = yield* read("count pending", () => int(sql.countPending.get()?.n))
  let seenVersion = yield* read("data version", () => int(sql.dataVersion.get()?.data_version))
  // data_version moves only when ANOTHER connection commits (the CLI retrying or deleting mail).
  // Such changes are rare operator actions, and in the server every MAIL asks for the depth: the
  // owner looks at most every 100 ms, so the hot path does not run a statement per transaction.
  // Other processes (the CLI) always look.
  const refreshEveryMs = owner ? 100 : 0
  let checkedAt = Number.NEGATIVE_INFINITY
  const refreshDepth = () => {
    const now = performance.now()
    if (now - checkedAt < refreshEveryMs) return
    checkedAt = now
    const version = int(sql.dataVersion.get()?.data_version)
    if (version !== seenVersion) {
      seenVersion = version
      depth = int(sql.countPending.get()?.n)
    }
  }

  const signal = WorkSignal.make()

  const writer = yield* GroupCommit.make<Batch>({
    db,
    context: () => ({ depthDelta: 0, notify: false, removeFiles: [] }),
    committed: (batch) => {
      depth += batch.depthDelta
      if (batch.notify) signal.notify()
    },
    afterCommit: (batch) =>
      Effect.forEach(batch.removeFiles, (file) => BodyFiles.removeQuietly(bodyPath(file)), { discard: true }),
    syncBodies: BodyFiles.syncPath(bodiesDir),
    onBatch: options.onBatch
  })

  if (owner) {
    yield* Effect.logInfo(
      `queue: sqlite ${dbPath}: ${depth} pending; returned ${recovered.leases} leases, ` +
        `dead-lettered ${recovered.deadLettered}, removed ${recovered.orphans} orphan files`
    )
  }

  // ---- helpers used inside batch jobs (synchronous, inside the transaction) ----
  const isPending = (id: string) => int(sql.hasPending.get(id)?.pending) === 1

  /** Deletes a message once nothing but delivered recipients is left; its body file goes after COMMIT. */
  const dropIfDone = (batch: Batch, id: string) => {
    for (const row of sql.deleteIfDone.all({ id })) {
      const file = optionalText(row.body_file)
      if (file !== undefined) batch.removeFiles.push(file)
    }
  }

  /** Adjusts depth for a message whose recipients changed state, then drops it if it is done. */
  const afterChange = (batch: Batch, id: string, wasPending: boolean) => {
    const pendingNow = isPending(id)
    if (wasPending !== pendingNow) batch.depthDelta += pendingNow ? 1 : -1
    dropIfDone(batch, id)
  }

  const storeBody = (message: NewMessage): Effect.Effect<StoredBody, MailQueueError> => {
    const body = message.body
    if (body.size <= inlineThreshold) {
      if (body._tag === "InMemory") return Effect.sync(() => ({ inline: concat(body), file: null, undo: Effect.void }))
      return Effect.flatMap(BodyFiles.readAll(body.path), (data) =>
        data.length === body.size
          ? Effect.succeed({ inline: data, file: null, undo: Effect.void })
          : Effect.fail(storageFailed(`spool file ${body.path} has ${data.length} bytes, expected ${body.size}`)))
    }
    const final = bodyPath(message.id)
    const tmp = `${final}.tmp`
    if (body._tag === "InMemory") {
      return BodyFiles.writeDurable(tmp, final, body.chunks, body.size).pipe(
        Effect.onError(() => Effect.all([BodyFiles.removeQuietly(tmp), BodyFiles.removeQuietly(final)], { discard: true })),
        Effect.as({ inline: null, file: message.id, undo: BodyFiles.removeQuietly(final) })
      )
    }
    // An adopted spool file is not put back on failure: the session releases its body then anyway.
    return BodyFiles.adopt(body.path, tmp, final, body.size).pipe(
      Effect.onError(() => Effect.all([BodyFiles.removeQuietly(tmp), BodyFiles.removeQuietly(final)], { discard: true })),
      Effect.as({ inline: null, file: message.id, undo: BodyFiles.removeQuietly(final) })
    )
  }

  const commit = Effect.fnUntraced(function*(message: NewMessage) {
    yield* Effect.annotateCurrentSpan({ "message.id": message.id, "message.size": message.body.size })
    const rcpts = [...new Set(message.envelope.rcptTo)]
    if (!validId(message.id)) return yield* storageFailed(`invalid message id ${JSON.stringify(message.id)}`)
    if (rcpts.length === 0) return yield* storageFailed(`message ${message.id} has no recipients`)
    // Early refusals, before any body bytes move; the job re-checks both under the write lock.
    yield* read("depth", refreshDepth)
    if (depth >= opts.maxDepth) {
      return yield* new MailQueueError({ reason: { _tag: "Full", depth, maxDepth: opts.maxDepth } })
    }
    if (yield* read("lookup", () => sql.exists.get(message.id) !== undefined)) {
      return yield* storageFailed(`message ${message.id} already exists`)
    }
    const envelope = encodeEnvelope(message.envelope)
    const receivedAt = ms(message.receivedAt)
    const job = (stored: StoredBody): GroupCommit.Job<void, Batch> => (batch) => {
      if (sql.exists.get(message.id) !== undefined) return Exit.fail(storageFailed(`message ${message.id} already exists`))
      const projected = depth + batch.depthDelta
      if (projected >= opts.maxDepth) {
        return Exit.fail(new MailQueueError({ reason: { _tag: "Full", depth: projected, maxDepth: opts.maxDepth } }))
      }
      sql.insertMessage.run(message.id, envelope, message.trace, receivedAt, message.body.size, stored.inline, stored.file)
      for (const rcpt of rcpts) sql.insertRecipient.run(message.id, rcpt, receivedAt)
      batch.depthDelta += 1
      batch.notify = true
      return Exit.succeed(undefined)
    }
    // Once the body is stored, the job must reach the writer even if this fiber is interrupted:
    // the writer is then the one that undoes the storage if the job does not commit.
    const outcome = yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        restore(storeBody(message)),
        (stored) => writer.enqueue(job(stored), { syncBodies: stored.file !== null, onFailure: stored.undo })
      )
    )
    yield* Deferred.await(outcome)
    // The queue holds its own copy now: give back the spool's memory budget or file.
    yield* message.body.release
  })

  const messageBody = (id: string, trace: string, size: number, file: string | undefined): MessageBody => ({
    size: Buffer.byteLength(trace) + size,
    stream: () =>
      file !== undefined
        ? BodyStream.fromFile(trace, bodyPath(file))
        : BodyStream.fromLoader(trace, () => {
          const body = bytes(sql.inlineBody.get(id)?.body)
          if (body === undefined) throw new Error(`queue: message ${id} is no longer stored`)
          return body
        })
  })

  // commit, claim, settle and release run once or more per message: they are untraced (a span
  // costs several µs) and show up inside the session's and the delivery's spans instead.

  // Leases of messages whose body is a file: settling them may delete the file (see settle).
  const fileBacked = new Set<string>()

  const claim = Effect.fnUntraced(function*(request: { readonly owner: string; readonly leaseMs: number }) {
    const now = ms(yield* Clock.currentTimeMillis)
    const token = randomUUID()
    const expiresAt = ms(now + request.leaseMs)
    const claimed = yield* writer.submit((_batch) => {
      sql.releaseExpired.run(now)
      const next = sql.nextDue.get(now)
      if (next === undefined) return Exit.succeed(Option.none())
      const id = text(next.id)
      const rows = sql.lease.all(request.owner, token, expiresAt, id, now)
        .map((row) => ({ seq: int(row.seq), rcpt: text(row.rcpt), attempt: int(row.attempts) }))
        .toSorted((a, b) => a.seq - b.seq)
      const head = sql.head.get(id)
      if (head === undefined) return Exit.succeed(Option.none())
      return Exit.succeed(Option.some({
        id,
        rows,
        envelope: text(head.envelope),
        trace: text(head.trace),
        receivedAt: int(head.received_at),
        size: int(head.size),
        file: optionalText(head.body_file)
      }))
    }, { durable: false })
    if (Option.isNone(claimed)) return Option.none<Lease>()
    const c = claimed.value
    if (c.file !== undefined) fileBacked.add(token)
    const envelope = yield* read(`decode envelope of ${c.id}`, () => decodeEnvelope(c.envelope))
    return Option.some<Lease>({
      id: c.id,
      token,
      owner: request.owner,
      expiresAt,
      envelope,
      receivedAt: c.receivedAt,
      recipients: c.rows.map((r) => ({ rcpt: r.rcpt, attempt: r.attempt })),
      body: messageBody(c.id, c.trace, c.size, c.file)
    })
  })

  const leasedRows = (lease: Lease) =>
    sql.leased.all(lease.id, lease.token).map((row) => ({ seq: int(row.seq), rcpt: text(row.rcpt) }))

  const settle = Effect.fnUntraced(function*(lease: Lease, settlements: ReadonlyArray<Settlement>) {
    const now = yield* Clock.currentTimeMillis
    const byRcpt = new Map(settlements.map((s) => [s.rcpt, s]))
    // Settles are not flushed on their own (see GroupCommit's `durable`), except one that may
    // delete a body file: the row saying "delivered" must be on disk before the file goes.
    const mayDeleteFile = fileBacked.delete(lease.token)
    yield* writer.submit((batch) => {
      const rows = leasedRows(lease)
      if (rows.length === 0) return Exit.fail(leaseLost(lease.id))
      for (const row of rows) {
        const s = byRcpt.get(row.rcpt)
        if (s === undefined) sql.unclaim.run(row.seq)
        else if (s._tag === "Delivered") sql.setDelivered.run(s.reply, row.seq)
        else if (s._tag === "Retry") sql.setRetry.run(ms(s.at), s.reply, row.seq)
        else sql.setDead.run(ms(now + opts.deadLetterTtlMs), s.reply, row.seq)
      }
      afterChange(batch, lease.id, true)
      batch.notify = true
      return Exit.succeed(undefined)
    }, { durable: mayDeleteFile })
  })

  const release = Effect.fnUntraced(function*(lease: Lease) {
    yield* writer.submit((batch) => {
      const rows = leasedRows(lease)
      if (rows.length === 0) return Exit.fail(leaseLost(lease.id))
      for (const row of rows) sql.unclaim.run(row.seq)
      batch.notify = true
      return Exit.succeed(undefined)
    }, { durable: false })
    fileBacked.delete(lease.token)
  })

  const retryNow = Effect.fn("SqliteQueue.retryNow")(function*(id: string) {
    const now = ms(yield* Clock.currentTimeMillis)
    return yield* writer.submit((batch) => {
      const wasPending = isPending(id)
      const changed = Number(sql.requeue.run(now, id).changes) > 0
      if (!changed) return Exit.succeed(false)
      afterChange(batch, id, wasPending)
      batch.notify = true
      return Exit.succeed(true)
    })
  })

  const remove = Effect.fn("SqliteQueue.remove")(function*(id: string) {
    return yield* writer.submit((batch) => {
      const wasPending = isPending(id)
      const rows = sql.deleteMessage.all(id)
      if (rows.length === 0) return Exit.succeed(false)
      if (wasPending) batch.depthDelta -= 1
      const file = optionalText(rows[0]!.body_file)
      if (file !== undefined) batch.removeFiles.push(file)
      return Exit.succeed(true)
    })
  })

  /** Deletes dead recipients, then the messages left with nothing but delivered ones (depth is unchanged: dead is not pending). */
  const purge = (select: () => ReadonlyArray<Row>) =>
    writer.submit((batch) => {
      const rows = select()
      for (const id of new Set(rows.map((row) => text(row.message_id)))) dropIfDone(batch, id)
      return Exit.succeed(rows.length)
    })

  const recipientStatus = (row: Row): RecipientStatus => {
    const state = text(row.state)
    if (!isRecipientState(state)) throw new TypeError(`queue database: unknown recipient state ${state}`)
    return {
      rcpt: text(row.rcpt),
      state,
      attempts: int(row.attempts),
      nextAttemptAt: int(row.next_attempt_at),
      lastReply: optionalText(row.last_reply),
      expiresAt: optionalInt(row.expires_at)
    }
  }

  const messageInfo = (
    id: string,
    envelope: Envelope,
    receivedAt: number,
    size: number
  ): MessageInfo => {
    const recipients = sql.recipients.all(id).map(recipientStatus)
    return { id, envelope, receivedAt, size, state: messageState(recipients.map((r) => r.state)), recipients }
  }

  const get = Effect.fn("SqliteQueue.get")(function*(id: string) {
    return yield* read(`get ${id}`, () => {
      const row = sql.info.get(id)
      if (row === undefined) return Option.none<MessageInfo>()
      return Option.some(messageInfo(id, decodeEnvelope(text(row.envelope)), int(row.received_at), int(row.size)))
    })
  })

  const list = Effect.fn("SqliteQueue.list")(function*(filter: ListFilter = {}) {
    const rank = filter.state === undefined || filter.state === "all" ? 0 : stateRank[filter.state]
    const limit = filter.limit === undefined ? -1 : Math.max(0, Math.floor(filter.limit))
    return yield* read("list", () =>
      sql.list.all({ rank, limit }).map((row) =>
        messageInfo(text(row.id), decodeEnvelope(text(row.envelope)), int(row.received_at), int(row.size))
      ))
  })

  const readMessage = Effect.fn("SqliteQueue.readMessage")(function*(id: string) {
    const row = yield* read(`read ${id}`, () => sql.bodyRef.get(id))
    if (row === undefined) return yield* notFound(id)
    const trace = text(row.trace)
    const size = int(row.size)
    const file = optionalText(row.body_file)
    if (file !== undefined) return messageBody(id, trace, size, file)
    const body = bytes(row.body) ?? new Uint8Array(0)
    return { size: Buffer.byteLength(trace) + size, stream: () => BodyStream.fromParts(trace, [body]) }
  })

  const stats: Effect.Effect<QueueStats, MailQueueError> = read("stats", () => {
    refreshDepth()
    const recipients: Record<RecipientState, number> = { queued: 0, inflight: 0, retry: 0, delivered: 0, dead: 0 }
    for (const row of sql.countByState.all()) {
      const state = text(row.state)
      if (isRecipientState(state)) recipients[state] = int(row.n)
    }
    return { messages: int(sql.countMessages.get()?.n), depth, recipients }
  }).pipe(Effect.withSpan("SqliteQueue.stats"))

  const nextDueAt: Effect.Effect<Option.Option<number>, MailQueueError> = read("next due", () => {
    const due = optionalInt(sql.nextDueAt.get()?.at)
    const expiry = optionalInt(sql.nextLeaseExpiry.get()?.at)
    if (due === undefined) return Option.fromNullishOr(expiry)
    return Option.some(expiry === undefined ? due : Math.min(due, expiry))
  })

  return MailQueue.of({
    backend: "sqlite",
    durable: true,
    maxDepth: opts.maxDepth,
    commit,
    claim,
    settle,
    release,
    // Never fails: when the database cannot be asked, the last known depth is still the best answer.
    depth: Effect.sync(() => {
      try {
        refreshDepth()
      } catch {
        // keep the cached value
      }
      return depth
    }),
    nextDueAt,
    awaitWork: signal.await,
    list,
    get,
    readMessage,
    retryNow,
    remove,
    purgeExpired: Effect.gen(function*() {
      const now = ms(yield* Clock.currentTimeMillis)
      return yield* purge(() => sql.purgeExpired.all(now))
    }).pipe(Effect.withSpan("SqliteQueue.purgeExpired")),
    purgeDead: purge(() => sql.purgeDead.all()).pipe(Effect.withSpan("SqliteQueue.purgeDead")),
    stats
  })
})

export const layer = (options: SqliteQueueOptions): Layer.Layer<MailQueue, MailQueueError> =>
  Layer.effect(MailQueue, make(options))
