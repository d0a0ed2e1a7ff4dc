/**
 * The `[queue]` table of the config file: the backend and its settings (SQLite's inline
 * threshold, PostgreSQL's url, pool, schema and node id). Its own module so the main schema stays
 * readable; the checks that span keys (a url only with postgres) are in `Load.ts`.
 */
import { Redacted, Schema } from "effect"
import { defaultQueueOptions } from "../queue/MailQueue.ts"
import { defaults as PgQueueDefaults, isSchemaName } from "../queue/postgres/PgQueueOptions.ts"
import { defaultInlineThreshold } from "../queue/SqliteQueue.ts"
import { count, duration, NonEmpty, Secret, size, withDefault } from "./SchemaParts.ts"

export const Queue = Schema.Struct({
  backend: withDefault(Schema.Literals(["sqlite", "memory", "postgres"]), "sqlite"),
  max_depth: count(1, defaultQueueOptions.maxDepth),
  dead_letter_ttl: duration(defaultQueueOptions.deadLetterTtlMs),
  /** sqlite only: bodies up to this size live in the database row, larger ones in fsync'd files. */
  inline_threshold: size(defaultInlineThreshold),
  /**
   * postgres only (required there): `postgres://user:password@host:5432/db`. A secret, since it
   * may carry the password: write it as `"${DATABASE_URL}"`; `check-config` shows `<redacted>`.
   */
  url: Schema.optionalKey(Secret),
  /** postgres only: connections in this node's pool (plus one for LISTEN). */
  pool_size: count(1, PgQueueDefaults.poolSize),
  /** postgres only: the schema holding the queue's tables, created if missing. */
  schema: withDefault(Schema.String.check(Schema.makeFilter((s: string) => isSchemaName(s) ? undefined : "expected lower-case letters, digits and _ (a PostgreSQL schema name)")), PgQueueDefaults.schema),
  /** postgres only: this node's name in leases and `queue stats`; default `<hostname>:<pid>`. */
  node_id: Schema.optionalKey(NonEmpty)
})


/** What only the whole table can say: postgres needs a postgres:// url; its keys mean nothing elsewhere. */
export const problems = (queue: typeof Queue.Type): Array<readonly [key: string, message: string]> => {
  const out: Array<readonly [string, string]> = []
  if (queue.backend === "postgres") {
    const url = queue.url === undefined ? undefined : Redacted.value(queue.url)
    if (url === undefined) out.push(["url", `required when backend is "postgres" (like "postgres://incoming@db.internal:5432/mail"; write it as "\${DATABASE_URL}")`])
    else if (!/^postgres(ql)?:\/\//.test(url)) out.push(["url", "expected a postgres:// or postgresql:// URL (the value is not shown: it is a secret)"])
  } else {
    for (const key of ["url", "node_id"] as const) {
      if (queue[key] !== undefined) out.push([key, `only used with backend = "postgres" (backend is "${queue.backend}")`])
    }
  }
  return out
}
