/**
 * A PostgreSQL cluster owned by one test, for tests that stop or restart the database server: the
 * shared server on 127.0.0.1:5432 is used by others and must never be restarted. `initdb` in a
 * temporary directory, the `postgres` server started as a child process on a free loopback port
 * (so its PID is known), stopped and started again by that PID, and stopped and removed with the
 * test's scope. As root, the binaries run as the `postgres` user (initdb refuses root). When the
 * PostgreSQL 15 binaries are absent, `available` is false and tests skip saying so.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, openSync, closeSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, type Scope } from "effect"

const bin = (process.env["INCOMING_TEST_PG_BIN"] ?? "/usr/lib/postgresql/15/bin").replace(/\/$/, "")

export const available = existsSync(`${bin}/initdb`) && existsSync(`${bin}/postgres`)
export const skipMessage = `no PostgreSQL binaries in ${bin} (initdb, postgres): tests that restart a database of their own are skipped`

// As root the cluster belongs to the postgres user; otherwise to whoever runs the test.
const owner = (): { readonly uid: number; readonly gid: number } | undefined => {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag: string) => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout.trim())
  const uid = id("-u")
  const gid = id("-g")
  return Number.isInteger(uid) && uid > 0 ? { uid, gid } : undefined
}

const freePort = Effect.callback<number, Error>((resume) => {
  const s = createServer()
  s.once("error", (e) => resume(Effect.fail(e)))
  s.listen(0, "127.0.0.1", () => {
    const port = (s.address() as { port: number }).port
    s.close(() => resume(Effect.succeed(port)))
  })
})

export interface Cluster {
  /** `postgres://postgres@127.0.0.1:PORT/DATABASE`. */
  readonly url: (database: string) => string
  readonly port: number
  /** The running server's PID (changes with every start). */
  readonly pid: () => number | undefined
  /** Stops the server by its PID: SIGINT is PostgreSQL's fast shutdown (sessions cut, no waiting). */
  readonly stop: Effect.Effect<void, Error>
  /** Starts the server again on the same port and data; resolves once it accepts connections. */
  readonly start: Effect.Effect<void, Error>
}

export const make: Effect.Effect<Cluster, Error, Scope.Scope> = Effect.gen(function*() {
  const dir = mkdtempSync(join(tmpdir(), "incoming-pgcluster-"))
  const data = join(dir, "data")
  const who = owner()
  const as = who === undefined ? {} : { uid: who.uid, gid: who.gid }
  if (who !== undefined) chownSync(dir, who.uid, who.gid)
  const port = yield* freePort
  let proc: ChildProcess | undefined

  const init = spawnSync(`${bin}/initdb`, ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"], { encoding: "utf8", cwd: dir, ...as })
  if (init.status !== 0) return yield* Effect.fail(new Error(`initdb failed: ${init.stderr}`))

  const ready = Effect.gen(function*() {
    for (let i = 0; i < 100; i++) {
      const r = spawnSync(`${bin}/pg_isready`, ["-h", "127.0.0.1", "-p", String(port), "-t", "1"], { stdio: "ignore" })
      if (r.status === 0) return
      if (proc?.exitCode !== null || proc.signalCode !== null) break
      yield* Effect.sleep("100 millis")
    }
    return yield* Effect.fail(new Error(`the test cluster on port ${port} did not come up; see ${dir}/server.log`))
  })

  const start = Effect.suspend(() => {
    const log = openSync(join(dir, "server.log"), "a")
    if (who !== undefined) chownSync(join(dir, "server.log"), who.uid, who.gid)
    proc = spawn(`${bin}/postgres`, [
      "-D", data, "-p", String(port), "-k", dir,
      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=60"
    ], { cwd: dir, stdio: ["ignore", log, log], ...as })
    closeSync(log)
    return ready
  })

  const stopped = (p: ChildProcess) =>
    Effect.callback<void>((resume) => {
      if (p.exitCode !== null || p.signalCode !== null) return resume(Effect.void)
      p.once("exit", () => resume(Effect.void))
    })

  const stop = Effect.suspend(() => {
    const p = proc
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return Effect.void
    p.kill("SIGINT")
    return stopped(p).pipe(
      Effect.timeoutOrElse({
        duration: "20 seconds",
        orElse: () => Effect.fail(new Error(`the test cluster (pid ${p.pid}) did not stop on SIGINT`))
      })
    )
  })

  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      const p = proc
      if (p !== undefined && p.exitCode === null && p.signalCode === null) {
        p.kill("SIGINT")
        yield* stopped(p).pipe(Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.sync(() => p.kill("SIGKILL")) }))
      }
      rmSync(dir, { recursive: true, force: true })
    })
  )
  yield* start

  return {
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    port,
    pid: () => proc?.pid,
    stop,
    start
  }
})
