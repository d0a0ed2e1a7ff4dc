/**
 * Message bodies in PostgreSQL, so that any node can deliver any message.
 *
 * A body up to `chunkSize` is stored inline in its `messages` row. A larger one is written to
 * `body_chunks` one chunk at a time, read from its spool file (or sliced from memory) just
 * before each INSERT, so a 50 MiB message costs one chunk of memory, not 50 MiB. Reading back is
 * just as lazy: the stream asks for the next chunk only when the consumer wants more bytes, and a
 * lease holds no body bytes at all.
 */
import { open } from "node:fs/promises"
import type { Readable } from "node:stream"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Effect, Stream } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import * as Reclaim from "../../internal/reclaim.ts"
import { detached, type SpooledBody } from "../../spool/SpooledBody.ts"
import { fromStorageException, MailQueueError } from "../MailQueueError.ts"
import { chunkSize } from "./schema.ts"

/** Whether a body is stored in chunks rather than inline. */
export const isLarge = (body: SpooledBody): boolean => body.size > chunkSize

/** The bytes of a small body (at most `chunkSize`), for its `messages` row. */
export const inline = (body: SpooledBody): Effect.Effect<Uint8Array, MailQueueError> =>
  body._tag === "InMemory"
    ? Effect.sync(() => detached(body))
    : Effect.tryPromise({
      try: async () => {
        const handle = await open(body.path, "r")
        try {
          const out = Buffer.allocUnsafe(body.size)
          const { bytesRead } = await handle.read(out, 0, body.size, 0)
          if (bytesRead !== body.size) throw new Error(`spool file ${body.path} is shorter than the ${body.size} bytes received`)
          return out
        } finally {
          await handle.close()
        }
      },
      catch: (cause) => fromStorageException(cause, "reading the spooled body")
    })

/**
 * Writes a large body's chunks with `sql` (inside the caller's transaction); returns how many.
 * A spool file is read one chunk at a time; an in-memory body is sliced without copying.
 */
export const writeChunks = (sql: SqlClient.SqlClient, id: string, body: SpooledBody): Effect.Effect<number, MailQueueError | SqlError.SqlError> => {
  const count = Math.ceil(body.size / chunkSize)
  const insert = (n: number, data: Uint8Array) => sql`INSERT INTO body_chunks (message_id, n, data) VALUES (${id}, ${n}, ${data})`
  if (body._tag === "InMemory") {
    const whole = detached(body)
    return Effect.forEach(
      Array.from({ length: count }, (_, n) => n),
      (n) => insert(n, whole.subarray(n * chunkSize, Math.min(body.size, (n + 1) * chunkSize))),
      { discard: true }
    ).pipe(Effect.as(count))
  }
  return Effect.acquireUseRelease(
    Effect.tryPromise({ try: () => open(body.path, "r"), catch: (cause) => fromStorageException(cause, "opening the spooled body") }),
    (handle) =>
      Effect.forEach(Array.from({ length: count }, (_, n) => n), (n) =>
        Effect.gen(function*() {
          const length = Math.min(chunkSize, body.size - n * chunkSize)
          const buffer = Buffer.allocUnsafe(length)
          const { bytesRead } = yield* Effect.tryPromise({
            try: () => handle.read(buffer, 0, length, n * chunkSize),
            catch: (cause) => fromStorageException(cause, "reading the spooled body")
          })
          if (bytesRead !== length) {
            return yield* new MailQueueError({ reason: { _tag: "StorageFailed", detail: `spool file ${body.path} is shorter than the ${body.size} bytes received` } })
          }
          yield* insert(n, buffer)
        }), { discard: true }),
    (handle) => Effect.promise(() => handle.close())
  ).pipe(Effect.as(count))
}

/**
 * The stored message as a Node stream: the trace header(s), then the inline body or each chunk
 * fetched when the consumer pulls. A message removed meanwhile surfaces as a stream error.
 */
export const stream = (sql: SqlClient.SqlClient, id: string, trace: string): Readable => {
  const head = sql<{ body: Uint8Array | null; chunks: number }>`SELECT body, chunks FROM messages WHERE id = ${id}`.pipe(
    Effect.flatMap((rows) =>
      rows[0] === undefined
        ? Effect.fail(new MailQueueError({ reason: { _tag: "NotFound", id } }))
        : Effect.succeed(rows[0])
    )
  )
  const chunk = (n: number) =>
    sql<{ data: Uint8Array }>`SELECT data FROM body_chunks WHERE message_id = ${id} AND n = ${n}`.pipe(
      Effect.flatMap((rows) =>
        rows[0] === undefined
          ? Effect.fail(new MailQueueError({ reason: { _tag: "NotFound", id } }))
          : Effect.sync(() => {
            Reclaim.note(rows[0]!.data.byteLength)
            return rows[0]!.data
          })
      )
    )
  const body = Stream.fromEffect(head).pipe(
    Stream.flatMap((row) =>
      row.body !== null
        ? Stream.make(row.body)
        : Stream.fromIterable(Array.from({ length: row.chunks }, (_, n) => n)).pipe(Stream.mapEffect(chunk))
    )
  )
  return NodeStream.toReadableNever(Stream.concat(Stream.make(Buffer.from(trace, "utf8") as Uint8Array), body))
}
