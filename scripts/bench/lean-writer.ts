/**
 * The writer thread of the "lean" benchmark target (lean-server.ts): one SQLite connection in WAL
 * mode with `synchronous=FULL`, applying each batch it is posted in one transaction — the inserts
 * of the batch's messages (a message row with the body inline, a recipient row) and the deletes
 * of the messages "delivered" since the last batch — and answering once `COMMIT` returned.
 */
import { DatabaseSync } from "node:sqlite"
import { parentPort, workerData } from "node:worker_threads"

export interface LeanCommit {
  readonly id: string
  readonly envelope: string
  readonly trace: string
  readonly receivedAt: number
  readonly rcpt: string
  readonly body: Uint8Array
}

export interface LeanBatch {
  readonly commits: ReadonlyArray<LeanCommit>
  readonly deletes: ReadonlyArray<string>
}

const port = parentPort
if (port === null) throw new Error("lean-writer.ts must run in a worker thread")
const db = new DatabaseSync(String(workerData))
db.exec("PRAGMA journal_mode = WAL")
db.exec("PRAGMA synchronous = FULL")
db.exec("PRAGMA foreign_keys = ON")
// The core of Incoming's schema (src/queue/internal/sqliteSchema.ts), without its state indexes.
db.exec(`
  CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, envelope TEXT NOT NULL, trace TEXT NOT NULL,
    received_at INTEGER NOT NULL, size INTEGER NOT NULL, body BLOB
  ) STRICT;
  CREATE TABLE IF NOT EXISTS recipients (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE, rcpt TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL, UNIQUE (message_id, rcpt)
  ) STRICT;
`)
const insertMessage = db.prepare("INSERT INTO messages (id, envelope, trace, received_at, size, body) VALUES (?, ?, ?, ?, ?, ?)")
const insertRecipient = db.prepare("INSERT INTO recipients (message_id, rcpt, state, attempts, next_attempt_at) VALUES (?, ?, 'inflight', 1, ?)")
const deleteMessage = db.prepare("DELETE FROM messages WHERE id = ?")

port.on("message", (batch: LeanBatch) => {
  db.exec("BEGIN IMMEDIATE")
  for (const c of batch.commits) {
    insertMessage.run(c.id, c.envelope, c.trace, c.receivedAt, c.body.byteLength, c.body)
    insertRecipient.run(c.id, c.rcpt, c.receivedAt)
  }
  for (const id of batch.deletes) deleteMessage.run(id)
  db.exec("COMMIT")
  port.postMessage(batch.commits.length)
})
