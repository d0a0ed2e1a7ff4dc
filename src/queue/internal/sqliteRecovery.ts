/**
 * Start-up recovery of the SQLite queue, run only by the process that owns the data directory
 * (`InstanceLock`), before its writer thread starts: leases of a dead predecessor go back to the
 * queue, messages whose body file is missing or truncated are dead-lettered with the reason
 * (never silently), and body files no row names are removed.
 */
import { join } from "node:path"
import type { DatabaseSync } from "node:sqlite"
import { Clock, Effect } from "effect"
import type { MailQueueError } from "../MailQueueError.ts"
import * as BodyFiles from "./bodyFiles.ts"
import { read, type Statements } from "./sqliteStatements.ts"
import { int, text } from "./sqliteSchema.ts"

export interface Recovered {
  /** Leases a dead process left, returned to the queue. */
  readonly leases: number
  readonly deadLettered: number
  /** Body files no row named, removed. */
  readonly orphans: number
}

const transaction = (db: DatabaseSync, f: () => void): void => {
  db.exec("BEGIN IMMEDIATE")
  try {
    f()
    db.exec("COMMIT")
  } catch (cause) {
    if (db.isTransaction) db.exec("ROLLBACK")
    throw cause
  }
}

export const recover = Effect.fnUntraced(function*(options: {
  readonly db: DatabaseSync
  readonly sql: Statements
  readonly bodiesDir: string
  readonly deadLetterTtlMs: number
}): Effect.fn.Return<Recovered, MailQueueError> {
  const { db, sql, bodiesDir } = options
  const files = yield* read("list body files", () =>
    sql.bodyFiles.all().map((row) => ({ id: text(row.id), size: int(row.size), file: text(row.body_file) })))
  const checked = yield* Effect.forEach(
    files,
    (f) => Effect.map(BodyFiles.sizeOf(join(bodiesDir, f.file)), (actual) => ({ ...f, actual })),
    { concurrency: 16 }
  )
  const broken = checked.filter((f) => f.actual !== f.size)
  const now = yield* Clock.currentTimeMillis
  let leases = 0
  yield* read("recover", () =>
    transaction(db, () => {
      // Only one owner runs at a time, so every lease still out belongs to a process that died.
      leases = Number(sql.releaseHandedOff.run().changes) + Number(sql.releaseAll.run().changes)
      for (const f of broken) {
        const reason = f.actual === undefined
          ? `queue: body file bodies/${f.file} is missing`
          : `queue: body file bodies/${f.file} has ${f.actual} bytes, expected ${f.size}`
        sql.deadLetter.run(reason, Math.floor(now + options.deadLetterTtlMs), f.id)
      }
    }))
  const orphans = yield* BodyFiles.sweep(
    bodiesDir,
    new Set(checked.filter((f) => f.actual !== undefined).map((f) => f.file))
  )
  for (const f of broken) {
    yield* Effect.logError(`queue: message ${f.id} dead-lettered at start-up: body file bodies/${f.file} missing or damaged`)
  }
  return { leases, deadLettered: broken.length, orphans }
})
