/**
 * The header block of a spooled message: parsing (folded fields, the end of the block, a block
 * cut by the read limit), the milter-style edits (remove by name, occurrence or authserv-id;
 * change; insert; append) applied to in-memory and spilled bodies, every byte after the block
 * kept, and the body stream read afresh on each run.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as MessageEdit from "../../src/policy/MessageEdit.ts"
import * as HeaderBlock from "../../src/spool/HeaderBlock.ts"
import type { SpooledBody } from "../../src/spool/SpooledBody.ts"

const head = "Authentication-Results: mx.test; spf=pass\r\n" +
  "Subject: a folded\r\n subject\r\n" +
  "Authentication-Results: (c) \"MX.TEST\"; dkim=pass\r\n" +
  "X-Tag: one\r\n" +
  "Authentication-Results: other.test; dmarc=pass\r\n" +
  "X-Tag: two\r\n"
const rest = "\r\nbody line 1\r\nAuthentication-Results: mx.test; not a header, body text\r\n"
const msg = head + rest

const inMemory = (text: string): SpooledBody => {
  const buf = Buffer.from(text)
  // Split into small chunks: the block must be found across chunk boundaries.
  const chunks: Array<Uint8Array> = []
  for (let i = 0; i < buf.length; i += 7) chunks.push(buf.subarray(i, i + 7))
  return { _tag: "InMemory", size: buf.length, chunks, release: Effect.void }
}

// Spool files of the bodies below, removed when the file's tests are done.
const dirs: Array<string> = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

const onDisk = (text: string): SpooledBody => {
  const dir = mkdtempSync(join(tmpdir(), "hb-"))
  dirs.push(dir)
  const path = join(dir, "m.spool")
  writeFileSync(path, text)
  return { _tag: "File", size: Buffer.byteLength(text), path, release: Effect.void }
}

const text = (body: SpooledBody) => Effect.map(Stream.mkUint8Array(HeaderBlock.stream(body)), (b) => Buffer.from(b).toString())

describe("HeaderBlock", () => {
  it("parses fields in order, unfolded, and ends at the empty line", () => {
    const block = HeaderBlock.parse(Buffer.from(msg))
    assert.deepStrictEqual(block.fields.map((f) => [f.name, f.value]), [
      ["Authentication-Results", "mx.test; spf=pass"],
      ["Subject", "a folded subject"],
      ["Authentication-Results", "(c) \"MX.TEST\"; dkim=pass"],
      ["X-Tag", "one"],
      ["Authentication-Results", "other.test; dmarc=pass"],
      ["X-Tag", "two"]
    ])
    assert.strictEqual(block.end, Buffer.byteLength(head))
    // Cut inside the block (not the whole message): the last field may go on, so it is left out.
    const cut = HeaderBlock.parse(Buffer.from(head.slice(0, head.indexOf("X-Tag: two") + 12)), false)
    assert.strictEqual(cut.fields.at(-1)?.name, "Authentication-Results")
    // A line that is not a field ends the block.
    assert.strictEqual(HeaderBlock.parse(Buffer.from("A: 1\r\nnot a field\r\n\r\n")).fields.length, 1)
  })

  for (const [kind, make] of [["in memory", inMemory], ["spilled to a file", onDisk]] as const) {
    it.effect(`edits the block of a body ${kind}, keeping every byte after it`, () =>
      Effect.gen(function*() {
        const body = make(msg)
        const edited = yield* HeaderBlock.rewrite(body, [
          { _tag: "RemoveHeader", name: "authentication-results", authservId: "mx.test" },
          { _tag: "ChangeHeader", name: "x-tag", occurrence: 2, value: "changed" },
          { _tag: "InsertHeader", index: 0, name: "X-First", value: "first" },
          { _tag: "AppendHeader", name: "X-Last", value: "multi\nline" },
          { _tag: "RemoveHeader", name: "X-Tag", occurrence: 1 }
        ])
        const out = yield* text(edited)
        assert.strictEqual(
          out,
          "X-First: first\r\n" +
            "Subject: a folded\r\n subject\r\n" +
            "Authentication-Results: other.test; dmarc=pass\r\n" +
            "X-Tag: changed\r\n" +
            "X-Last: multi\r\n\tline\r\n" + rest
        )
        assert.strictEqual(edited.size, Buffer.byteLength(out))
        if (body._tag === "File" && edited._tag === "File") {
          assert.notStrictEqual(edited.path, body.path)
          assert.strictEqual(readFileSync(edited.path, "utf8"), out)
        }
        // Nothing to change: the same body, not a copy.
        assert.strictEqual(yield* HeaderBlock.rewrite(body, [{ _tag: "RemoveHeader", name: "X-None" }]), body)
      }))
  }

  it.effect("the stream reads the spool file afresh on each run; a vanished file is a SpoolError", () =>
    Effect.gen(function*() {
      const body = onDisk(msg)
      assert.strictEqual(yield* text(body), msg)
      assert.strictEqual(yield* text(body), msg)
      if (body._tag !== "File") return
      yield* Effect.promise(() => import("node:fs/promises").then((fs) => fs.unlink(body.path)))
      assert.isFalse(existsSync(body.path))
      const error = yield* Effect.flip(text(body))
      assert.strictEqual(error._tag, "SpoolError")
    }))

  it("MessageEdit.plan: A-R first and on top, removal of our id first, invalid names dropped, first quarantine wins", () => {
    const plan = MessageEdit.plan([
      { rule: "r1", edit: MessageEdit.prependHeader("X-Spam-Score", "1.5") },
      { rule: "r1", edit: MessageEdit.prependHeader("Bad Name", "x") },
      { rule: "spf", edit: MessageEdit.authResults([{ method: "spf", result: "pass", properties: { "smtp.mailfrom": "a@b.test" } }]) },
      { rule: "dmarc", edit: MessageEdit.quarantine("first") },
      { rule: "rspamd", edit: MessageEdit.quarantine("second") },
      { rule: "r2", edit: MessageEdit.annotate("score", { value: 1.5 }) },
      { rule: "r2", edit: MessageEdit.removeHeader("X-Spam-Flag") }
    ], "mx.test")
    assert.strictEqual(plan.prepend, "Authentication-Results: mx.test;\r\n\tspf=pass smtp.mailfrom=a@b.test\r\nX-Spam-Score: 1.5\r\n")
    assert.deepStrictEqual(plan.headerOps, [
      { _tag: "RemoveHeader", name: "Authentication-Results", authservId: "mx.test" },
      { _tag: "RemoveHeader", name: "X-Spam-Flag" }
    ])
    assert.deepStrictEqual(plan.quarantine, { rule: "dmarc", reason: "first" })
    assert.deepStrictEqual(plan.annotations, { score: { value: 1.5 } })
    // No results: no header, nothing removed.
    assert.deepStrictEqual(MessageEdit.plan([], "mx.test").headerOps, [])
  })
})
