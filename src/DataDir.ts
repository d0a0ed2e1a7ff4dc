/**
 * The data directory (spool, durable queue) as one server's own: a server holds its lock for as
 * long as it runs, and a second server on the same directory refuses to start, naming the
 * holder. Only the holder may clean up there (spool files of a crashed predecessor): another
 * process's files are never removed.
 *
 * The lock is an exclusive SQLite lock on `server.lock` (POSIX record locks underneath), held by
 * an open transaction: the operating system drops it when the process dies, so a killed server
 * never blocks its successor — which takes over and says whose lock it was. Who holds it is
 * recorded beside it in `server.json` (pid, host, start time), written once the lock is ours.
 *
 * A queue shared by design (several nodes on one database, like the planned PostgreSQL queue)
 * makes the lock shared instead: such servers may run side by side on one directory, none of
 * them cleans the spool (none can tell whose a file is), and an exclusive server cannot start
 * while one of them runs (nor the reverse), so it cannot clean their files either.
 *
 * `check` is the start-up preflight of the directory without touching it (no mkdir): what
 * `incoming check-config` reports and `incoming serve` refuses, in the same words as a failure
 * to create the directory at start.
 */
import { accessSync, constants, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { dirname, join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Context, Data, Effect, Layer } from "effect"
import * as FsProblem from "./internal/fsProblem.ts"

/** Who holds a data dir, as its `server.json` records it. */
export interface Holder {
  readonly pid: number
  readonly host: string
  /** ISO 8601, when the holder took the lock. */
  readonly startedAt: string
  /**
   * The holder's queue backend (`sqlite`, `memory`, `custom`), so tools such as `incoming queue`
   * know whether the queue in the directory is the one the server uses; absent in older records.
   */
  readonly queue?: string | undefined
}

export type DataDirErrorReason =
  /** A live server holds the lock; `holder` is undefined when it left no record (a shared-queue server). */
  | { readonly _tag: "Locked"; readonly dir: string; readonly holder: Holder | undefined }
  /** The directory cannot be created or written: `problem` says why (`read-only file system`). */
  | { readonly _tag: "Unusable"; readonly dir: string; readonly problem: string }

export class DataDirError extends Data.TaggedError("DataDirError")<{
  readonly reason: DataDirErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    if (r._tag === "Unusable") return `data_dir: ${r.dir}: ${r.problem}`
    // Servers sharing a queue by design hold the lock shared and leave no record.
    const who = r.holder === undefined ? "no record: a server with a shared queue" : describeHolder(r.holder)
    return `data_dir: ${r.dir}: in use by another incoming server (${who}); stop it first or give this server another data_dir`
  }
}

export const describeHolder = (h: Holder): string => `pid ${h.pid} on ${h.host}, started ${h.startedAt}`

export class DataDir extends Context.Service<DataDir, {
  readonly dir: string
  /** True when this process holds the lock alone and so may clean up leftovers there. */
  readonly exclusive: boolean
}>()("incoming/DataDir") {}

export interface DataDirOptions {
  readonly dir: string
  /** The queue is shared by design with other servers: take the lock shared (see the module comment). */
  readonly shared?: boolean | undefined
  /** The server's queue backend, recorded in `server.json` (see `Holder.queue`). */
  readonly queue?: string | undefined
}

/** Entries a server writes in an existing data dir: each must be writable too. */
const ownEntries = ["spool", "bodies", "queue.db", "server.lock"]

/**
 * Why a server could not create and use `dir`, or `undefined` when it could. Looks without
 * changing anything: the nearest existing ancestor must be a writable directory (so `mkdir -p`
 * works), and an existing `dir` must be one, with its own entries writable.
 */
export const check = (dir: string): string | undefined => {
  let existing = dir
  for (;;) {
    const failure = FsProblem.attempt(() => statSync(existing))
    if (failure === undefined) break
    const code = FsProblem.codeOf(failure)
    if (code !== "ENOENT" && code !== "ENOTDIR") return FsProblem.describe(failure)
    const parent = dirname(existing)
    if (parent === existing) return FsProblem.describe(failure)
    existing = parent
  }
  if (!statSync(existing).isDirectory()) {
    return existing === dir ? "not a directory" : `not a directory (${existing} is a file)`
  }
  const unwritable = (path: string, what: string): string | undefined => {
    const failure = FsProblem.attempt(() => accessSync(path, constants.W_OK | constants.X_OK))
    if (failure === undefined) return undefined
    const problem = FsProblem.describe(failure)
    return problem === "permission denied" ? `permission denied (${what} is not writable by this user)` : problem
  }
  if (existing !== dir) return unwritable(existing, existing)
  const own = unwritable(dir, dir)
  if (own !== undefined) return own
  for (const entry of ownEntries) {
    const path = join(dir, entry)
    const isThere = FsProblem.attempt(() => statSync(path)) === undefined
    if (!isThere) continue
    const failure = FsProblem.attempt(() => accessSync(path, constants.W_OK))
    if (failure !== undefined) {
      const problem = FsProblem.describe(failure)
      return problem === "permission denied" ? `permission denied (${path} is not writable by this user)` : `${path}: ${problem}`
    }
  }
  return undefined
}

/** The live server recorded in `<dir>/server.json`, if one runs there (for tools such as `incoming queue`). */
export const runningServer = (dir: string): Holder | undefined => {
  const holder = readHolder(join(dir, "server.json"))
  return holder !== undefined && isAlive(holder.pid) ? holder : undefined
}

const readHolder = (path: string): Holder | undefined => {
  try {
    const h = JSON.parse(readFileSync(path, "utf8")) as Partial<Holder>
    return typeof h.pid === "number" && typeof h.host === "string" && typeof h.startedAt === "string"
      ? { pid: h.pid, host: h.host, startedAt: h.startedAt, ...(typeof h.queue === "string" ? { queue: h.queue } : {}) }
      : undefined
  } catch {
    return undefined
  }
}

const isAlive = (pid: number): boolean => {
  const failure = FsProblem.attempt(() => process.kill(pid, 0))
  return failure === undefined || FsProblem.codeOf(failure) === "EPERM"
}

/** Opens the lock file and takes the lock; `undefined` when another process holds it. */
const tryLock = (path: string, shared: boolean): DatabaseSync | undefined => {
  let db: DatabaseSync | undefined
  try {
    db = new DatabaseSync(path, { timeout: 0 })
    if (shared) {
      // A read transaction holds SQLite's SHARED lock until it ends: many may hold it, and it
      // keeps an exclusive locker out (and is refused while one holds the lock).
      db.exec("BEGIN")
      db.prepare("SELECT count(*) FROM sqlite_master").get()
    } else {
      db.exec("BEGIN EXCLUSIVE")
    }
    return db
  } catch {
    db?.close()
    return undefined
  }
}

/**
 * Creates the directory if needed and takes its lock for the scope. Fails with `Locked` when a
 * live server holds it, `Unusable` when the directory cannot be created or written.
 */
export const acquire = Effect.fnUntraced(function*(options: DataDirOptions) {
  const dir = options.dir
  const shared = options.shared === true
  yield* Effect.try({
    try: () => mkdirSync(dir, { recursive: true, mode: 0o700 }),
    catch: (cause) => new DataDirError({ reason: { _tag: "Unusable", dir, problem: check(dir) ?? FsProblem.describe(cause) }, cause })
  })
  const lockPath = join(dir, "server.lock")
  const recordPath = join(dir, "server.json")
  const previous = readHolder(recordPath)
  const db = yield* Effect.acquireRelease(
    Effect.sync(() => tryLock(lockPath, shared)),
    (db) => Effect.sync(() => db?.close())
  )
  if (db === undefined) {
    // The record is written just after the lock is taken: a holder that has only just started
    // may still show its predecessor's record (a process no longer running). Look again briefly.
    let holder = previous
    for (let i = 0; i < 20 && holder !== undefined && !isAlive(holder.pid); i++) {
      yield* Effect.sleep("25 millis")
      holder = readHolder(recordPath)
    }
    const live = holder !== undefined && isAlive(holder.pid) ? holder : undefined
    return yield* new DataDirError({ reason: { _tag: "Locked", dir, holder: live } })
  }
  if (!shared) {
    const me: Holder = {
      pid: process.pid,
      host: hostname(),
      startedAt: new Date().toISOString(),
      ...(options.queue === undefined ? {} : { queue: options.queue })
    }
    // Removed again on a clean stop (before the lock is released: finalizers run in reverse), so
    // a record found at start always belongs to a server that did not stop cleanly.
    yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          const tmp = `${recordPath}.${process.pid}.tmp`
          writeFileSync(tmp, `${JSON.stringify(me)}\n`, { mode: 0o600 })
          renameSync(tmp, recordPath)
        },
        catch: (cause) => new DataDirError({ reason: { _tag: "Unusable", dir, problem: FsProblem.describe(cause) }, cause })
      }),
      () => Effect.sync(() => rmSync(recordPath, { force: true }))
    )
    if (previous !== undefined && previous.pid !== process.pid) {
      yield* Effect.logWarning(`data_dir ${dir}: taking over from a server that did not stop cleanly (${describeHolder(previous)})`)
    }
  }
  return DataDir.of({ dir, exclusive: !shared })
})

export const layer = (options: DataDirOptions): Layer.Layer<DataDir, DataDirError> => Layer.effect(DataDir, acquire(options))
