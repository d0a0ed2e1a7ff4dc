/**
 * `SpooledBody.detached`: the bytes of a received body in an ArrayBuffer of their own, whatever
 * larger buffers the chunks were views of (a body posted to the SQLite writer thread is cloned
 * with its whole backing buffer).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { detached } from "../../src/spool/SpooledBody.ts"

describe("SpooledBody.detached", () => {
  it("copies the chunks in order into a buffer that owns exactly their bytes", () => {
    // Small Buffer.from / concat results are slices of Buffer's shared pool.
    const a = Buffer.from("Subject: x\r\n\r\n")
    const b = Buffer.concat([Buffer.from("hello "), Buffer.from("world\r\n")])
    assert.isAbove(b.buffer.byteLength, b.byteLength, "the input is a view into a larger buffer")
    const out = detached({ _tag: "InMemory", size: a.byteLength + b.byteLength, chunks: [a, b], release: Effect.void })
    assert.strictEqual(out.toString(), "Subject: x\r\n\r\nhello world\r\n")
    assert.strictEqual(out.buffer.byteLength, out.byteLength)
    assert.strictEqual(out.byteOffset, 0)
  })
})
