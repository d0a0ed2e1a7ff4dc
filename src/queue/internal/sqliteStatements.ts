/**
 * The SQLite queue's main-thread connection: opening it (WAL, `synchronous=FULL`, migrations) and
 * the read statements it runs — claimability probes for the ready list, counts, listings and
 * bodies. Every write goes through the writer thread (`writerThread.ts`), except the owner's
 * start-up recovery (`sqliteRecovery.ts`).
 */
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Effect } from "effect"
import type { MessageBody } from "../MailQueue.ts"
import { fromStorageException, type MailQueueError } from "../MailQueueError.ts"
import * as BodyStream from "./bodyStream.ts"
import { bytes, migrate } from "./sqliteSchema.ts"

export interface OpenOptions {
  /** How long a write waits for another process's transaction (the CLI) before failing. */
  readonly busyTimeoutMs?: number | undefined
  /** Caps the database at this many pages: tests use it to run out of space on purpose. */
  readonly maxPageCount?: number | undefined
}

export const openDatabase = (path: string, options: OpenOptions): Effect.Effect<DatabaseSync, MailQueueError> =>
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

export const prepare = (db: DatabaseSync) => ({
  dataVersion: db.prepare("PRAGMA data_version"),
  exists: db.prepare("SELECT 1 AS found FROM messages WHERE id = ?"),
  // Leases still owned by a ready list (handed off, or taken ahead; see `ReadyList.ts`) that no
  // worker extended: their attempt was counted in advance and most likely never started, so it
  // is taken back. Run before `releaseAll`.
  releaseHandedOff: db.prepare(
    `UPDATE recipients SET state = 'queued', attempts = MAX(0, attempts - 1), lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL
     WHERE state = 'inflight' AND lease_owner LIKE 'handoff-%'`
  ),
  releaseAll: db.prepare(
    `UPDATE recipients SET state = 'queued', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
     WHERE state = 'inflight'`
  ),
  nextDueAt: db.prepare(
    `SELECT r.next_attempt_at AS at FROM recipients AS r
     WHERE r.state IN ('queued', 'retry') AND r.held = 0 AND r.priority = 0
       AND NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')
     ORDER BY r.next_attempt_at, r.rowid LIMIT 1`
  ),
  // The same over rows at other priorities (`recipients_prioritised`: empty unless priorities are used).
  nextDueAtPrioritised: db.prepare(
    `SELECT MIN(r.next_attempt_at) AS at FROM recipients AS r
     WHERE r.state IN ('queued', 'retry') AND r.held = 0 AND r.priority <> 0
       AND NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')`
  ),
  // When a claim could next find anything (a recipient due, a lease expiring): a superset of what
  // the claim leases, read on this connection so an idle worker's claim costs no write.
  nextClaimable: db.prepare(
    `SELECT (SELECT MIN(next_attempt_at) FROM recipients WHERE state IN ('queued', 'retry') AND held = 0 AND priority = 0) AS due,
       (SELECT MIN(next_attempt_at) FROM recipients WHERE state IN ('queued', 'retry') AND held = 0 AND priority <> 0) AS prioritised,
       (SELECT MIN(lease_expires_at) FROM recipients WHERE state = 'inflight') AS expiry`
  ),
  // The first normal-priority recipient a database claim would lease (its due time and row), for
  // comparing with the oldest handed-off lease (only asked while no waiting row has another
  // priority: see `ReadyList`); and whether a lease expired (a claim would take that over first).
  firstDue: db.prepare(
    `SELECT r.next_attempt_at AS at, r.rowid AS seq FROM recipients AS r
     WHERE r.state IN ('queued', 'retry') AND r.held = 0 AND r.priority = 0 AND r.next_attempt_at <= ?
       AND NOT EXISTS (SELECT 1 FROM recipients AS x WHERE x.message_id = r.message_id AND x.state = 'inflight')
     ORDER BY r.next_attempt_at, r.rowid LIMIT 1`
  ),
  // Whether any waiting row has a priority other than normal: the ready list's shortcuts hold only while none does.
  anyPrioritised: db.prepare(
    "SELECT 1 AS found FROM recipients WHERE state IN ('queued', 'retry') AND held = 0 AND priority <> 0 LIMIT 1"
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
  // Pending messages by effective priority (`Priority.effective`): a message's level is its
  // pending rows' highest (ageing may have raised some rows already), and one below normal that
  // arrived at or before $agedBefore (NULL: no ageing) counts as normal.
  countByPriority: db.prepare(
    `SELECT CASE WHEN p.priority < 0 AND m.received_at <= $agedBefore THEN 0 ELSE p.priority END AS priority, COUNT(*) AS n
     FROM (SELECT message_id, MAX(priority) AS priority FROM recipients
           WHERE state IN ('queued', 'retry', 'inflight') GROUP BY message_id) AS p
     JOIN messages AS m ON m.id = p.message_id
     GROUP BY 1`
  ),
  countHeld: db.prepare(
    "SELECT COUNT(DISTINCT message_id) AS n FROM recipients WHERE held = 1 AND state IN ('queued', 'retry', 'inflight')"
  ),
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
    `SELECT rcpt, state, attempts, next_attempt_at, last_reply, expires_at, lease_token, held FROM recipients
     WHERE message_id = ? ORDER BY rowid`
  ),
  list: db.prepare(
    `SELECT m.id, m.envelope, m.received_at, m.size,
       MAX(CASE
         WHEN r.state = 'inflight' THEN (CASE WHEN r.lease_token NOT IN (SELECT value FROM json_each($handedOff)) THEN 6
           WHEN r.held = 1 THEN 5 WHEN r.attempts > 1 THEN 3 ELSE 4 END)
         WHEN r.state IN ('queued', 'retry') AND r.held = 1 THEN 5
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

export type Statements = ReturnType<typeof prepare>

/** Runs a read on this connection; a throw becomes the queue's storage error. */
export const read = <A>(what: string, f: () => A): Effect.Effect<A, MailQueueError> =>
  Effect.try({ try: f, catch: (cause) => fromStorageException(cause, what) })

/**
 * A stored message's body as the contract hands it out: from its file under `bodies/`, or from
 * its row, read when a stream starts (so a lease or a listing holds no body bytes).
 */
export const messageBody = (
  sql: Statements,
  bodiesDir: string,
  id: string,
  trace: string,
  size: number,
  file: string | undefined
): MessageBody => ({
  size: Buffer.byteLength(trace) + size,
  stream: () =>
    file !== undefined
      ? BodyStream.fromFile(trace, join(bodiesDir, file))
      : BodyStream.fromLoader(trace, () => {
        const body = bytes(sql.inlineBody.get(id)?.body)
        if (body === undefined) throw new Error(`queue: message ${id} is no longer stored`)
        return body
      })
})
