/**
 * The embedded greylist store: `node:sqlite` at `<data_dir>/greylist.db`, two small tables.
 *
 * WAL with `synchronous = NORMAL`: a crash may lose the last writes, which costs a sender one
 * more delay and nothing else, so greylisting does not pay for the queue's fsyncs. Queries are
 * synchronous and take microseconds on indexed keys, so they run on the fiber's thread; the
 * connection is closed when the scope that opened it closes (a reload opens the new rule's store
 * before the old one closes: two connections on one WAL database are fine).
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Effect, type Scope } from "effect"
import { type ClientRecord, type GreylistStore, GreylistStoreError, type TripletRecord } from "./GreylistStore.ts"

export const fileName = "greylist.db"

const unavailable = (what: string) => (cause: unknown) =>
  new GreylistStoreError({ reason: { _tag: "Unavailable", detail: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` }, cause })

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
          const db = new DatabaseSync(join(dataDir, fileName))
          db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 2000;")
          db.exec(schema)
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
