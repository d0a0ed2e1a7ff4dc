/**
 * The built-in queue backends, one namespace: `Queues.Memory`, `Queues.Sqlite`, `Queues.Postgres`. A host app usually
 * picks one through `Incoming.layer({ queue })`; a backend author reads them beside the
 * `MailQueue` and `QueueAdmin` contracts, builds both with `Queues.Backend.layer(make(options))`,
 * and runs `incoming-smtp/testing/queue-conformance` against their own.
 */
export * as Backend from "./QueueBackend.ts"
export * as Memory from "./MemoryQueue.ts"
export * as Postgres from "./postgres/PgQueue.ts"
export * as Sqlite from "./SqliteQueue.ts"
