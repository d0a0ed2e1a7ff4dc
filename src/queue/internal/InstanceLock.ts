/**
 * Tells the process that owns a queue directory (the server) from processes that merely open it
 * (the `incoming queue ...` CLI while the server runs).
 *
 * Only the owner may run start-up recovery: returning in-flight leases to the queue and removing
 * body files no row points to. A second process doing either would steal live leases or delete
 * the body of a message being committed at that moment. The lock is an exclusive SQLite lock on
 * a separate file, held for the life of the scope; the operating system drops it when the
 * process dies, so a crashed owner never blocks its successor.
 */
import { DatabaseSync } from "node:sqlite"
import { Effect } from "effect"
import type { Scope } from "effect"

/** True if this process now owns the directory; false if another live process does. */
export const acquire = (path: string): Effect.Effect<boolean, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      let db: DatabaseSync | undefined
      try {
        db = new DatabaseSync(path, { timeout: 0 })
        db.exec("BEGIN EXCLUSIVE")
        return db
      } catch {
        db?.close()
        return undefined
      }
    }),
    (db) =>
      Effect.sync(() => {
        db?.close()
      })
  ).pipe(Effect.map((db) => db !== undefined))
