/**
 * The durable embedded queue backend (`MailQueue` and `QueueAdmin`; the default): one SQLite database through
 * `node:sqlite` at `<dataDir>/queue.db`, plus `<dataDir>/bodies/` for bodies too large to keep
 * in a row.
 *
 * Durability: WAL with `synchronous=FULL`, so `COMMIT` returns only once the log is on disk; a
 * body file and its directory entry are flushed before the row naming it commits. Throughput:
 * every write goes through one group-commit writer (`internal/GroupCommit.ts`), so concurrent
 * sessions share each transaction and its fsync, and the write connection lives on a worker
 * thread (`internal/writerThread.ts`), so statements and fsyncs never block the event loop; this
 * thread keeps a read-only role (start-up recovery aside): lookups, listings, bodies. The process
 * that owns the directory runs the start-up recovery (`internal/sqliteRecovery.ts`).
 * Another process (the `incoming queue` CLI) can open the same directory while the server runs:
 * WAL lets it read, `busy_timeout` lets it write, and it skips the owner-only recovery.
 *
 * Handoff: once a worker of this process has claimed, a commit of a message nothing in the
 * database is due before inserts its recipients already leased (as a claim at that moment would
 * have, attempt counted) and keeps the lease in memory, with the body bytes it just wrote; the
 * next claim takes it from there without a database trip, and its settle is usually one DELETE.
 * With a backlog instead, a claim that goes to the database leases a few more due messages
 * ahead into the same ready list (`internal/ReadyList.ts` holds the list and its heuristics). Until a worker takes such a lease, its recipients show as
 * waiting (queued, or retry) to `get`, `list`, `stats` and `nextDueAt`. Clean shutdown gives
 * untaken ones back; after a crash the start-up recovery returns them like any other lease (so
 * their attempt stays counted).
 *
 * Operator reads and writes are `internal/sqliteAdmin.ts`. Time comes from Effect's `Clock`; the number of pending messages is kept in memory because
 * every MAIL command asks for it, and recounted when another process changed the database.
 */
import { randomUUID } from "node:crypto"
import { mkdir } from "node:fs/promises"
import { join } from "node:path"
import { Deferred, Clock, Effect, type Layer, Option, Result } from "effect"
import * as Priority from "../protocol/Priority.ts"
import { detached } from "../spool/SpooledBody.ts"
import * as BodyFiles from "./internal/bodyFiles.ts"
import * as BodyStream from "./internal/bodyStream.ts"
import * as GroupCommit from "./internal/GroupCommit.ts"
import * as InstanceLock from "./internal/InstanceLock.ts"
import * as ReadyList from "./internal/ReadyList.ts"
import * as SqliteOps from "./internal/sqliteOps.ts"
import * as SqliteAdmin from "./internal/sqliteAdmin.ts"
import { recover, type Recovered } from "./internal/sqliteRecovery.ts"
import { decodeEnvelope, encodeEnvelope, int, optionalInt } from "./internal/sqliteSchema.ts"
import { messageBody, openDatabase, prepare, read } from "./internal/sqliteStatements.ts"
import * as WorkSignal from "./internal/WorkSignal.ts"
import type { Claimed, CommitResult, Handoff } from "./internal/writerProtocol.ts"
import {
  defaultQueueOptions,
  type Lease,
  MailQueue,
  type NewMessage,
  type QueueOptions,
  type Settlement,
  type SettleExtras
} from "./MailQueue.ts"
import { fromStorageException, MailQueueError } from "./MailQueueError.ts"
import type { QueueAdmin } from "./QueueAdmin.ts"
import * as QueueBackend from "./QueueBackend.ts"

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

// Re-exported: tests and the benchmark size things by them.
export { claimAhead, maxHandedOff } from "./internal/ReadyList.ts"

type BatchInfo = GroupCommit.BatchInfo
export type { BatchInfo }

interface StoredBody {
  readonly inline: Uint8Array | null
  readonly file: string | null
  /** Undoes the body's storage if its commit fails. */
  readonly undo: Effect.Effect<void>
}

// Ids become file names under bodies/: nothing that could escape the directory or look like a temp file.
const validId = (id: string): boolean => /^[A-Za-z0-9_-]{1,128}$/.test(id)

const { ms } = SqliteOps

const storageFailed = (detail: string) => new MailQueueError({ reason: { _tag: "StorageFailed", detail } })

export const make = Effect.fnUntraced(function*(options: SqliteQueueOptions) {
  const opts: QueueOptions = {
    deadLetterTtlMs: options.deadLetterTtlMs ?? defaultQueueOptions.deadLetterTtlMs,
    maxDepth: options.maxDepth ?? defaultQueueOptions.maxDepth,
    priorityMaxWaitMs: options.priorityMaxWaitMs ?? defaultQueueOptions.priorityMaxWaitMs
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
  const bodyPath = (file: string) => join(bodiesDir, file)

  let recovered: Recovered | undefined
  if (owner) {
    recovered = yield* recover({ db, sql, bodiesDir, deadLetterTtlMs: opts.deadLetterTtlMs })
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
  const ready = ReadyList.make({ enabled: owner })
  // Handed-off and taken-ahead rows carry this owner until a worker extends them: start-up recovery
  // takes their attempt back, and a retry-now from another process sees them as due, not in flight.
  const handoffOwner = `handoff-${process.pid}-${randomUUID().slice(0, 8)}`
  const probe: ReadyList.Probe = {
    nextClaimable: () => {
      const next = sql.nextClaimable.get()
      return Math.min(
        optionalInt(next?.due) ?? Number.POSITIVE_INFINITY,
        optionalInt(next?.prioritised) ?? Number.POSITIVE_INFINITY,
        optionalInt(next?.expiry) ?? Number.POSITIVE_INFINITY
      )
    },
    anyPrioritised: () => sql.anyPrioritised.get() !== undefined,
    anyExpired: (now) => sql.anyExpired.get(now) !== undefined,
    firstDue: (now) => {
      const first = sql.firstDue.get(now)
      return first === undefined ? undefined : { at: int(first.at), rowid: int(first.seq) }
    }
  }

  // A database with waiting rows at other priorities (from before a restart) starts prioritised.
  if (yield* read("priorities", probe.anyPrioritised)) ready.prioritise()

  const writer = yield* GroupCommit.make({
    path: dbPath,
    busyTimeoutMs: options.busyTimeoutMs ?? 5000,
    maxPageCount: options.maxPageCount,
    depth: () => depth,
    committed: (batch) => {
      if (owner) depth = (batch.recount ?? depth) + batch.depthDelta
      ready.committed({ recounted: batch.recount !== undefined, dueFrom: batch.dueFrom, firstDue: batch.firstDue })
      // Another process wrote (`incoming queue hold`, delete, ...): the leases waiting in the
      // ready list may be of messages it changed, so they go back untaken and later claims go
      // by what the database says now.
      if (batch.recount !== undefined) returnReady()
      if (batch.recount !== undefined) ready.prioritise()
      if (batch.dueFrom !== Number.POSITIVE_INFINITY) signal.notify()
    },
    afterCommit: (batch) =>
      Effect.forEach(batch.removeFiles, (file) => BodyFiles.removeQuietly(bodyPath(file)), { discard: true }),
    syncBodies: BodyFiles.syncPath(bodiesDir),
    onBatch: options.onBatch
  })

  const askRecount = () => writer.requestUnsafe({ op: "recount" })
  function returnReady() {
    for (const entry of [...ready.entries]) {
      ready.drop(entry)
      writer.requestUnsafe({ op: "release", id: entry.id, token: entry.token })
    }
  }
  // Never fails: when the database cannot be asked, the last known depth is still the best answer.
  // A recount, when one is due, rides along with the writer's next batch; the answer is the count
  // as of now.
  const depthNow = (): number => {
    if (refreshDepthSafely()) askRecount()
    return depth
  }

  if (recovered !== undefined) {
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
    const priority = message.envelope.priority ?? Priority.normal
    // Claims must now look at the database first (see `ReadyList.prioritise`).
    if (priority !== Priority.normal) ready.prioritise()
    const now = ms(yield* Clock.currentTimeMillis)
    // Once the body is stored, the job must reach the writer even if this fiber is interrupted:
    // the writer is then the one that undoes the storage if the job does not commit.
    const outcome = yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(restore(storeBody(message)), (stored) => {
        // A held message is never handed to a worker: it waits in the database for its release.
        const held = message.held === true
        const handoff = priority === Priority.normal && !held ? handoffFor(now, receivedAt) : null
        if (handoff !== null) ready.reserve(1)
        const unreserve = Effect.sync(() => {
          if (handoff !== null) ready.unreserve(1)
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
          priority,
          maxDepth: opts.maxDepth,
          held,
          handoff
        }, {
          syncBodies: stored.file !== null,
          onFailure: Effect.andThen(unreserve, stored.undo),
          onCommitted: (result) => {
            if (handoff === null) return
            ready.unreserve(1)
            if (!result.handedOff) return
            const keep = stored.inline !== null && message.body._tag === "InMemory" && ready.canKeep(message.body.size)
            ready.add({
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
   * The lease a commit asks for, or null to store it queued (see `ReadyList.handoffExpiry` for
   * when a commit may be handed off).
   */
  const handoffFor = (now: number, receivedAt: number): Handoff | null => {
    const expiresAt = ready.handoffExpiry(now, receivedAt)
    return expiresAt === undefined ? null : { owner: handoffOwner, token: randomUUID(), expiresAt, now }
  }

  const bodyOf = (id: string, trace: string, size: number, file: string | undefined) =>
    messageBody(sql, bodiesDir, id, trace, size, file)

  // commit, claim, settle and release run once or more per message: they are untraced (a span
  // costs several µs) and show up inside the session's and the delivery's spans instead.

  // Leases of messages whose body is a file: settling them may delete the file (see settle).
  const fileBacked = new Set<string>()

  const claimFromDatabase = Effect.fnUntraced(function*(
    request: { readonly owner: string; readonly leaseMs: number },
    now: number
  ) {
    const token = randomUUID()
    const expiresAt = ms(now + request.leaseMs)
    ready.leased(expiresAt)
    // Leases taken ahead wait in the ready list like handoffs, under the same rules (owner only, bounded).
    const ahead = ready.aheadRoom()
    ready.reserve(ahead)
    let reserved = true
    const unreserve = () => {
      if (reserved) ready.unreserve(ahead)
      reserved = false
    }
    const claimed = yield* writer.submit<ReadonlyArray<Claimed>>(
      {
        op: "claim",
        owner: request.owner,
        token,
        expiresAt,
        now,
        ahead,
        aheadOwner: handoffOwner,
        maxWaitMs: opts.priorityMaxWaitMs,
        // Leases in the ready list are normal: they go before anything below normal.
        belowNormal: ready.entries.length === 0
      },
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
            ready.add({
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
      body: bodyOf(c.id, c.trace, c.size, file)
    })
  })

  /** A handed-off lease as the claimer's lease, expiring at `expiresAt`. */
  const leaseOf = (entry: ReadyList.Ready, owner: string, expiresAt: number): Lease => {
    if (entry.file !== null) fileBacked.add(entry.token)
    const kept = entry.kept
    return {
      id: entry.id,
      token: entry.token,
      owner,
      expiresAt,
      envelope: entry.envelope,
      receivedAt: entry.receivedAt,
      recipients: entry.recipients,
      body: kept === null
        ? bodyOf(entry.id, entry.trace, entry.size, entry.file ?? undefined)
        : { size: Buffer.byteLength(entry.trace) + entry.size, stream: () => BodyStream.fromParts(entry.trace, kept) }
    }
  }

  /**
   * The first handed-off lease of the ready list that still holds, as the claimer's lease. One
   * with less than half the requested time left is extended first, by a write that also checks
   * the token still holds; a lease lost meanwhile (expired and taken over) is skipped.
   */
  const takeHandedOff = (
    request: { readonly owner: string; readonly leaseMs: number },
    now: number
  ): Effect.Effect<Option.Option<Lease>, MailQueueError> => {
    const entry = ready.entries[0]
    if (entry === undefined) return Effect.succeedNone
    ready.drop(entry)
    if (entry.expiresAt - now >= request.leaseMs / 2) return Effect.succeedSome(leaseOf(entry, request.owner, entry.expiresAt))
    const expiresAt = ms(now + request.leaseMs)
    return Effect.flatMap(
      writer.submit<boolean>({ op: "extend", id: entry.id, token: entry.token, owner: request.owner, expiresAt }, { durable: false }),
      (held) => (held ? Effect.succeedSome(leaseOf(entry, request.owner, expiresAt)) : takeHandedOff(request, now))
    )
  }

  // Once per delivered message: a claim the ready list answers is one step, not a generator.
  const claim = (request: { readonly owner: string; readonly leaseMs: number }): Effect.Effect<Option.Option<Lease>, MailQueueError> =>
    Effect.withFiber((fiber) => {
      // From now on commits may hand off, with the lease length this dispatcher asks for.
      ready.workersLease(request.leaseMs)
      const now = ms(fiber.getRef(Clock.Clock).currentTimeMillisUnsafe())
      // Nothing due in the database and nothing handed off: no trip to the writer. A commit landing
      // right after this read notifies the work signal once it committed, so the worker that waits
      // next claims again.
      let databaseFirst: boolean
      try {
        databaseFirst = ready.databaseFirst(now, probe)
      } catch (cause) {
        return Effect.fail(fromStorageException(cause, "claim"))
      }
      if (!databaseFirst) return takeHandedOff(request, now)
      return Effect.flatMap(claimFromDatabase(request, now), (claimed) => Option.isSome(claimed) ? Effect.succeed(claimed) : takeHandedOff(request, now))
    })

  // Settles are not flushed on their own (see GroupCommit's `durable`), except one that may
  // delete a body file (the row saying "delivered" must be on disk before the file goes) or
  // that carries reports.

  /** A settle that carries reports (bounces, delay notices): their bodies are stored first. */
  const settleWithReports = Effect.fnUntraced(function*(lease: Lease, settlements: ReadonlyArray<Settlement>, extras: SettleExtras) {
    const now = yield* Clock.currentTimeMillis
    const reports = extras.reports ?? []
    for (const m of reports) {
      if (!validId(m.id) || m.envelope.rcptTo.length === 0) return yield* storageFailed(`invalid report ${JSON.stringify(m.id)}`)
    }
    const stored = yield* Effect.forEach(reports, storeBody)
    fileBacked.delete(lease.token)
    const rows = reports.map((m, i) => SqliteOps.reportRow(m, stored[i]!))
    yield* writer.submit<void>(
      SqliteOps.settleOp(lease, settlements, { now, deadLetterTtlMs: opts.deadLetterTtlMs, reports: rows, delayNotified: extras.delayNotified }),
      {
        durable: true,
        syncBodies: stored.some((b) => b.file !== null),
        onFailure: Effect.forEach(stored, (b) => b.undo, { discard: true })
      }
    )
    yield* Effect.forEach(reports, (m) => m.body.release, { discard: true })
  })

  // Once per delivered message: without reports a settle is one step to the writer, not a
  // generator (the memory queue's settle is built the same way).
  const settle = (lease: Lease, settlements: ReadonlyArray<Settlement>, extras?: SettleExtras) =>
    extras?.reports !== undefined && extras.reports.length > 0
      ? settleWithReports(lease, settlements, extras)
      : Effect.withFiber((fiber) => {
        const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
        const op = SqliteOps.settleOp(lease, settlements, { now, deadLetterTtlMs: opts.deadLetterTtlMs, reports: [], delayNotified: extras?.delayNotified })
        return writer.submit<void>(op, { durable: fileBacked.delete(lease.token), syncBodies: false, onFailure: Effect.void })
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
      ready.close()
      // Handoff commits still being written land in the ready list before a no-op behind them returns.
      if (ready.inFlight() > 0) yield* Effect.ignore(writer.submit<void>({ op: "recount" }, { durable: false }))
      const left = [...ready.entries]
      for (const entry of left) ready.drop(entry)
      yield* Effect.forEach(
        left,
        (entry) => Effect.ignore(writer.submit<void>({ op: "release", id: entry.id, token: entry.token }, { durable: false })),
        { concurrency: "unbounded", discard: true }
      )
    })
  )

  // While quiet (see `ReadyList`), the last look's lower bound stands in for the two reads: a
  // worker that sleeps until then and finds nothing looks again, so an early answer only costs a
  // wake-up, and every idle worker asks this once per delivered message.
  const nextDueAt: Effect.Effect<Option.Option<number>, MailQueueError> = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const quiet = ready.quietNextDue(now)
    if (quiet === undefined) return exactNextDueAt
    return Effect.succeed(quiet === Number.POSITIVE_INFINITY ? Option.none() : Option.some(quiet))
  })

  const exactNextDueAt: Effect.Effect<Option.Option<number>, MailQueueError> = read("next due", () => {
    // A lease in the ready list is claimable now, from its due time (the list's head is the oldest).
    const handedOff = ready.entries[0]?.dueAt
    const normal = optionalInt(sql.nextDueAt.get()?.at)
    const other = ready.prioritised() ? optionalInt(sql.nextDueAtPrioritised.get()?.at) : undefined
    const stored = normal === undefined || other === undefined ? normal ?? other : Math.min(normal, other)
    const due = handedOff === undefined || stored === undefined ? handedOff ?? stored : Math.min(handedOff, stored)
    const expiry = optionalInt(sql.nextLeaseExpiry.get()?.at)
    if (due === undefined) return Option.fromNullishOr(expiry)
    return Option.some(expiry === undefined ? due : Math.min(due, expiry))
  })

  const queue = MailQueue.of({
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
    purgeExpired: Effect.gen(function*() {
      const now = ms(yield* Clock.currentTimeMillis)
      return yield* writer.submit<number>({ op: "purgeExpired", now })
    }).pipe(Effect.withSpan("SqliteQueue.purgeExpired"))
  })
  const admin = SqliteAdmin.make({ sql, writer, ready, bodiesDir, depthNow, priorityMaxWaitMs: opts.priorityMaxWaitMs })
  return { queue, admin } satisfies QueueBackend.QueueBackend
})

export const layer = (options: SqliteQueueOptions): Layer.Layer<MailQueue | QueueAdmin, MailQueueError> =>
  QueueBackend.layer(make(options))
