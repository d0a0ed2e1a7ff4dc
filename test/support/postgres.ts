/**
 * A real PostgreSQL for tests: the server on 127.0.0.1:5432 (trust auth; `.ci/run` starts it),
 * or `INCOMING_TEST_PG_URL`. Each test creates a database of its own and drops it with its scope
 * (`WITH (FORCE)`, so connections a test left open cannot keep it). When the server does not
 * answer, `available` is false and tests skip saying so.
 */
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted, type Scope } from "effect"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"
import type { MailQueue } from "../../src/queue/MailQueue.ts"
import type { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import type { MailQueueError } from "../../src/queue/MailQueueError.ts"

/** The maintenance database tests connect to in order to create and drop their own. */
export const adminUrl = process.env["INCOMING_TEST_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"

const probe = (): boolean => {
  const u = new URL(adminUrl)
  const r = spawnSync("pg_isready", ["-h", u.hostname, "-p", u.port || "5432", "-t", "3"], { stdio: "ignore" })
  return r.status === 0
}

export const available = probe()
export const skipMessage = `PostgreSQL does not answer at ${PgQueue.redactUrl(adminUrl)} (pg_isready): PostgreSQL queue tests are skipped`
if (!available) console.warn(skipMessage)

/** The URL of a database of the same server under another name. */
export const urlFor = (database: string): string => {
  const u = new URL(adminUrl)
  u.pathname = `/${database}`
  return u.toString()
}

const admin = <A, E>(f: (sql: PgClient.PgClient) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(PgQueue.connect({ url: Redacted.make(adminUrl), poolSize: 1 }, "incoming-test"), f))

/** A fresh, empty database, dropped when the scope closes; returns its URL. */
export const freshDatabase: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.gen(function*() {
    const name = `incoming_test_${randomBytes(6).toString("hex")}`
    yield* admin((sql) => sql.unsafe(`CREATE DATABASE ${name}`))
    return name
  }).pipe(Effect.orDie),
  (name) => admin((sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).pipe(Effect.ignore)
).pipe(Effect.map(urlFor))

/** A PostgreSQL queue on a fresh database of its own. */
export const queueLayer = (options: Omit<PgQueue.PgQueueOptions, "url">): Layer.Layer<MailQueue | QueueAdmin, MailQueueError> =>
  Layer.unwrap(Effect.map(freshDatabase, (url) => PgQueue.layer({ ...options, url: Redacted.make(url) })))
