/**
 * The embedded greylist store: `node:sqlite` at `<data_dir>/greylist.db`, two small tables.
 *
 * WAL with `synchronous = NORMAL`: a crash may lose the last writes, which costs a sender one
 * more delay and nothing else, so greylisting does not pay for the queue's fsyncs. Queries are
 * synchronous and take microseconds on indexed keys, so they run on the fiber's thread; the
 * connection is closed when the scope that opened it closes (a reload opens the new rule's store
 * before the old one closes: two connections on one WAL database are fine).
 *
 * `problem` is the start-up preflight of an existing `greylist.db` (not a file, not writable, not
 * a database, locked by another process), looking without changing anything: `incoming
 * check-config` reports it and `incoming serve` refuses to start with it, in the same words as a
 * failure to open the store at start (`make`).
 */
import { accessSync, constants, mkdirSync, statSync } from "node:fs"
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Effect, type Scope } from "effect"
import * as FsProblem from "../../../internal/fsProblem.ts"
import { type ClientRecord, type GreylistStore, GreylistStoreError, type TripletRecord } from "./GreylistStore.ts"

export const fileName = "greylist.db"

const unavailable = (what: string) => (cause: unknown) =>
  new GreylistStoreError({ reason: { _tag: "Unavailable", detail: `${what}: ${describe(cause)}` }, cause })

/** SQLite's and the file system's words for what went wrong, with what an operator can do. */
const describe = (cause: unknown): string => {
  const text = FsProblem.describe(cause)
  if (/not a database|malformed/i.test(text)) return `${text} (corrupt: move it away and greylisting starts over)`
  if (/locked|busy/i.test(text)) return `${text} (another process holds it: stop it, or give this server another data_dir)`
  return text
}

/** How long a start waits for another process's lock on the database before giving up. */
const busyTimeoutMs = 2_000

/**
 * Why the store at `<dataDir>/greylist.db` could not be opened and written, or `undefined` when
 * it could (or does not exist yet: creating it is the data dir's check). Opens it read-only.
 */
export const problem = (dataDir: string): string | undefined => {
  const path = join(dataDir, fileName)
  const missing = FsProblem.attempt(() => statSync(path))
  if (missing !== undefined) return FsProblem.codeOf(missing) === "ENOENT" ? undefined : `${path}: ${describe(missing)}`
  if (!statSync(path).isFile()) return `${path}: not a file`
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    const failure = FsProblem.attempt(() => accessSync(file, constants.R_OK | constants.W_OK))
    if (failure !== undefined && FsProblem.codeOf(failure) !== "ENOENT") return `${file}: ${describe(failure)}`
  }
  const failure = FsProblem.attempt(() => {
    const db = new DatabaseSync(path, { readOnly: true, timeout: busyTimeoutMs })
    try {
      db.prepare("SELECT count(*) FROM sqlite_master").get()
    } finally {
      db.close()
    }
  })
  return failure === undefined ? undefined : `${path}: ${describe(failure)}`
}

const schema = `
CREATE TABLE IF NOT EXISTS triplets (
  key TEXT PRIMARY KEY,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  passed_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS triplets_last_seen ON triplets (last_seen);
CREATE TABLE IF NOT EXISTS clients (
  client TEXT PRIMARY KEY,
  passes INTEGER NOT NULL,
  last_seen INTEGER NOT NULL
) WITHOUT ROWID;
`

/** Opens (creating) `<dataDir>/greylist.db`; closed with the scope. */
export const make = (dataDir: string): Effect.Effect<GreylistStore, GreylistStoreError, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.try({
        try: () => {
          mkdirSync(dataDir, { recursive: true })
          // The wait for a lock first: switching to WAL needs one.
          const db = new DatabaseSync(join(dataDir, fileName), { timeout: busyTimeoutMs })
          try {
            db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            db.exec(schema)
          } catch (e) {
            db.close()
            throw e
          }
          return db
        },
        catch: unavailable(`cannot open ${join(dataDir, fileName)}`)
      }),
      (db) => Effect.sync(() => db.close())
    ),
    (db): GreylistStore => {
      const getTriplet = db.prepare("SELECT first_seen, last_seen, passed_at FROM triplets WHERE key = ?")
      const putTriplet = db.prepare(
        "INSERT INTO triplets (key, first_seen, last_seen, passed_at) VALUES (?, ?, ?, ?) " +
          "ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen, passed_at = excluded.passed_at"
      )
      const getClient = db.prepare("SELECT passes, last_seen FROM clients WHERE client = ?")
      const putClient = db.prepare(
        "INSERT INTO clients (client, passes, last_seen) VALUES (?, ?, ?) " +
          "ON CONFLICT (client) DO UPDATE SET passes = excluded.passes, last_seen = excluded.last_seen"
      )
      const prunePending = db.prepare("DELETE FROM triplets WHERE passed_at IS NULL AND first_seen < ?")
      const prunePassed = db.prepare("DELETE FROM triplets WHERE passed_at IS NOT NULL AND last_seen < ?")
      const pruneClients = db.prepare("DELETE FROM clients WHERE last_seen < ?")
      const count = db.prepare("SELECT count(*) AS n FROM triplets")
      const pruneOverflow = db.prepare(
        "DELETE FROM triplets WHERE key IN (SELECT key FROM triplets WHERE passed_at IS NULL ORDER BY last_seen LIMIT ?)"
      )
      const run = <A>(what: string, f: () => A) => Effect.try({ try: f, catch: unavailable(what) })
      return {
        getTriplet: (key) =>
          run("read a triplet", () => {
            const row = getTriplet.get(key)
            return row === undefined ? undefined : {
              firstSeen: Number(row.first_seen),
              lastSeen: Number(row.last_seen),
              passedAt: row.passed_at === null ? undefined : Number(row.passed_at)
            } satisfies TripletRecord
          }),
        putTriplet: (key, r) => run("write a triplet", () => void putTriplet.run(key, r.firstSeen, r.lastSeen, r.passedAt ?? null)),
        getClient: (client) =>
          run("read a client", () => {
            const row = getClient.get(client)
            return row === undefined ? undefined : { passes: Number(row.passes), lastSeen: Number(row.last_seen) } satisfies ClientRecord
          }),
        putClient: (client, r) => run("write a client", () => void putClient.run(client, r.passes, r.lastSeen)),
        prune: (before, maxTriplets) =>
          run("prune", () => {
            let dropped = Number(prunePending.run(before.pendingFirstSeen).changes) +
              Number(prunePassed.run(before.passedLastSeen).changes) +
              Number(pruneClients.run(before.passedLastSeen).changes)
            const over = Number(count.get()!.n) - maxTriplets
            if (over > 0) dropped += Number(pruneOverflow.run(over).changes)
            return dropped
          }),
        size: run("count", () => Number(count.get()!.n))
      }
    }
  )
