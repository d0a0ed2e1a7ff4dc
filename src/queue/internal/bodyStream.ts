/**
 * Reads a stored message back as one stream: the trace header(s) first, then the body from
 * memory or from its spool file. Used by every backend so adapters see the same bytes.
 */
import { createReadStream } from "node:fs"
import { Readable } from "node:stream"
import * as Reclaim from "../../internal/reclaim.ts"

export const fromParts = (trace: string, chunks: ReadonlyArray<Uint8Array>): Readable =>
  Readable.from([Buffer.from(trace, "utf8"), ...chunks], { objectMode: false })

export const fromFile = (trace: string, path: string): Readable =>
  Readable.from((async function*() {
    yield Buffer.from(trace, "utf8")
    for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) {
      Reclaim.note((chunk as Buffer).length)
      yield chunk as Buffer
    }
  })(), { objectMode: false })

/**
 * A stream over bytes loaded only when the stream is first read (a body stored in a database
 * row): a lease does not pin the body in memory, and a load failure surfaces as a stream error.
 */
export const fromLoader = (trace: string, load: () => Uint8Array): Readable =>
  Readable.from((async function*() {
    const body = load()
    yield Buffer.from(trace, "utf8")
    yield Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  })(), { objectMode: false })

/** Collects a stream into one buffer (tests, small adapters). */
export const collect = async (stream: Readable): Promise<Buffer> => {
  const parts: Array<Buffer> = []
  for await (const chunk of stream) parts.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk as Buffer)
  return Buffer.concat(parts)
}
