/**
 * The writer thread of the SQLite queue (a `node:worker_threads` entry point, plain Node: no
 * Effect here). It owns the queue's only write connection and applies each batch it is sent in
 * ONE transaction, so statement work, `COMMIT` and the WAL fsync happen off the event loop while
 * the main thread keeps serving sessions and gathering the next batch.
 *
 * Each op decides its own outcome and checks its preconditions before writing, so a refused op
 * (queue full, lease lost) leaves nothing behind. An op that throws (disk full, I/O error)
 * aborts the whole batch: it is rolled back and reported as failed, so a batch is all or nothing.
 * A batch is reported only after `COMMIT` returned — with `synchronous=FULL` for a durable one,
 * i.e. after the WAL was fsync'd.
 */
import { DatabaseSync, type SQLOutputValue } from "node:sqlite"
import { parentPort, workerData } from "node:worker_threads"
import * as Reclaim from "../../internal/reclaim.ts"
import type { MailQueueErrorReason } from "../MailQueueError.ts"
import type { BatchRequest, Claimed, CommitResult, Op, Outcome, Reply, Request, WriterConfig } from "./writerProtocol.ts"

const port = parentPort
if (port === null) throw new Error("writerThread.ts must run in a worker thread")
const config = workerData as WriterConfig

const post = (reply: Reply) => port.postMessage(reply)

const errorCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
const errorMessage = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

const num = (value: SQLOutputValue | undefined): number => {
  if (typeof value === "number") return value
  if (typeof value === "bigint") return Number(value)
  throw new TypeError(`queue database: expected an integer, got ${typeof value}`)
}
const str = (value: SQLOutputValue | undefined): string => {
  if (typeof value === "string") return value
  throw new TypeError(`queue database: expected text, got ${typeof value}`)
}
const optStr = (value: SQLOutputValue | undefined): string | null =>
  value === null || value === undefined ? null : str(value)

let db: DatabaseSync
try {
  db = new DatabaseSync(config.path, { timeout: config.busyTimeoutMs })
  db.exec("PRAGMA synchronous = FULL")
  db.exec("PRAGMA foreign_keys = ON")
  if (config.maxPageCount !== undefined) db.exec(`PRAGMA max_page_count = ${Math.floor(config.maxPageCount)}`)
} catch (cause) {
  // Reported as a reply, not thrown: the main thread turns it into the queue's error and the
  // thread ends on its own.
  post({ type: "openFailed", message: errorMessage(cause), code: errorCode(cause) })
  process.exit(1)
}

// Shared by the claim queries and the handoff check, so that they agree on what "claimable" is: a
// recipient waiting (not held), and none of its message's recipients out on a lease.
const waiting = "r.state IN ('queued', 'retry') AND r.held = 0"
const noLeaseOut = "NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')"

const sql = {
  dataVersion: db.prepare("PRAGMA data_version"),
  exists: db.prepare("SELECT 1 AS found FROM messages WHERE id = ?"),
  insertMessage: db.prepare(
    "INSERT INTO messages (id, envelope, trace, received_at, size, body, body_file) VALUES (?, ?, ?, ?, ?, ?, ?)"
  ),
  // A commit's insert is its own existence check: an id already stored inserts nothing (a
  // constraint error instead would abort the whole batch), one statement instead of two.
  insertNewMessage: db.prepare(
    `INSERT INTO messages (id, envelope, trace, received_at, size, body, body_file) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (id) DO NOTHING`
  ),
  insertRecipient: db.prepare(
    "INSERT INTO recipients (message_id, rcpt, state, attempts, next_attempt_at, priority, held) VALUES (?, ?, 'queued', 0, ?, ?, ?)"
  ),
  // A handed-off recipient: exactly the row a claim would leave (attempt counted, lease set).
  insertLeased: db.prepare(
    `INSERT INTO recipients (message_id, rcpt, state, attempts, next_attempt_at, lease_owner, lease_token, lease_expires_at)
     VALUES (?, ?, 'inflight', 1, ?, ?, ?, ?)`
  ),
  // The handoff check of every commit (see `dueBefore`) in one statement: a due normal row no
  // lease holds back (as `nextDue` finds), an expired lease, or a due row above normal priority
  // (`nextPrioritised`'s rows; `priority <> 0` lets it use that query's partial index).
  dueBefore: db.prepare(
    `SELECT EXISTS (SELECT 1 FROM recipients AS r
         WHERE ${waiting} AND r.priority = 0 AND r.next_attempt_at <= $at
           AND ${noLeaseOut})
       OR EXISTS (SELECT 1 FROM recipients WHERE state = 'inflight' AND lease_expires_at <= $now)
       OR EXISTS (SELECT 1 FROM recipients AS r
         WHERE ${waiting} AND r.priority <> 0 AND r.priority > 0 AND r.next_attempt_at <= $now
           AND ${noLeaseOut}) AS due`
  ),
  releaseExpired: db.prepare(
    `UPDATE recipients SET state = 'queued', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     WHERE state = 'inflight' AND lease_expires_at <= ?`
  ),
  // The normal-priority message due the longest whose other recipients are not out on a lease;
  // the partial index recipients_due yields rows in (next_attempt_at, rowid) order, so this stops
  // at the first hit.
  nextDue: db.prepare(
    `SELECT r.message_id AS id, r.next_attempt_at AS at, r.rowid AS seq FROM recipients AS r
     WHERE ${waiting} AND r.priority = 0 AND r.next_attempt_at <= ?
       AND ${noLeaseOut}
     ORDER BY r.next_attempt_at, r.rowid LIMIT 1`
  ),
  // The same among rows at other priorities, highest first (recipients_prioritised: empty when
  // nobody uses priorities, so this costs one empty index probe per claim).
  nextPrioritised: db.prepare(
    `SELECT r.message_id AS id, r.next_attempt_at AS at, r.rowid AS seq, r.priority AS priority FROM recipients AS r
     WHERE ${waiting} AND r.priority <> 0 AND r.next_attempt_at <= ?
       AND ${noLeaseOut}
     ORDER BY r.priority DESC, r.next_attempt_at, r.rowid LIMIT 1`
  ),
  // Ageing (`Priority.effective`): waiting rows below normal whose message arrived at or before
  // the cut-off become normal. The envelope keeps the level the message came with.
  age: db.prepare(
    `UPDATE recipients SET priority = 0
     WHERE state IN ('queued', 'retry') AND held = 0 AND priority <> 0 AND priority < 0
       AND message_id IN (SELECT id FROM messages WHERE received_at <= ?)`
  ),
  setPriority: db.prepare(
    "UPDATE messages SET envelope = json_set(envelope, '$.priority', ?) WHERE id = ?"
  ),
  setRowsPriority: db.prepare("UPDATE recipients SET priority = ? WHERE message_id = ?"),
  lease: db.prepare(
    `UPDATE recipients SET state = 'inflight', attempts = attempts + 1, lease_owner = ?, lease_token = ?, lease_expires_at = ?
     WHERE message_id = ? AND state IN ('queued', 'retry') AND held = 0 AND next_attempt_at <= ?
     RETURNING rowid AS seq, rcpt, attempts`
  ),
  extend: db.prepare(
    `UPDATE recipients SET lease_expires_at = ?, lease_owner = ?
     WHERE message_id = ? AND lease_token = ? AND state = 'inflight'`
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
  // The whole settle of a lease whose recipients were all delivered, when nothing else of the
  // message is pending: one statement instead of marking each row and then dropping the message.
  // The EXISTS is the lease check: a lost lease's token is gone from every row.
  deleteSettled: db.prepare(
    `DELETE FROM messages WHERE id = $id
       AND EXISTS (SELECT 1 FROM recipients WHERE message_id = $id AND lease_token = $token AND state = 'inflight')
       AND NOT EXISTS (SELECT 1 FROM recipients WHERE message_id = $id AND state <> 'delivered'
         AND (state <> 'inflight' OR lease_token IS NOT $token))
     RETURNING body_file`
  ),
  firstWaiting: db.prepare(
    "SELECT MIN(next_attempt_at) AS at FROM recipients WHERE message_id = ? AND state IN ('queued', 'retry') AND held = 0"
  ),
  hold: db.prepare("UPDATE recipients SET held = 1 WHERE message_id = ?"),
  unhold: db.prepare("UPDATE recipients SET held = 0 WHERE message_id = ? AND held = 1"),
  deleteMessage: db.prepare("DELETE FROM messages WHERE id = ? RETURNING body_file"),
  markDelayNotified: db.prepare("UPDATE messages SET envelope = json_set(envelope, '$.delayNotified', ?) WHERE id = ?"),
  requeue: db.prepare(
    `UPDATE recipients SET state = 'queued', next_attempt_at = ?, expires_at = NULL
     WHERE message_id = ? AND state IN ('retry', 'dead')`
  ),
  waitingRetry: db.prepare(
    "SELECT 1 AS found FROM recipients WHERE message_id = ? AND state = 'inflight' AND lease_owner LIKE 'handoff-%' AND attempts > 1"
  ),
  purgeExpired: db.prepare("DELETE FROM recipients WHERE state = 'dead' AND expires_at <= ? RETURNING message_id"),
  purgeDead: db.prepare("DELETE FROM recipients WHERE state = 'dead' RETURNING message_id"),
  countPending: db.prepare(
    "SELECT COUNT(DISTINCT message_id) AS n FROM recipients WHERE state IN ('queued', 'retry', 'inflight')"
  )
}

/** Per-batch bookkeeping, reported only if the batch commits. */
interface Batch {
  depth: number
  depthDelta: number
  /** The earliest due time among recipients the batch made claimable (Infinity: none; see the Reply). */
  dueFrom: number
  /** Whether the batch claimed (see the Reply's `firstDue`). */
  claimed: boolean
  readonly removeFiles: Array<string>
}

const ok = (value: unknown): Outcome => ({ ok: true, value })
const refuse = (reason: MailQueueErrorReason): Outcome => ({ ok: false, reason })
const leaseLost = (id: string) => refuse({ _tag: "LeaseLost", id })

const isPending = (id: string) => num(sql.hasPending.get(id)?.pending) === 1

/** Deletes a message once nothing but delivered recipients is left; its body file goes after COMMIT. */
const dropIfDone = (batch: Batch, id: string) => {
  for (const row of sql.deleteIfDone.all({ id })) {
    const file = optStr(row.body_file)
    if (file !== null) batch.removeFiles.push(file)
  }
}

/**
 * Adjusts depth for a message whose recipients changed state, then drops it if it is done.
 * Returns whether the message is still pending.
 */
const afterChange = (batch: Batch, id: string, wasPending: boolean): boolean => {
  const pendingNow = isPending(id)
  if (wasPending !== pendingNow) batch.depthDelta += pendingNow ? 1 : -1
  // A message with a recipient still pending cannot be done.
  if (!pendingNow) dropIfDone(batch, id)
  return pendingNow
}

/**
 * Whether a claim would find something in the database ahead of a message due at `at`: a due
 * recipient no lease holds back (due at `at` or before, so also one that arrived earlier at the
 * same time), an expired lease, or a due recipient above normal priority. A handoff would jump
 * ahead of it, so the commit is queued then.
 */
const dueBefore = (at: number, now: number): boolean => num(sql.dueBefore.get({ at, now })?.due) === 1

/**
 * Claim order: above normal, then normal, then below (rows that aged count as normal: see `age`);
 * below normal only with `belowNormal`.
 */
const nextToClaim = (now: number, belowNormal: boolean) => {
  const prioritised = sql.nextPrioritised.get(now)
  if (prioritised !== undefined && num(prioritised.priority) > 0) return prioritised
  return sql.nextDue.get(now) ?? (belowNormal ? prioritised : undefined)
}

// Ageing runs at most once a second (clock of the claims): a row ages up to a second late.
const ageingEveryMs = 1000
let agedAt = Number.NEGATIVE_INFINITY
const ageRows = (now: number, maxWaitMs: number) => {
  if (maxWaitMs <= 0 || (now >= agedAt && now - agedAt < ageingEveryMs)) return
  agedAt = now
  sql.age.run(now - maxWaitMs)
}

/** Notes that recipients of `id` wait in the queue again (a retry, a release...), due from their time. */
const waitingAgain = (batch: Batch, id: string) => {
  const at = sql.firstWaiting.get(id)?.at
  if (at !== null && at !== undefined) batch.dueFrom = Math.min(batch.dueFrom, num(at))
}

const leasedRows = (id: string, token: string) =>
  sql.leased.all(id, token).map((row) => ({ seq: num(row.seq), rcpt: str(row.rcpt) }))

const run = (batch: Batch, op: Op): Outcome => {
  switch (op.op) {
    case "commit": {
      const projected = batch.depth + batch.depthDelta
      if (projected >= op.maxDepth) return refuse({ _tag: "Full", depth: projected, maxDepth: op.maxDepth })
      if (Number(sql.insertNewMessage.run(op.id, op.envelope, op.trace, op.receivedAt, op.size, op.inline, op.file).changes) === 0) {
        return refuse({ _tag: "StorageFailed", detail: `message ${op.id} already exists` })
      }
      batch.depthDelta += 1
      const handoff = op.held ? null : op.handoff
      if (handoff !== null && !dueBefore(op.receivedAt, handoff.now)) {
        let rowid = 0
        for (const rcpt of op.rcpts) {
          // Only normal-priority commits are handed off: the row's priority is the default.
          const inserted = sql.insertLeased.run(op.id, rcpt, op.receivedAt, handoff.owner, handoff.token, handoff.expiresAt)
          if (rowid === 0) rowid = Number(inserted.lastInsertRowid)
        }
        return ok({ handedOff: true, rowid } satisfies CommitResult)
      }
      for (const rcpt of op.rcpts) sql.insertRecipient.run(op.id, rcpt, op.receivedAt, op.priority, op.held ? 1 : 0)
      // A held message is nobody's work until it is released.
      if (!op.held) batch.dueFrom = Math.min(batch.dueFrom, op.receivedAt)
      return ok({ handedOff: false } satisfies CommitResult)
    }
    case "claim": {
      batch.claimed = true
      // Taken-over recipients this claim does not lease wait again, due since long ago.
      if (Number(sql.releaseExpired.run(op.now).changes) > 0) batch.dueFrom = Number.NEGATIVE_INFINITY
      ageRows(op.now, op.maxWaitMs)
      const claimed: Array<Claimed> = []
      for (let n = 0; n <= op.ahead; n++) {
        const next = nextToClaim(op.now, op.belowNormal)
        if (next === undefined) break
        const id = str(next.id)
        const token = n === 0 ? op.token : `${op.token}.${n}`
        const rows = sql.lease.all(n === 0 ? op.owner : op.aheadOwner, token, op.expiresAt, id, op.now)
          .map((row) => ({ seq: num(row.seq), rcpt: str(row.rcpt), attempt: num(row.attempts) }))
          .sort((a, b) => a.seq - b.seq)
        const head = sql.head.get(id)
        if (head === undefined) break
        claimed.push({
          id,
          token,
          dueAt: num(next.at),
          rowid: num(next.seq),
          recipients: rows.map((r) => ({ rcpt: r.rcpt, attempt: r.attempt })),
          envelope: str(head.envelope),
          trace: str(head.trace),
          receivedAt: num(head.received_at),
          size: num(head.size),
          file: optStr(head.body_file)
        })
      }
      return ok(claimed)
    }
    case "settle": {
      if (op.allDelivered && op.reports.length === 0) {
        const gone = sql.deleteSettled.all({ id: op.id, token: op.token })
        if (gone.length > 0) {
          // The lease's recipients were pending, and nothing else was: the message leaves the count.
          batch.depthDelta -= 1
          const file = optStr(gone[0]!.body_file)
          if (file !== null) batch.removeFiles.push(file)
          return ok(undefined)
        }
      }
      const rows = leasedRows(op.id, op.token)
      if (rows.length === 0) return leaseLost(op.id)
      // Checked before anything is written: the settle and its reports, or neither.
      for (const report of op.reports) {
        if (sql.exists.get(report.id) !== undefined) return refuse({ _tag: "StorageFailed", detail: `message ${report.id} already exists` })
      }
      for (const report of op.reports) {
        sql.insertMessage.run(report.id, report.envelope, report.trace, report.receivedAt, report.size, report.inline, report.file)
        for (const rcpt of report.rcpts) sql.insertRecipient.run(report.id, rcpt, report.receivedAt, report.priority, 0)
        batch.depthDelta += 1
        batch.dueFrom = Math.min(batch.dueFrom, report.receivedAt)
      }
      if (op.delayNotified !== null) sql.markDelayNotified.run(op.delayNotified, op.id)
      const byRcpt = new Map(op.rows.map((s) => [s.rcpt, s]))
      for (const row of rows) {
        const s = byRcpt.get(row.rcpt)
        if (s === undefined) sql.unclaim.run(row.seq)
        else if (s.tag === "Delivered") sql.setDelivered.run(s.reply, row.seq)
        else if (s.tag === "Retry") sql.setRetry.run(s.at, s.reply, row.seq)
        else sql.setDead.run(s.at, s.reply, row.seq)
      }
      // Recipients of the message still pending (a retry, a recipient the lease did not cover)
      // may be claimable now that the lease is gone. Otherwise nothing changed for claims.
      if (afterChange(batch, op.id, true)) waitingAgain(batch, op.id)
      return ok(undefined)
    }
    case "extend":
      return ok(Number(sql.extend.run(op.expiresAt, op.owner, op.id, op.token).changes) > 0)
    case "release": {
      const rows = leasedRows(op.id, op.token)
      if (rows.length === 0) return leaseLost(op.id)
      for (const row of rows) sql.unclaim.run(row.seq)
      waitingAgain(batch, op.id)
      return ok(undefined)
    }
    case "retryNow": {
      const wasPending = isPending(op.id)
      const changed = Number(sql.requeue.run(op.now, op.id).changes) > 0
      // Retrying recipients leased into a ready list that no worker took yet are due now already:
      // not "in flight", and not "nothing to retry" either.
      if (!changed) return ok(sql.waitingRetry.get(op.id) !== undefined)
      afterChange(batch, op.id, wasPending)
      batch.dueFrom = Math.min(batch.dueFrom, op.now)
      return ok(true)
    }
    case "setPriority": {
      if (Number(sql.setPriority.run(op.priority, op.id).changes) === 0) return ok(false)
      sql.setRowsPriority.run(op.priority, op.id)
      // Claim order changed: nothing known about what claims first holds any more.
      batch.dueFrom = Number.NEGATIVE_INFINITY
      return ok(true)
    }
    case "hold": {
      if (!isPending(op.id)) return ok(false)
      sql.hold.run(op.id)
      return ok(true)
    }
    case "unhold": {
      if (Number(sql.unhold.run(op.id).changes) === 0) return ok(false)
      waitingAgain(batch, op.id)
      return ok(true)
    }
    case "remove": {
      const wasPending = isPending(op.id)
      const rows = sql.deleteMessage.all(op.id)
      if (rows.length === 0) return ok(false)
      if (wasPending) batch.depthDelta -= 1
      const file = optStr(rows[0]!.body_file)
      if (file !== null) batch.removeFiles.push(file)
      return ok(true)
    }
    case "recount":
      return ok(undefined)
    case "purgeExpired":
    case "purgeDead": {
      // Deletes dead recipients, then the messages left with nothing but delivered ones (dead is not pending).
      const rows = op.op === "purgeDead" ? sql.purgeDead.all() : sql.purgeExpired.all(op.now)
      for (const id of new Set(rows.map((row) => str(row.message_id)))) dropIfDone(batch, id)
      return ok(rows.length)
    }
  }
}

// data_version moves only when ANOTHER connection commits (the CLI, or the main thread's start-up
// recovery): then the pending count is recounted under the write lock.
let seenVersion = num(sql.dataVersion.get()?.data_version)
// The connection starts with synchronous=FULL; switch only when a batch needs the other mode.
let flushing = true

const runBatch = (request: BatchRequest): Reply => {
  try {
    if (request.durable !== flushing) {
      db.exec(request.durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
      flushing = request.durable
    }
    db.exec("BEGIN IMMEDIATE")
  } catch (cause) {
    return { type: "failed", message: `begin transaction: ${errorMessage(cause)}`, code: errorCode(cause) }
  }
  try {
    let recount: number | undefined
    const version = num(sql.dataVersion.get()?.data_version)
    if (version !== seenVersion) {
      seenVersion = version
      recount = num(sql.countPending.get()?.n)
    }
    const batch: Batch = {
      depth: recount ?? request.depth,
      depthDelta: 0,
      dueFrom: Number.POSITIVE_INFINITY,
      claimed: false,
      removeFiles: []
    }
    const outcomes = request.ops.map((op) => run(batch, op))
    // Read after every op of the batch (a commit stored queued after the claim counts), and
    // whenever due: a row due later still tells the ready list that nothing claims before it.
    const first = batch.claimed ? sql.nextDue.get(Number.MAX_SAFE_INTEGER) : undefined
    db.exec("COMMIT")
    return {
      type: "committed",
      outcomes,
      recount,
      depthDelta: batch.depthDelta,
      dueFrom: batch.dueFrom,
      firstDue: !batch.claimed ? undefined : first === undefined ? null : { at: num(first.at), rowid: num(first.seq) },
      removeFiles: batch.removeFiles
    }
  } catch (cause) {
    // SQLite rolls back by itself after some errors (SQLITE_FULL); only roll back what is left.
    if (db.isTransaction) {
      try {
        db.exec("ROLLBACK")
      } catch {
        // The next BEGIN reports a broken connection; nothing more to undo here.
      }
    }
    return { type: "failed", message: `write batch: ${errorMessage(cause)}`, code: errorCode(cause) }
  }
}

port.on("message", (request: Request) => {
  if (request.type === "close") {
    try {
      db.close()
    } finally {
      port.close()
    }
    return
  }
  post(runBatch(request))
})

post({ type: "ready" })
// What the main thread does after start-up, for this isolate: one memory-reducing GC returns what
// starting the thread left behind (the `incoming` bin: ~2 MiB resident; a no-op where V8's gc
// was not enabled, e.g. in a host app).
Reclaim.compact()
