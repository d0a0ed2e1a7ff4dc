/**
 * A new body written piece by piece into a real spool (src/spool/BodyWriter.ts) and put under a
 * message's header block (HeaderBlock.replaceBody): kept in memory while small, spilled to a
 * file past the threshold, line endings normalised, the size cap counted as bytes arrive — past
 * it the writes still complete and `end` says why — and what the spool held released: every
 * file removed and the memory budget back to zero.
 */
import { existsSync, readdirSync } from "node:fs"
import { Readable } from "node:stream"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as BodyWriter from "../../src/spool/BodyWriter.ts"
import * as HeaderBlock from "../../src/spool/HeaderBlock.ts"
import * as Spool from "../../src/spool/Spool.ts"
import type { SpooledBody } from "../../src/spool/SpooledBody.ts"
import { TestIncoming } from "../../src/testing/index.ts"

const text = (body: SpooledBody) => Effect.map(Stream.mkUint8Array(HeaderBlock.stream(body)), (b) => Buffer.from(b).toString())

const original = "Subject: s\r\nX-Old: 1\r\n\r\nold body\r\n"

const setup = Effect.gen(function*() {
  const dir = yield* TestIncoming.tempDir()
  const spool = yield* Spool.make({ dir, inMemoryThreshold: 1024 })
  const scope = yield* Effect.scope
  return {
    spool,
    writer: (id: string, maxSize = 1_000_000) => BodyWriter.make(spool, { id, maxSize, lineEndings: "normalize" }, scope),
    message: (id: string, body: string) => spool.receive(Readable.from([Buffer.from(body)]), { id, maxSize: 1_000_000, lineEndings: "reject" }),
    files: () => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".spool")) : [])
  }
})

const write = (w: BodyWriter.BodyWriter, parts: ReadonlyArray<string>) => Effect.forEach(parts, (p) => w.write(Buffer.from(p)), { discard: true })

describe("BodyWriter and HeaderBlock.replaceBody", () => {
  it.live("a small body stays in memory (bare LF normalised) and is adopted under the edited header block", () =>
    Effect.gen(function*() {
      const { files, message, spool, writer } = yield* setup
      const w = yield* writer("M1.body0")
      yield* write(w, ["new ", "body\n", "", "end\r\n"])
      const replacement = yield* w.end
      assert.strictEqual(replacement._tag, "InMemory")
      const edited = yield* HeaderBlock.replaceBody(yield* message("M1", original), [{ _tag: "AppendHeader", name: "X-New", value: "2" }], replacement)
      const expected = "Subject: s\r\nX-Old: 1\r\nX-New: 2\r\n\r\nnew body\r\nend\r\n"
      assert.strictEqual(yield* text(edited), expected)
      assert.strictEqual(edited.size, Buffer.byteLength(expected))
      assert.isAbove(yield* spool.memoryInUse, 0)
      yield* edited.release
      assert.strictEqual(yield* spool.memoryInUse, 0)
      assert.deepStrictEqual(files(), [])
    }).pipe(Effect.scoped))

  it.live("a large body spills to a file as it is written; the message under it is one new file, the others removed", () =>
    Effect.gen(function*() {
      const { files, message, spool, writer } = yield* setup
      const line = "q".repeat(98) + "\r\n"
      const w = yield* writer("M2.body0")
      yield* write(w, Array.from({ length: 200 }, () => line.repeat(10))) // 200 KB in 1 KB writes
      const replacement = yield* w.end
      assert.strictEqual(replacement._tag, "File")
      assert.strictEqual(yield* spool.memoryInUse, 0, "spilled: no memory held")
      // The message itself spilled too (over the 1 KiB threshold).
      const received = yield* message("M2", original.replace("old body", "o".repeat(2000)))
      assert.strictEqual(received._tag, "File")
      const edited = yield* HeaderBlock.replaceBody(received, [], replacement)
      assert.strictEqual(edited._tag, "File")
      assert.strictEqual(yield* text(edited), "Subject: s\r\nX-Old: 1\r\n\r\n" + line.repeat(2000))
      assert.deepStrictEqual(files().length, 1, "only the new message's file is left")
      yield* edited.release
      assert.deepStrictEqual(files(), [])
    }).pipe(Effect.scoped))

  it.live("over the size cap: the writes still complete, `end` fails with SizeExceeded, nothing is kept", () =>
    Effect.gen(function*() {
      const { files, spool, writer } = yield* setup
      const w = yield* writer("M3.body0", 5_000)
      yield* write(w, Array.from({ length: 100 }, () => "x".repeat(1000) + "\r\n"))
      const failure = yield* Effect.flip(w.end)
      assert.strictEqual(failure.reason._tag, "SizeExceeded")
      assert.strictEqual(yield* spool.memoryInUse, 0)
      // The spool removes a failed receive's file without waiting for the unlink: it goes shortly.
      for (let i = 0; i < 100 && files().length > 0; i++) yield* Effect.sleep("20 millis")
      assert.deepStrictEqual(files(), [])
    }).pipe(Effect.scoped))
})
