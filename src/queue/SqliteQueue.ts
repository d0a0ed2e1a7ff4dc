/**
 * The durable embedded `MailQueue` (the default backend): one SQLite database through
 * `node:sqlite` at `<dataDir>/queue.db`, plus `<dataDir>/bodies/` for bodies too large to keep
 * in a row.
 *
 * Durability: WAL with `synchronous=FULL`, so `COMMIT` returns only once the log is on disk; a
 * body file and its directory entry are flushed before the row naming it commits. Throughput:
 * every write goes through one group-commit writer (`internal/GroupCommit.ts`), so concurrent
 * sessions share each transaction and its fsync, and the write connection lives on a worker
 * thread (`internal/writerThread.ts`), so statements and fsyncs never block the event loop; this
 * thread keeps a read-only role (start-up recovery aside): lookups, listings, bodies. Recovery: the process that owns the directory
 * returns leases of a dead predecessor to the queue, dead-letters messages whose body file is
 * missing or truncated (with the reason, never silently), and removes body files no row names.
 * Another process (the `incoming queue` CLI) can open the same directory while the server runs:
 * WAL lets it read, `busy_timeout` lets it write, and it skips the owner-only recovery.
 *
 * Handoff: once a worker of this process has claimed, a commit of a message nothing in the
 * database is due before inserts its recipients already leased (as a claim at that moment would
 * have, attempt counted) and keeps the lease in memory, with the body bytes it just wrote; the
 * next claim takes it from there without a database trip, and its settle is usually one DELETE.
 * With a backlog instead, a claim that goes to the database leases a few more due messages
 * ahead into the same ready list. Until a worker takes such a lease, its recipients show as
 * waiting (queued, or retry) to `get`, `list`, `stats` and `nextDueAt`. Clean shutdown gives
 * untaken ones back; after a crash the start-up recovery returns them like any other lease (so
 * their attempt stays counted).
 *
 * Time comes from Effect's `Clock`; the number of pending messages is kept in memory because
 * every MAIL command asks for it, and recounted when another process changed the database.
 */
import { randomUUID } from "node:crypto"
import { mkdir } from "node:fs/promises"
import { join } from "node:path"
import { DatabaseSync, type SQLOutputValue } from "node:sqlite"
import { Clock, Deferred, Effect, Layer, Option, Result } from "effect"
import type { Envelope } from "../protocol/Envelope.ts"
import { detached } from "../spool/SpooledBody.ts"
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
import type { Claimed, CommitResult, Handoff, SettleRow } from "./internal/writerProtocol.ts"
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
  /** Called once each group-commit batch ended, before its callers resume (tests, diagnostics). */
  readonly onBatch?: ((info: GroupCommit.BatchInfo) => void) | undefined
}

export const defaultInlineThreshold = 256 * 1024

type BatchInfo = GroupCommit.BatchInfo
export type { BatchInfo }

interface StoredBody {
  readonly inline: Uint8Array | null
  readonly file: string | null
  /** Undoes the body's storage if its commit fails. */
  readonly undo: Effect.Effect<void>
}

type Row = Record<string, SQLOutputValue>

/**
 * Leases waiting in memory for a worker's claim (handed off by commits, or taken ahead by a
 * claim), at most this many, counting those still being written. Each holds its message leased
 * and maybe its body bytes; a healthy dispatcher takes them within a batch or two, so the bound
 * only matters when it falls behind or stalls: commits past it are stored queued, as without
 * handoff, and claimed from the database.
 */
export const maxHandedOff = 256

/**
 * How many more due messages a claim that goes to the database leases at once, into the ready
 * list: with a backlog, workers then take most messages without a writer trip of their own. Kept
 * small because they wait leased, and a crash counts an attempt for each.
 */
export const claimAhead = 8

/**
 * Body bytes the handed-off leases may keep in memory (so a worker reads them without a trip to
 * the database); a lease over this budget reads its body from the row as a claimed one does.
 */
const maxHandedOffBytes = 8 * 1024 * 1024

/**
 * How long (clock ms) an idle claim's "nothing claimable before" holds at most when no batch
 * changed what is claimable: how late another process's write (`incoming queue retry`) can be
 * noticed by a worker that is not woken for it.
 */
const idleRecheckMs = 100

/** A lease made by a commit or ahead of a claim, not yet taken by a claim (see "handoff" in `make`). */
interface Ready {
  readonly id: string
  readonly token: string
  readonly expiresAt: number
  readonly envelope: Envelope
  readonly receivedAt: number
  readonly recipients: ReadonlyArray<{ readonly rcpt: string; readonly attempt: number }>
  readonly trace: string
  readonly size: number
  readonly file: string | null
  /**
   * The inline body as received (the spool's chunks), when the memory budget allowed keeping it:
   * the copy that was committed went to the writer thread.
   */
  readonly kept: ReadonlyArray<Uint8Array> | null
  readonly keptBytes: number
  /** Since when it is due, and the row of its first due recipient (ties go by row): its place in claim order. */
  readonly dueAt: number
  readonly rowid: number
}

// The order claims follow: due longest first, ties by row (arrival).
const claimsBefore = (at: number, rowid: number, b: Ready): boolean =>
  at < b.dueAt || (at === b.dueAt && rowid < b.rowid)

/**
 * The state a recipient leased into the ready list is shown in: the row no longer says what it
 * was, so one with earlier attempts shows as `retry`, which is what it was unless an operator's
 * retry-now or a restart had queued it again.
 */
const waitingAs = (attemptsBefore: number): RecipientState => (attemptsBefore > 0 ? "retry" : "queued")

// Ranks follow `messageState`: the least-finished recipient decides the message's state.
const stateRank: Record<MessageState, number> = { inflight: 5, queued: 4, retry: 3, dead: 2, delivered: 1 }

const isRecipientState = (s: string): s is RecipientState =>
  s === "queued" || s === "inflight" || s === "retry" || s === "delivered" || s === "dead"

// Ids become file names under bodies/: nothing that could escape the directory or look like a temp file.
const validId = (id: string): boolean => /^[A-Za-z0-9_-]{1,128}$/.test(id)

// STRICT integer columns refuse fractions, and one refused row would abort a whole batch.
const ms = (n: number): number => Math.floor(n)

const storageFailed = (detail: string) => new MailQueueError({ reason: { _tag: "StorageFailed", detail } })
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
  releaseAll: db.prepare(
    `UPDATE recipients SET state = 'queued', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     WHERE state = 'inflight'`
  ),
  nextDueAt: db.prepare(
    `SELECT r.next_attempt_at AS at FROM recipients AS r
     WHERE r.state IN ('queued', 'retry')
       AND NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')
     ORDER BY r.next_attempt_at, r.rowid LIMIT 1`
  ),
  // When a claim could next find anything (a recipient due, a lease expiring): a superset of what
  // the claim leases, read on this connection so an idle worker's claim costs no write.
  nextClaimable: db.prepare(
    `SELECT (SELECT MIN(next_attempt_at) FROM recipients WHERE state IN ('queued', 'retry')) AS due,
       (SELECT MIN(lease_expires_at) FROM recipients WHERE state = 'inflight') AS expiry`
  ),
  // The first recipient a database claim would lease (its due time and row), for comparing with
  // the oldest handed-off lease; and whether a lease expired (a claim would take that over first).
  firstDue: db.prepare(
    `SELECT r.next_attempt_at AS at, r.rowid AS seq FROM recipients AS r
     WHERE r.state IN ('queued', 'retry') AND r.next_attempt_at <= ?
       AND NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')
     ORDER BY r.next_attempt_at, r.rowid LIMIT 1`
  ),
  anyExpired: db.prepare("SELECT 1 AS found FROM recipients WHERE state = 'inflight' AND lease_expires_at <= ? LIMIT 1"),
  nextLeaseExpiry: db.prepare("SELECT MIN(lease_expires_at) AS at FROM recipients WHERE state = 'inflight'"),
  deadLetter: db.prepare(
    `UPDATE recipients SET state = 'dead', last_reply = ?, expires_at = ?, lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL
     WHERE message_id = ? AND state IN ('queued', 'retry', 'inflight')`
  ),
  countPending: db.prepare(
    "SELECT COUNT(DISTINCT message_id) AS n FROM recipients WHERE state IN ('queued', 'retry', 'inflight')"
  ),
  countMessages: db.prepare("SELECT COUNT(*) AS n FROM messages"),
  // $handedOff: a JSON array of the tokens of leases in the ready list (no worker took them yet);
  // their recipients are shown as waiting, see `waitingAs`.
  countByState: db.prepare(
    `SELECT CASE WHEN state = 'inflight' AND lease_token IN (SELECT value FROM json_each($handedOff))
         THEN (CASE WHEN attempts > 1 THEN 'retry' ELSE 'queued' END)
       ELSE state END AS state, COUNT(*) AS n
     FROM recipients GROUP BY 1`
  ),
  bodyFiles: db.prepare("SELECT id, size, body_file FROM messages WHERE body_file IS NOT NULL"),
  info: db.prepare("SELECT id, envelope, received_at, size FROM messages WHERE id = ?"),
  recipients: db.prepare(
    `SELECT rcpt, state, attempts, next_attempt_at, last_reply, expires_at, lease_token FROM recipients
     WHERE message_id = ? ORDER BY rowid`
  ),
  list: db.prepare(
    `SELECT m.id, m.envelope, m.received_at, m.size,
       MAX(CASE
         WHEN r.state = 'inflight' THEN (CASE WHEN r.lease_token NOT IN (SELECT value FROM json_each($handedOff)) THEN 5
           WHEN r.attempts > 1 THEN 3 ELSE 4 END)
         WHEN r.state = 'queued' THEN 4 WHEN r.state = 'retry' THEN 3 WHEN r.state = 'dead' THEN 2 ELSE 1 END)
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
  // The owner keeps the count itself: every batch reports how it changed the count, and the writer
  // thread recounts under the write lock when another connection (the CLI) changed the database.
  // data_version moves when ANOTHER connection commits, and for this connection that includes its
  // own writer thread, so here it only says "maybe": at most every 100 ms the owner then sends the
  // writer an empty op (it rides along in the next batch when busy), and a changed count comes
  // back with it. Another process (the CLI) recounts whenever the database changed.
  const refreshEveryMs = 100
  let checkedAt = Number.NEGATIVE_INFINITY
  /** Updates `depth`; true when the owner should ask the writer thread to recount. */
  const refreshDepth = (): boolean => {
    if (owner) {
      const now = performance.now()
      if (now - checkedAt < refreshEveryMs) return false
      checkedAt = now
    }
    const version = int(sql.dataVersion.get()?.data_version)
    if (version === seenVersion) return false
    seenVersion = version
    if (owner) return true
    depth = int(sql.countPending.get()?.n)
    return false
  }

  const refreshDepthSafely = (): boolean => {
    try {
      return refreshDepth()
    } catch {
      return false // keep the cached value
    }
  }

  const signal = WorkSignal.make()

  // ---- handoff: committed messages leased at once to this process's dispatcher ----
  // The ready list: leases handed off by commits or taken ahead by claims that no worker took
  // yet, in claim order (due time, then row).
  const ready: Array<Ready> = []
  let readyBytes = 0
  // Leases asked of the writer (handoff commits, claims ahead) whose outcome is not back yet:
  // they count against the bound.
  let handoffsInFlight = 0
  // The lease length workers ask for; undefined until one claimed (no dispatcher, no handoff).
  let handoffLeaseMs: number | undefined
  let handoffClosed = false
  // No recipient claimable from the database (outside the ready list) became due before this
  // time, as far as this process knows: a claim whose ready head is due earlier takes it without
  // looking at the database. Batches lower it when they make recipients claimable (a release, a
  // retry, a queued commit; another process's writes make it unknown), and a claim that looks
  // raises it to what it found. Leases expiring and retries coming due with time do not lower it:
  // a commit is handed off only when nothing in the database is due before it, so the ready list
  // then drains and claims go to the database.
  let dueFloor = Number.NEGATIVE_INFINITY
  // When the workers keep up, every delivered message ends in an idle claim, which asks the
  // database whether anything is claimable (a read on the main thread, several µs). `quietAt` is
  // what the last look found: the earliest due time or lease expiry (a lower bound: it ignores
  // that a message with a recipient out on a lease is not claimable), lowered by the leases made
  // since. Until then, and for at most `idleRecheckMs` after the look, nothing is claimable; a
  // batch that makes rows claimable, or another process's write (a recount), ends the quiet.
  let quietAt = Number.POSITIVE_INFINITY
  let lookedAt = Number.NEGATIVE_INFINITY
  const isQuiet = (now: number) => now < Math.min(quietAt, lookedAt + idleRecheckMs)
  const leased = (expiresAt: number) => {
    if (expiresAt < quietAt) quietAt = expiresAt
  }
  // Handed-off rows carry this owner until a worker extends them; nothing reads lease owners but people.
  const handoffOwner = `handoff-${process.pid}-${randomUUID().slice(0, 8)}`

  const addReady = (entry: Ready) => {
    let i = ready.length
    while (i > 0 && claimsBefore(entry.dueAt, entry.rowid, ready[i - 1]!)) i--
    ready.splice(i, 0, entry)
    readyBytes += entry.keptBytes
  }
  const dropReady = (entry: Ready) => {
    const i = ready.indexOf(entry)
    if (i < 0) return
    ready.splice(i, 1)
    readyBytes -= entry.keptBytes
  }
  // At most `maxHandedOff` entries, looked up by id only by admin operations.
  const readyEntry = (id: string) => ready.find((e) => e.id === id)
  /** The tokens of the ready list's leases, for queries that show their recipients as waiting. */
  const handedOffTokens = () => (ready.length === 0 ? "[]" : JSON.stringify(ready.map((e) => e.token)))

  const writer = yield* GroupCommit.make({
    path: dbPath,
    busyTimeoutMs: options.busyTimeoutMs ?? 5000,
    maxPageCount: options.maxPageCount,
    depth: () => depth,
    committed: (batch) => {
      if (owner) depth = (batch.recount ?? depth) + batch.depthDelta
      if (batch.recount !== undefined) dueFloor = Number.NEGATIVE_INFINITY
      if (batch.dueFrom < dueFloor) dueFloor = batch.dueFrom
      if (batch.recount !== undefined || batch.dueFrom !== Number.POSITIVE_INFINITY) lookedAt = Number.NEGATIVE_INFINITY
      if (batch.dueFrom !== Number.POSITIVE_INFINITY) signal.notify()
    },
    afterCommit: (batch) =>
      Effect.forEach(batch.removeFiles, (file) => BodyFiles.removeQuietly(bodyPath(file)), { discard: true }),
    syncBodies: BodyFiles.syncPath(bodiesDir),
    onBatch: options.onBatch
  })

  const askRecount = () => writer.requestUnsafe({ op: "recount" })
  // Never fails: when the database cannot be asked, the last known depth is still the best answer.
  // A recount, when one is due, rides along with the writer's next batch; the answer is the count
  // as of now.
  const depthNow = (): number => {
    if (refreshDepthSafely()) askRecount()
    return depth
  }

  if (owner) {
    yield* Effect.logInfo(
      `queue: sqlite ${dbPath}: ${depth} pending; returned ${recovered.leases} leases, ` +
        `dead-lettered ${recovered.deadLettered}, removed ${recovered.orphans} orphan files`
    )
  }

  const storeBody = (message: NewMessage): Effect.Effect<StoredBody, MailQueueError> => {
    const body = message.body
    if (body.size <= inlineThreshold) {
      // A copy of its own: the chunks are views into the socket's read buffers (see `detached`).
      if (body._tag === "InMemory") return Effect.sync(() => ({ inline: detached(body), file: null, undo: Effect.void }))
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
    if (yield* read("depth", refreshDepth)) askRecount()
    if (depth >= opts.maxDepth) {
      return yield* new MailQueueError({ reason: { _tag: "Full", depth, maxDepth: opts.maxDepth } })
    }
    // Only a body file could clobber another message's; an inline duplicate is refused by the
    // writer alike. Reads here are not free: after each writer commit this connection's page cache starts empty.
    if (message.body.size > inlineThreshold && (yield* read("lookup", () => sql.exists.get(message.id) !== undefined))) {
      return yield* storageFailed(`message ${message.id} already exists`)
    }
    const envelope = encodeEnvelope(message.envelope)
    const receivedAt = ms(message.receivedAt)
    const now = ms(yield* Clock.currentTimeMillis)
    // Once the body is stored, the job must reach the writer even if this fiber is interrupted:
    // the writer is then the one that undoes the storage if the job does not commit.
    const outcome = yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(restore(storeBody(message)), (stored) => {
        const handoff = handoffFor(now, receivedAt)
        if (handoff !== null) handoffsInFlight++
        const unreserve = Effect.sync(() => {
          if (handoff !== null) handoffsInFlight--
        })
        return writer.enqueue<CommitResult>({
          op: "commit",
          id: message.id,
          envelope,
          trace: message.trace,
          receivedAt,
          size: message.body.size,
          inline: stored.inline,
          file: stored.file,
          rcpts,
          maxDepth: opts.maxDepth,
          handoff
        }, {
          syncBodies: stored.file !== null,
          onFailure: Effect.andThen(unreserve, stored.undo),
          onCommitted: (result) => {
            if (handoff === null) return
            handoffsInFlight--
            if (!result.handedOff) return
            const keep = stored.inline !== null && message.body._tag === "InMemory" && readyBytes + message.body.size <= maxHandedOffBytes
            addReady({
              id: message.id,
              token: handoff.token,
              expiresAt: handoff.expiresAt,
              envelope: message.envelope,
              receivedAt,
              // Inserted with their first attempt counted, as a claim would.
              recipients: rcpts.map((rcpt) => ({ rcpt, attempt: 1 })),
              trace: message.trace,
              size: message.body.size,
              file: stored.file,
              kept: keep && message.body._tag === "InMemory" ? message.body.chunks : null,
              keptBytes: keep ? message.body.size : 0,
              dueAt: receivedAt,
              rowid: result.rowid
            })
            // Runs before the committing session resumes: the woken worker finds the lease in place.
            signal.notify()
          }
        })
      }))
    yield* Deferred.await(outcome)
    // The queue holds its own copy now: give back the spool's memory budget or file.
    yield* message.body.release
  })

  /**
   * The lease a commit asks for, or null to store it queued: only the directory's owner hands
   * off (its start-up recovery returns whatever a crash leaves leased), only once a worker has
   * claimed (so there is a dispatcher, and its lease length is known), within the bound, and
   * only a message already due (one stamped in the future is not claimable yet).
   */
  const handoffFor = (now: number, receivedAt: number): Handoff | null => {
    if (!owner || handoffClosed || handoffLeaseMs === undefined || receivedAt > now) return null
    if (ready.length + handoffsInFlight >= maxHandedOff) return null
    const expiresAt = ms(now + handoffLeaseMs)
    leased(expiresAt)
    return { owner: handoffOwner, token: randomUUID(), expiresAt, now }
  }

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

  /**
   * Whether this claim must go to the database before the ready list: with the list empty,
   * whether anything there is due at all (so an idle worker's claim costs no write); otherwise
   * whether the database holds something a claim must take before the list's head.
   */
  const databaseFirst = (now: number): boolean => {
    const head = ready[0]
    if (head === undefined) {
      if (isQuiet(now)) return false
      const next = sql.nextClaimable.get()
      const at = Math.min(optionalInt(next?.due) ?? Number.POSITIVE_INFINITY, optionalInt(next?.expiry) ?? Number.POSITIVE_INFINITY)
      if (at <= now) return true
      dueFloor = Number.POSITIVE_INFINITY
      quietAt = at
      lookedAt = now
      return false
    }
    if (head.dueAt < dueFloor) return false
    if (sql.anyExpired.get(now) !== undefined) return true
    const first = sql.firstDue.get(now)
    if (first === undefined) {
      dueFloor = Number.POSITIVE_INFINITY
      return false
    }
    dueFloor = int(first.at)
    return claimsBefore(dueFloor, int(first.seq), head)
  }

  const claimFromDatabase = Effect.fnUntraced(function*(
    request: { readonly owner: string; readonly leaseMs: number },
    now: number
  ) {
    const token = randomUUID()
    const expiresAt = ms(now + request.leaseMs)
    leased(expiresAt)
    // Leases taken ahead wait in the ready list like handoffs, under the same rules (owner only, bounded).
    const ahead = owner && !handoffClosed ? Math.max(0, Math.min(claimAhead, maxHandedOff - ready.length - handoffsInFlight)) : 0
    handoffsInFlight += ahead
    let reserved = true
    const unreserve = () => {
      if (reserved) handoffsInFlight -= ahead
      reserved = false
    }
    const claimed = yield* writer.submit<ReadonlyArray<Claimed>>(
      { op: "claim", owner: request.owner, token, expiresAt, now, ahead },
      {
        durable: false,
        onFailure: Effect.sync(unreserve),
        // In place before any caller resumes: a concurrent claim that found nothing takes one of these.
        onCommitted: (all) => {
          unreserve()
          for (const c of all.slice(1)) {
            // A row whose envelope does not decode stays leased until it expires; the claim that
            // takes it over then reports it.
            const envelope = Result.try(() => decodeEnvelope(c.envelope))
            if (Result.isFailure(envelope)) continue
            addReady({
              id: c.id,
              token: c.token,
              expiresAt,
              envelope: envelope.success,
              receivedAt: c.receivedAt,
              recipients: c.recipients,
              trace: c.trace,
              size: c.size,
              file: c.file,
              kept: null,
              keptBytes: 0,
              dueAt: c.dueAt,
              rowid: c.rowid
            })
          }
        }
      }
    )
    const c = claimed[0]
    if (c === undefined) return Option.none<Lease>()
    const file = c.file ?? undefined
    if (file !== undefined) fileBacked.add(token)
    const envelope = yield* read(`decode envelope of ${c.id}`, () => decodeEnvelope(c.envelope))
    return Option.some<Lease>({
      id: c.id,
      token,
      owner: request.owner,
      expiresAt,
      envelope,
      receivedAt: c.receivedAt,
      recipients: c.recipients,
      body: messageBody(c.id, c.trace, c.size, file)
    })
  })

  /**
   * Turns a handed-off lease into the claimer's lease. One with less than half the requested
   * time left is extended first, by a write that also checks the token still holds; a lease lost
   * meanwhile (expired and taken over) gives undefined.
   */
  const takeHandedOff = Effect.fnUntraced(function*(
    entry: Ready,
    request: { readonly owner: string; readonly leaseMs: number },
    now: number
  ) {
    let expiresAt = entry.expiresAt
    if (expiresAt - now < request.leaseMs / 2) {
      expiresAt = ms(now + request.leaseMs)
      const held = yield* writer.submit<boolean>(
        { op: "extend", id: entry.id, token: entry.token, owner: request.owner, expiresAt },
        { durable: false }
      )
      if (!held) return undefined
    }
    if (entry.file !== null) fileBacked.add(entry.token)
    const kept = entry.kept
    return {
      id: entry.id,
      token: entry.token,
      owner: request.owner,
      expiresAt,
      envelope: entry.envelope,
      receivedAt: entry.receivedAt,
      recipients: entry.recipients,
      body: kept === null
        ? messageBody(entry.id, entry.trace, entry.size, entry.file ?? undefined)
        : { size: Buffer.byteLength(entry.trace) + entry.size, stream: () => BodyStream.fromParts(entry.trace, kept) }
    } satisfies Lease
  })

  const claim = Effect.fnUntraced(function*(request: { readonly owner: string; readonly leaseMs: number }) {
    // From now on commits may hand off, with the lease length this dispatcher asks for.
    handoffLeaseMs = request.leaseMs
    const now = ms(yield* Clock.currentTimeMillis)
    // Nothing due in the database and nothing handed off: no trip to the writer. A commit landing
    // right after this read notifies the work signal once it committed, so the worker that waits
    // next claims again.
    if (yield* read("claim", () => databaseFirst(now))) {
      const claimed = yield* claimFromDatabase(request, now)
      if (Option.isSome(claimed)) return claimed
    }
    while (true) {
      const entry = ready[0]
      if (entry === undefined) return Option.none<Lease>()
      dropReady(entry)
      const lease = yield* takeHandedOff(entry, request, now)
      if (lease !== undefined) return Option.some<Lease>(lease)
    }
  })

  const settle = Effect.fnUntraced(function*(lease: Lease, settlements: ReadonlyArray<Settlement>) {
    const now = yield* Clock.currentTimeMillis
    const rows = settlements.map((s): SettleRow =>
      s._tag === "Delivered"
        ? { rcpt: s.rcpt, tag: "Delivered", reply: s.reply, at: 0 }
        : s._tag === "Retry"
        ? { rcpt: s.rcpt, tag: "Retry", reply: s.reply, at: ms(s.at) }
        : { rcpt: s.rcpt, tag: "Dead", reply: s.reply, at: ms(now + opts.deadLetterTtlMs) }
    )
    const delivered = new Set(rows.filter((r) => r.tag === "Delivered").map((r) => r.rcpt))
    const allDelivered = lease.recipients.every((r) => delivered.has(r.rcpt))
    // Settles are not flushed on their own (see GroupCommit's `durable`), except one that may
    // delete a body file: the row saying "delivered" must be on disk before the file goes.
    const mayDeleteFile = fileBacked.delete(lease.token)
    yield* writer.submit<void>({ op: "settle", id: lease.id, token: lease.token, rows, allDelivered }, {
      durable: mayDeleteFile
    })
  })

  const release = Effect.fnUntraced(function*(lease: Lease) {
    yield* writer.submit<void>({ op: "release", id: lease.id, token: lease.token }, { durable: false })
    fileBacked.delete(lease.token)
  })

  // At scope close, handed-off leases nobody took go back to the queue with their attempt uncounted,
  // as a worker's release would do. Registered after the writer, so it runs while the writer still
  // takes ops. A crash instead leaves them to the next owner's start-up recovery.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      handoffClosed = true
      // Handoff commits still being written land in the ready list before a no-op behind them returns.
      if (handoffsInFlight > 0) yield* Effect.ignore(writer.submit<void>({ op: "recount" }, { durable: false }))
      const left = [...ready]
      for (const entry of left) dropReady(entry)
      yield* Effect.forEach(
        left,
        (entry) => Effect.ignore(writer.submit<void>({ op: "release", id: entry.id, token: entry.token }, { durable: false })),
        { concurrency: "unbounded", discard: true }
      )
    })
  )

  const retryNow = Effect.fn("SqliteQueue.retryNow")(function*(id: string) {
    const now = ms(yield* Clock.currentTimeMillis)
    const changed = yield* writer.submit<boolean>({ op: "retryNow", id, now })
    // Retrying recipients taken ahead into the ready list are shown as retry, and are due now already.
    const ahead = readyEntry(id)
    return changed || (ahead !== undefined && ahead.recipients.some((r) => r.attempt > 1))
  })

  const remove = Effect.fn("SqliteQueue.remove")(function*(id: string) {
    const removed = yield* writer.submit<boolean>({ op: "remove", id })
    // A handed-off lease of it is lost with it; no worker should take it.
    const entry = readyEntry(id)
    if (entry !== undefined) dropReady(entry)
    return removed
  })

  /** A recipient row as the contract shows it; `handedOff` is the token of its message's lease in the ready list. */
  const recipientStatus = (row: Row, handedOff: string | undefined): RecipientStatus => {
    const stored = text(row.state)
    if (!isRecipientState(stored)) throw new TypeError(`queue database: unknown recipient state ${stored}`)
    // Until a worker takes it, a lease in the ready list is an implementation detail: its attempt
    // has not happened, and the recipient waits as it did before (see `waitingAs`).
    const waiting = stored === "inflight" && handedOff !== undefined && row.lease_token === handedOff
    const attempts = int(row.attempts) - (waiting ? 1 : 0)
    return {
      rcpt: text(row.rcpt),
      state: waiting ? waitingAs(attempts) : stored,
      attempts,
      nextAttemptAt: int(row.next_attempt_at),
      lastReply: optionalText(row.last_reply),
      expiresAt: optionalInt(row.expires_at)
    }
  }

  const messageInfo = (
    id: string,
    envelope: Envelope,
    receivedAt: number,
    size: number,
    handedOff: string | undefined
  ): MessageInfo => {
    const recipients = sql.recipients.all(id).map((row) => recipientStatus(row, handedOff))
    return { id, envelope, receivedAt, size, state: messageState(recipients.map((r) => r.state)), recipients }
  }

  const get = Effect.fn("SqliteQueue.get")(function*(id: string) {
    return yield* read(`get ${id}`, () => {
      const row = sql.info.get(id)
      if (row === undefined) return Option.none<MessageInfo>()
      return Option.some(
        messageInfo(id, decodeEnvelope(text(row.envelope)), int(row.received_at), int(row.size), readyEntry(id)?.token)
      )
    })
  })

  const list = Effect.fn("SqliteQueue.list")(function*(filter: ListFilter = {}) {
    const rank = filter.state === undefined || filter.state === "all" ? 0 : stateRank[filter.state]
    const limit = filter.limit === undefined ? -1 : Math.max(0, Math.floor(filter.limit))
    return yield* read("list", () => {
      const handedOff = new Map(ready.map((e) => [e.id, e.token]))
      return sql.list.all({ rank, limit, handedOff: handedOffTokens() }).map((row) => {
        const id = text(row.id)
        return messageInfo(id, decodeEnvelope(text(row.envelope)), int(row.received_at), int(row.size), handedOff.get(id))
      })
    })
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
    for (const row of sql.countByState.all({ handedOff: handedOffTokens() })) {
      const state = text(row.state)
      if (isRecipientState(state)) recipients[state] = int(row.n)
    }
    return { messages: int(sql.countMessages.get()?.n), depth, recipients }
  }).pipe(Effect.withSpan("SqliteQueue.stats"))

  const nextDueAt: Effect.Effect<Option.Option<number>, MailQueueError> = Effect.flatMap(Clock.currentTimeMillis, (now) =>
    isQuiet(now) ? Effect.succeed(quietNextDue()) : exactNextDueAt)

  // While quiet (see `quietAt`), the last look's lower bound stands in for the two reads: a
  // worker that sleeps until then and finds nothing looks again, so an early answer only costs a
  // wake-up, and every idle worker asks this once per delivered message.
  const quietNextDue = (): Option.Option<number> => {
    const at = Math.min(ready[0]?.dueAt ?? Number.POSITIVE_INFINITY, quietAt)
    return at === Number.POSITIVE_INFINITY ? Option.none() : Option.some(at)
  }

  const exactNextDueAt: Effect.Effect<Option.Option<number>, MailQueueError> = read("next due", () => {
    // A lease in the ready list is claimable now, from its due time (the list's head is the oldest).
    const handedOff = ready[0]?.dueAt
    const stored = optionalInt(sql.nextDueAt.get()?.at)
    const due = handedOff === undefined || stored === undefined ? handedOff ?? stored : Math.min(handedOff, stored)
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
    depth: Effect.sync(depthNow),
    depthUnsafe: depthNow,
    nextDueAt,
    awaitWork: signal.await,
    list,
    get,
    readMessage,
    retryNow,
    remove,
    purgeExpired: Effect.gen(function*() {
      const now = ms(yield* Clock.currentTimeMillis)
      return yield* writer.submit<number>({ op: "purgeExpired", now })
    }).pipe(Effect.withSpan("SqliteQueue.purgeExpired")),
    purgeDead: writer.submit<number>({ op: "purgeDead" }).pipe(Effect.withSpan("SqliteQueue.purgeDead")),
    stats
  })
})

export const layer = (options: SqliteQueueOptions): Layer.Layer<MailQueue, MailQueueError> =>
  Layer.effect(MailQueue, make(options))
