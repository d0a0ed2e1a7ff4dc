/**
 * A received message body, held either in memory (small messages) or in a spool file.
 *
 * The spool decides where the bytes live while DATA arrives; the queue decides what to keep
 * when it commits. `release` gives back the memory budget and removes a spool file that no
 * queue adopted; it is idempotent.
 */
import type { Effect } from "effect"

export type SpooledBody = InMemoryBody | FileBody

export interface InMemoryBody {
  readonly _tag: "InMemory"
  readonly size: number
  readonly chunks: ReadonlyArray<Uint8Array>
  readonly release: Effect.Effect<void>
}

export interface FileBody {
  readonly _tag: "File"
  readonly size: number
  readonly path: string
  readonly release: Effect.Effect<void>
}

export const concat = (body: InMemoryBody): Buffer =>
  body.chunks.length === 1 ? Buffer.from(body.chunks[0]!.buffer, body.chunks[0]!.byteOffset, body.size)
  : Buffer.concat(body.chunks, body.size)
