/**
 * The built-in queue backends, one namespace: `Queues.Memory`, `Queues.Sqlite`. A host app usually
 * picks one through `Incoming.layer({ queue })`; a backend author reads them beside the
 * `MailQueue` contract and runs `incoming-smtp/testing/queue-conformance` against their own.
 */
export * as Memory from "./MemoryQueue.ts"
export * as Sqlite from "./SqliteQueue.ts"
