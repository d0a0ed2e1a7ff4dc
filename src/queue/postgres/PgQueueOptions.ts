/**
 * What the PostgreSQL queue needs to know, and its defaults: a module without the driver, so the
 * config schema can name them without loading `@effect/sql-pg`.
 */
import { hostname } from "node:os"
import type { Redacted } from "effect"
import type { QueueOptions } from "../MailQueue.ts"

export interface PgQueueOptions extends Partial<QueueOptions> {
  /** `postgres://user:password@host:5432/db` (a secret: it may carry the password). */
  readonly url: Redacted.Redacted<string>
  /** The schema holding the queue's tables (created if missing); default `incoming`. */
  readonly schema?: string | undefined
  /** Connections in this node's pool (one more is held for LISTEN); default 10. */
  readonly poolSize?: number | undefined
  /** This node's name in leases and `queue stats`; default `<hostname>:<pid>`. */
  readonly nodeId?: string | undefined
  /**
   * Renew held leases every third of their length (default true). Off only where a test
   * simulates a dead owner by an owner that stays silent (the conformance kit).
   */
  readonly heartbeat?: boolean | undefined
  /** How often the reaper and the depth recount run (ms); 0 turns them off. Default 5 s. */
  readonly maintenanceIntervalMs?: number | undefined
  /** Group-commit batches in flight at once; default 2. */
  readonly writers?: number | undefined
  /** How long a connection attempt may take (ms); default 5 s. */
  readonly connectTimeoutMs?: number | undefined
}

export const defaults = {
  schema: "incoming",
  poolSize: 10,
  maintenanceIntervalMs: 5_000,
  writers: 2,
  connectTimeoutMs: 5_000
} as const

export const defaultNodeId = (): string => `${hostname()}:${process.pid}`

/** A URL with its password replaced, for logs and `check-config`. */
export const redactUrl = (url: string): string => {
  try {
    const u = new URL(url)
    if (u.password !== "") u.password = "***"
    return u.toString()
  } catch {
    return "<unparsable url>"
  }
}


/** A schema name we accept: a plain lower-case identifier, so it never needs quoting tricks. */
export const isSchemaName = (name: string): boolean => /^[a-z_][a-z0-9_]{0,62}$/.test(name)
