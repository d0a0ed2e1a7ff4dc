/**
 * The header block of a spooled message: read it (for DATA-stage rules and for edits), and
 * rewrite it (remove, change, insert or append fields) while keeping every byte after it.
 *
 * Reading looks at the first `limit` bytes only (a spilled body is read from its file, never
 * whole). The block ends at the empty line, or at the first line that is not a header field;
 * fields are kept as their exact bytes, so a rewrite changes only what an edit touches (a
 * DKIM signature over the untouched fields still verifies downstream).
 *
 * A rewrite of an in-memory body builds new chunks; of a spilled body, one streaming copy into a
 * new spool file (bounded memory), after which the old file is released. Edits that only add
 * fields on top never come here: they join the trace block (policy/MessageEdit.ts). A replaced
 * body (`replaceBody`) is put under the edited header block the same way.
 */
import { createReadStream, createWriteStream } from "node:fs"
import { open, unlink } from "node:fs/promises"
import { pipeline } from "node:stream/promises"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Effect, Stream } from "effect"
import * as Reclaim from "../internal/reclaim.ts"
import { authservIdOf } from "../protocol/AuthenticationResults.ts"
import { headerLine, type HeaderOp } from "../protocol/HeaderEdit.ts"
import type { SpooledBody } from "./SpooledBody.ts"
import { SpoolError } from "./SpoolError.ts"

export interface Field {
  readonly name: string
  /** Unfolded, without the leading and trailing white space. */
  readonly value: string
  /** The field's exact bytes (continuation lines and the final CRLF included). */
  readonly raw: Uint8Array
}

export interface HeaderBlock {
  readonly fields: ReadonlyArray<Field>
  /** Byte offset where the fields end (the empty line, or whatever follows them). */
  readonly end: number
}

export const defaultLimit = 1024 * 1024

const storageFailed = (what: string) => (cause: unknown) =>
  new SpoolError({ reason: { _tag: "StorageFailed", detail: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` }, cause })

/** The message bytes as a Stream, read afresh on each run: in-memory chunks, or the spool file in 64 KiB reads. */
export const stream = (body: SpooledBody): Stream.Stream<Uint8Array, SpoolError> =>
  body._tag === "InMemory"
    ? Stream.fromIterable(body.chunks)
    : NodeStream.fromReadable<Uint8Array, SpoolError>({
      evaluate: () => createReadStream(body.path, { highWaterMark: 64 * 1024 }),
      onError: storageFailed(`reading ${body.path}`)
    }).pipe(
      // Read buffers die young: let the reclaimer collect them on a large message (reclaim.ts).
      Stream.tap((chunk) => Effect.sync(() => Reclaim.note(chunk.byteLength)))
    )

/** The first `limit` bytes of the body (fewer when it is shorter). */
const head = (body: SpooledBody, limit: number): Effect.Effect<Buffer, SpoolError> => {
  if (body._tag === "InMemory") {
    const parts: Array<Uint8Array> = []
    let n = 0
    for (const c of body.chunks) {
      if (n >= limit) break
      const take = c.subarray(0, limit - n)
      parts.push(take)
      n += take.byteLength
    }
    return Effect.succeed(Buffer.concat(parts))
  }
  return Effect.tryPromise({
    try: async () => {
      const file = await open(body.path, "r")
      try {
        const buffer = Buffer.allocUnsafe(Math.min(limit, body.size))
        let n = 0
        while (n < buffer.length) {
          const { bytesRead } = await file.read(buffer, n, buffer.length - n, n)
          if (bytesRead === 0) break
          n += bytesRead
        }
        return buffer.subarray(0, n)
      } finally {
        await file.close()
      }
    },
    catch: storageFailed(`reading the header of ${body.path}`)
  })
}

/** Parses the fields at the start of `bytes`; `whole` is false when more of the message follows them. */
export const parse = (bytes: Uint8Array, whole = true): HeaderBlock => {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const fields: Array<Field> = []
  let at = 0
  while (at < buf.length) {
    const lineEnd = buf.indexOf("\r\n", at)
    // No complete line left inside what we read: the block ends before it.
    if (lineEnd < 0) break
    if (lineEnd === at) break // the empty line
    const colon = buf.indexOf(":", at)
    const first = buf[at]!
    if (colon < 0 || colon > lineEnd || first === 0x20 || first === 0x09) break
    const name = buf.toString("latin1", at, colon).trim()
    if (name === "" || /[\s]/.test(name)) break
    // The field goes on while the next line starts with white space.
    let end = lineEnd + 2
    while (end < buf.length && (buf[end] === 0x20 || buf[end] === 0x09)) {
      const next = buf.indexOf("\r\n", end)
      if (next < 0) {
        end = -1
        break
      }
      end = next + 2
    }
    // Cut by the read limit in the middle of a field: the block ends before it.
    if (end < 0 || (!whole && end >= buf.length)) break
    const value = buf.toString("utf8", colon + 1, end).replace(/\r\n[ \t]/g, " ").trim()
    fields.push({ name, value, raw: buf.subarray(at, end) })
    at = end
  }
  return { fields, end: at }
}

/** Reads and parses the header block of a spooled body. */
export const read = (body: SpooledBody, limit = defaultLimit): Effect.Effect<HeaderBlock, SpoolError> =>
  Effect.map(head(body, limit), (bytes) => parse(bytes, bytes.byteLength >= body.size))

const sameName = (a: string, b: string) => a.toLowerCase() === b.toLowerCase()

/** The fields after `ops`, as the bytes of the new header block. */
export const apply = (block: HeaderBlock, ops: ReadonlyArray<HeaderOp>): { readonly bytes: Buffer; readonly changed: boolean } => {
  let fields: Array<{ readonly name: string; readonly value: string; readonly raw: Uint8Array }> = [...block.fields]
  let changed = false
  const nth = (name: string, occurrence: number) => {
    let seen = 0
    return fields.findIndex((f) => sameName(f.name, name) && ++seen === occurrence)
  }
  const made = (name: string, value: string) => ({ name, value, raw: Buffer.from(headerLine(name, value), "utf8") })
  for (const op of ops) {
    switch (op._tag) {
      case "RemoveHeader": {
        const before = fields.length
        if (op.occurrence !== undefined) {
          const i = nth(op.name, op.occurrence)
          if (i >= 0) fields.splice(i, 1)
        } else {
          const id = op.authservId?.toLowerCase()
          fields = fields.filter((f) => !(sameName(f.name, op.name) && (id === undefined || authservIdOf(f.value) === id)))
        }
        changed ||= fields.length !== before
        break
      }
      case "ChangeHeader": {
        const i = nth(op.name, op.occurrence)
        if (i >= 0) {
          // The field keeps its name as written in the message.
          fields[i] = made(fields[i]!.name, op.value)
          changed = true
        }
        break
      }
      case "InsertHeader":
        fields.splice(Math.max(0, Math.min(op.index, fields.length)), 0, made(op.name, op.value))
        changed = true
        break
      case "AppendHeader":
        fields.push(made(op.name, op.value))
        changed = true
        break
    }
  }
  return { bytes: Buffer.concat(fields.map((f) => f.raw)), changed }
}

/** The chunks from byte `from` on. */
const tail = (chunks: ReadonlyArray<Uint8Array>, from: number): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let skip = from
  for (const c of chunks) {
    if (skip >= c.byteLength) {
      skip -= c.byteLength
      continue
    }
    out.push(skip === 0 ? c : c.subarray(skip))
    skip = 0
  }
  return out
}

/**
 * The body with its header block replaced by the result of `ops`; the same body when nothing
 * changed. The old body is released once the new one exists.
 */
export const rewrite = (body: SpooledBody, ops: ReadonlyArray<HeaderOp>, limit = defaultLimit): Effect.Effect<SpooledBody, SpoolError> =>
  Effect.gen(function*() {
    if (ops.length === 0) return body
    const block = yield* read(body, limit)
    const { bytes, changed } = apply(block, ops)
    if (!changed) return body
    const size = body.size - block.end + bytes.byteLength
    if (body._tag === "InMemory") {
      // The memory budget keeps counting the original chunks it accounted for; the new header
      // bytes are a few hundred bytes more, for as long as the body lives.
      return { ...body, size, chunks: [bytes, ...tail(body.chunks, block.end)] }
    }
    const copy = yield* copied(bytes, body.path, block.end, size)
    yield* body.release
    return copy
  })

const crlf = Buffer.from("\r\n")

/**
 * The message with its header block edited by `ops` and all that follows it replaced by
 * `replacement` (a new body, spooled: a milter's replace body): the fields, the empty line, the
 * new body. The old body is released, and so is a spilled replacement once copied after the
 * fields; an in-memory replacement is adopted (the new message's `release` is its release).
 */
export const replaceBody = (
  body: SpooledBody,
  ops: ReadonlyArray<HeaderOp>,
  replacement: SpooledBody,
  limit = defaultLimit
): Effect.Effect<SpooledBody, SpoolError> =>
  Effect.gen(function*() {
    const block = yield* read(body, limit)
    const head = Buffer.concat([apply(block, ops).bytes, crlf])
    const size = head.byteLength + replacement.size
    if (replacement._tag === "InMemory") {
      yield* body.release
      // As in `rewrite`: the header bytes are not counted against the memory budget.
      return { _tag: "InMemory", size, chunks: [head, ...replacement.chunks], release: replacement.release } satisfies SpooledBody
    }
    const copy = yield* copied(head, replacement.path, 0, size)
    yield* Effect.andThen(body.release, replacement.release)
    return copy
  })

/** A new spool file next to `source`: `head`, then `source` from byte `start` on (one streaming copy). */
const copied = (head: Uint8Array, source: string, start: number, size: number): Effect.Effect<SpooledBody, SpoolError> => {
  const path = source.replace(/(\.\d+)?\.spool$/, "") + `.${Date.now() % 1_000_000}.spool`
  const remove = Effect.promise(() => unlink(path).catch(() => undefined))
  return Effect.tryPromise({
    try: () =>
      pipeline(
        (async function*() {
          yield head
          yield* createReadStream(source, { start, highWaterMark: 256 * 1024 })
        })(),
        createWriteStream(path, { flags: "wx", mode: 0o600 })
      ),
    catch: storageFailed(`rewriting ${source}`)
  }).pipe(
    Effect.tapError(() => remove),
    Effect.as({ _tag: "File", size, path, release: remove } satisfies SpooledBody)
  )
}
