/**
 * Which queue `incoming queue ...` opens: the SQLite queue of `--data-dir` (default), or, with
 * `--config`, the queue that config names — so on a PostgreSQL node, `incoming queue list
 * --config /etc/incoming/incoming.toml` shows every node's messages from the shared database.
 */
import { existsSync } from "node:fs"
import { join } from "node:path"
import { Context, Effect, type FileSystem, Layer, Option, References } from "effect"
import type { Scope } from "effect"
import { Flag } from "effect/cli"
import * as Load from "../config/Load.ts"
import * as DataDir from "../DataDir.ts"
import * as Incoming from "../Incoming.ts"
import { QueueAdmin } from "../queue/QueueAdmin.ts"
import type { NodeLeases } from "../queue/postgres/admin.ts"
import * as PgQueue from "../queue/postgres/PgQueue.ts"
import * as SqliteQueue from "../queue/SqliteQueue.ts"

export const dataDir = Flag.String("data-dir").pipe(
  Flag.withDescription("the server's data directory (SQLite queue)"),
  Flag.withDefault(Incoming.defaultDataDir)
)

export const config = Flag.String("config").pipe(
  Flag.withDescription("open the queue this config file names ([queue] backend, url, data_dir) instead of --data-dir"),
  Flag.optional
)

export interface Source {
  readonly dataDir: string
  readonly config: Option.Option<string>
}

export interface Opened {
  readonly queue: QueueAdmin["Service"]
  /** Leases per node, for a shared (PostgreSQL) queue. */
  readonly leasesByNode: Option.Option<Effect.Effect<ReadonlyArray<NodeLeases>, unknown>>
}

/**
 * The SQLite queue must exist already: a typo in `--data-dir` must not create an empty queue
 * there (and report it as empty). A server running on the directory with another queue backend
 * (recorded in its `server.json`; a server with no `queue.db` and no such record: the memory
 * queue) keeps its queue out of reach of this process, even where a `queue.db` left by an
 * earlier SQLite server is still there: that one would show a stale queue as the live one.
 */
const existingQueue = (dir: string) =>
  Effect.suspend(() => {
    const server = DataDir.runningServer(dir)
    const present = existsSync(join(dir, "queue.db"))
    const backend = server?.queue ?? (present ? "sqlite" : "memory")
    if (server === undefined ? present : backend === "sqlite" && present) return Effect.void
    const where = server === undefined ? "" : `the server running on ${dir} (${DataDir.describeHolder(server)})`
    return Effect.fail(
      new Error(
        server === undefined
          ? `no queue at ${dir}`
          : backend === "memory"
          ? `${where} keeps its queue in memory: it is not visible to incoming queue`
          : backend === "sqlite"
          ? `no queue at ${dir} (${where} has not created it yet)`
          : `${where} uses a ${backend} queue: it is not visible to incoming queue`
      )
    )
  })

const sqlite = (dir: string) =>
  Effect.andThen(
    existingQueue(dir),
    Effect.map(Layer.build(Layer.fresh(SqliteQueue.layer({ dataDir: dir }))), (ctx): Opened => ({
      queue: Context.get(ctx, QueueAdmin),
      leasesByNode: Option.none()
    }))
  )

const open = (source: Source): Effect.Effect<Opened, unknown, Scope.Scope | FileSystem.FileSystem> =>
  Option.match(source.config, {
    onNone: () => sqlite(source.dataDir),
    onSome: (path) =>
      Effect.gen(function*() {
        const loaded = yield* Load.loadFromProcess({ configPath: path })
        const q = loaded.config.queue
        if (q.backend === "postgres" && q.url !== undefined) {
          const pg = yield* PgQueue.make({
            url: q.url,
            schema: q.schema,
            poolSize: 2,
            // Not a node: it takes no leases and runs no heartbeat or reaper of its own.
            nodeId: `cli:${process.pid}`,
            heartbeat: false,
            maintenanceIntervalMs: 0,
            maxDepth: q.max_depth,
            deadLetterTtlMs: q.dead_letter_ttl
          })
          return { queue: pg.admin, leasesByNode: Option.some(pg.leasesByNode) }
        }
        if (q.backend === "memory") return yield* Effect.fail(new Error("the configured queue is in memory: it lives only inside the server process"))
        return yield* sqlite(loaded.config.data_dir)
      })
  })

// Opening the queue logs at info; on a command's stdout that would break `--json`.
export const withQueue = <A, E>(source: Source, f: (q: QueueAdmin["Service"], opened: Opened) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(open(source), (opened) => f(opened.queue, opened))).pipe(
    Effect.provideService(References.MinimumLogLevel, "Warn")
  )
