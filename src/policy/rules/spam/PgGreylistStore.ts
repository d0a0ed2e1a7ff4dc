/**
 * The greylist store shared by several nodes: PostgreSQL, in the database (and schema) of the
 * PostgreSQL queue, so a sender that retries to another node behind the same MX is recognised
 * there. Two tables beside the queue's, `greylist_triplets` and `greylist_clients`, created at
 * start if missing (under an advisory lock, so nodes starting together do not race).
 *
 * Every operation is one statement on a small pool of its own (2 connections), with the same
 * logical rows as the embedded store (SqliteGreylistStore.ts). Nodes writing the same triplet at
 * once is harmless: the last write wins and the worst case is one more delay for that sender.
 * Any database error is a `GreylistStoreError`, which the rule turns into letting mail through.
 * Times are epoch milliseconds from the rule (Effect's Clock), as `bigint` columns.
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Effect, type Redacted, type Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { type ClientRecord, type GreylistStore, GreylistStoreError, type TripletRecord } from "./GreylistStore.ts"

export interface PgGreylistStoreOptions {
  /** `postgres://user:password@host:5432/db`: the queue's database. */
  readonly url: Redacted.Redacted<string>
  /** The schema of its tables (created if missing); default `incoming`, as the queue's. */
  readonly schema?: string | undefined
  /** How long a connection attempt may take (ms); default 5 s. */
  readonly connectTimeoutMs?: number | undefined
}

const unavailable = (what: string) => (cause: unknown) =>
  new GreylistStoreError({
    reason: { _tag: "Unavailable", detail: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` },
    cause
  })

/**
 * The rule's triplet keys separate their parts with NUL, which PostgreSQL text cannot hold: here
 * they are separated by a line feed, which no address nor network can contain either.
 */
const pgKey = (key: string): string => key.replaceAll("\u0000", "\n")

const tables = [
  `CREATE TABLE IF NOT EXISTS greylist_triplets (
    key text PRIMARY KEY,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    passed_at bigint
  )`,
  `CREATE INDEX IF NOT EXISTS greylist_triplets_last_seen ON greylist_triplets (last_seen)`,
  `CREATE TABLE IF NOT EXISTS greylist_clients (
    client text PRIMARY KEY,
    passes integer NOT NULL,
    last_seen bigint NOT NULL
  )`
]

/** Connects, creates the tables if needed; the pool closes with the scope. */
export const make = (options: PgGreylistStoreOptions): Effect.Effect<GreylistStore, GreylistStoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const schema = options.schema ?? "incoming"
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) return yield* unavailable("bad schema name")(JSON.stringify(schema))
    const sql = yield* PgClient.make({
      url: options.url,
      maxConnections: 2,
      minConnections: 1,
      connectTimeout: options.connectTimeoutMs ?? 5_000,
      applicationName: "incoming greylist",
      startupParameters: { search_path: schema }
    }).pipe(
      Effect.provide(Reactivity.layer),
      // Pool timeouts are wall-clock matters, whatever clock the rule runs on (TestClock in tests).
      Effect.provideService(Clock.Clock, Clock.Clock.defaultValue()),
      Effect.mapError(unavailable("cannot connect to PostgreSQL"))
    )
    yield* Effect.gen(function*() {
      yield* sql.unsafe(`CREATE SCHEMA IF NOT EXISTS "${schema}"`).pipe(Effect.catch(() => Effect.void))
      yield* sql`SELECT pg_advisory_xact_lock(hashtext('incoming_greylist_schema'))`
      for (const statement of tables) yield* sql.unsafe(statement)
    }).pipe(sql.withTransaction, Effect.mapError(unavailable("cannot connect to PostgreSQL and set up the greylist tables")))

    const run = <A, E>(what: string, effect: Effect.Effect<A, E>) => Effect.mapError(effect, unavailable(what))
    const n = (v: unknown): number => Number(v)
    return {
      getTriplet: (key) =>
        run(
          "read a triplet",
          Effect.map(
            sql<{ first_seen: unknown; last_seen: unknown; passed_at: unknown }>`SELECT first_seen, last_seen, passed_at FROM greylist_triplets WHERE key = ${pgKey(key)}`,
            (rows) => {
              const r = rows[0]
              return r === undefined ? undefined : {
                firstSeen: n(r.first_seen),
                lastSeen: n(r.last_seen),
                passedAt: r.passed_at === null ? undefined : n(r.passed_at)
              } satisfies TripletRecord
            }
          )
        ),
      putTriplet: (key, r) =>
        run(
          "write a triplet",
          Effect.asVoid(sql`
            INSERT INTO greylist_triplets (key, first_seen, last_seen, passed_at)
            VALUES (${pgKey(key)}, ${r.firstSeen}, ${r.lastSeen}, ${r.passedAt ?? null})
            ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen, passed_at = excluded.passed_at`)
        ),
      getClient: (client) =>
        run(
          "read a client",
          Effect.map(sql<{ passes: unknown; last_seen: unknown }>`SELECT passes, last_seen FROM greylist_clients WHERE client = ${client}`, (rows) => {
            const r = rows[0]
            return r === undefined ? undefined : { passes: n(r.passes), lastSeen: n(r.last_seen) } satisfies ClientRecord
          })
        ),
      putClient: (client, r) =>
        run(
          "write a client",
          Effect.asVoid(sql`
            INSERT INTO greylist_clients (client, passes, last_seen) VALUES (${client}, ${r.passes}, ${r.lastSeen})
            ON CONFLICT (client) DO UPDATE SET passes = excluded.passes, last_seen = excluded.last_seen`)
        ),
      prune: (before, maxTriplets) =>
        run(
          "prune",
          Effect.gen(function*() {
            const pending = yield* sql`DELETE FROM greylist_triplets WHERE passed_at IS NULL AND first_seen < ${before.pendingFirstSeen} RETURNING 1`
            const passed = yield* sql`DELETE FROM greylist_triplets WHERE passed_at IS NOT NULL AND last_seen < ${before.passedLastSeen} RETURNING 1`
            const clients = yield* sql`DELETE FROM greylist_clients WHERE last_seen < ${before.passedLastSeen} RETURNING 1`
            const total = yield* sql<{ count: unknown }>`SELECT count(*) AS count FROM greylist_triplets`
            const over = n(total[0]?.count) - maxTriplets
            const overflow = over > 0
              ? yield* sql`DELETE FROM greylist_triplets WHERE key IN (
                  SELECT key FROM greylist_triplets WHERE passed_at IS NULL ORDER BY last_seen LIMIT ${over}) RETURNING 1`
              : []
            return pending.length + passed.length + clients.length + overflow.length
          })
        ),
      size: run("count", Effect.map(sql<{ count: unknown }>`SELECT count(*) AS count FROM greylist_triplets`, (rows) => n(rows[0]?.count)))
    } satisfies GreylistStore
  })
