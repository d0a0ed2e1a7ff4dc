/**
 * The on-disk schema of the SQLite queue, its migrations, and the decoding of its rows.
 *
 * `PRAGMA user_version` records how many migrations a database has seen; opening it applies the
 * missing ones in order, each in its own transaction. Migrations are append-only: a released
 * one is never edited, a change is a new function at the end. A database written by a newer
 * version (more migrations than we know) is refused rather than misread.
 *
 * One `messages` row per message and one `recipients` row per recipient. Partial indexes cover
 * exactly the rows each hot query scans: due recipients not on hold (claim, next due time), leases (expiry)
 * and dead letters (TTL purge), so none of them is a table scan.
 */
import type { DatabaseSync, SQLOutputValue } from "node:sqlite"
import { decode, encode, type Envelope } from "../../protocol/Envelope.ts"

export type Migration = (db: DatabaseSync) => void

export const migrations: ReadonlyArray<Migration> = [
  (db) =>
    db.exec(`
      CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        envelope TEXT NOT NULL,
        trace TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        size INTEGER NOT NULL,
        body BLOB,
        body_file TEXT
      ) STRICT;
      CREATE INDEX messages_received ON messages (received_at);
      CREATE TABLE recipients (
        message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        rcpt TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'inflight', 'retry', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_reply TEXT,
        lease_owner TEXT,
        lease_token TEXT,
        lease_expires_at INTEGER,
        expires_at INTEGER,
        UNIQUE (message_id, rcpt)
      ) STRICT;
      CREATE INDEX recipients_due ON recipients (next_attempt_at) WHERE state IN ('queued', 'retry');
      CREATE INDEX recipients_leases ON recipients (lease_expires_at) WHERE state = 'inflight';
      CREATE INDEX recipients_dead ON recipients (expires_at) WHERE state = 'dead';
    `),
  // Hold (`incoming queue hold`): a flag on every recipient row of the message, so the due index
  // leaves held rows out and the claim queries cost what they did.
  (db) =>
    db.exec(`
      ALTER TABLE recipients ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held IN (0, 1));
      DROP INDEX recipients_due;
      CREATE INDEX recipients_due ON recipients (next_attempt_at) WHERE state IN ('queued', 'retry') AND held = 0;
    `)
]

export class SchemaTooNew extends Error {}

/**
 * Brings the database to the latest schema; returns the version it started from. The version is
 * read under the write lock, so two processes opening a new directory at once migrate it once.
 */
export const migrate = (db: DatabaseSync): number => {
  let from: number | undefined
  while (true) {
    db.exec("BEGIN IMMEDIATE")
    try {
      const version = int(db.prepare("PRAGMA user_version").get()?.user_version)
      from ??= version
      if (version > migrations.length) {
        throw new SchemaTooNew(`queue database has schema version ${version}, this version of Incoming knows ${migrations.length}`)
      }
      if (version === migrations.length) {
        db.exec("COMMIT")
        return from
      }
      migrations[version]!(db)
      db.exec(`PRAGMA user_version = ${version + 1}`)
      db.exec("COMMIT")
    } catch (cause) {
      if (db.isTransaction) db.exec("ROLLBACK")
      throw cause
    }
  }
}

// Row values come back as SQLite gives them; these narrow them and fail loudly on a corrupt row.
export const int = (value: SQLOutputValue | undefined): number => {
  if (typeof value === "number") return value
  if (typeof value === "bigint") return Number(value)
  throw new TypeError(`queue database: expected an integer, got ${typeof value}`)
}

export const text = (value: SQLOutputValue | undefined): string => {
  if (typeof value === "string") return value
  throw new TypeError(`queue database: expected text, got ${typeof value}`)
}

export const optionalText = (value: SQLOutputValue | undefined): string | undefined =>
  value === null || value === undefined ? undefined : text(value)

export const optionalInt = (value: SQLOutputValue | undefined): number | undefined =>
  value === null || value === undefined ? undefined : int(value)

export const bytes = (value: SQLOutputValue | undefined): Uint8Array | undefined =>
  value instanceof Uint8Array ? value : undefined

// The envelope's stored form is defined with the envelope (every backend shares it).
export const encodeEnvelope = (envelope: Envelope): string => encode(envelope)

/** Throws on a row that does not hold an envelope (a hand-edited or corrupt database). */
export const decodeEnvelope = (json: string): Envelope => decode(json)
