/**
 * The DATA line-ending scanner: bare CR / bare LF detection (reject) and repair (normalize),
 * chunk by chunk. A CR at the end of one chunk is only decided by the next one, so every test
 * also runs with the input split at every possible place.
 */
import { assert, describe, it } from "@effect/vitest"
import * as LineEndings from "../../src/spool/LineEndings.ts"

type Verdict = "ok" | "LF" | "CR"

/** Feeds `chunks` to a fresh scanner; returns the verdict (reject) and the kept bytes. */
const run = (mode: "reject" | "normalize", chunks: ReadonlyArray<string>): { verdict: Verdict; out: string } => {
  const s = LineEndings.make(mode)
  const out: Array<Buffer> = []
  for (const c of chunks) {
    const r = s.push(Buffer.from(c, "latin1"))
    if (r === "LF" || r === "CR") return { verdict: r, out: Buffer.concat(out).toString("latin1") }
    out.push(r)
  }
  const tail = s.end()
  if (tail === "CR") return { verdict: "CR", out: Buffer.concat(out).toString("latin1") }
  if (tail !== undefined) out.push(tail)
  return { verdict: "ok", out: Buffer.concat(out).toString("latin1") }
}

/** The first bare line ending of the whole input, by position (what a reader of the message sees). */
const reference = (text: string): Verdict => {
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\n" && (i === 0 || text[i - 1] !== "\r")) return "LF"
    if (text[i] === "\r" && text[i + 1] !== "\n") return "CR"
  }
  return "ok"
}

/** Every way to cut `text` into 1, 2 or 3 chunks (empty chunks included). */
const splits = (text: string): Array<Array<string>> => {
  const out: Array<Array<string>> = [[text]]
  for (let i = 0; i <= text.length; i++) {
    out.push([text.slice(0, i), text.slice(i)])
    for (let j = i; j <= text.length; j++) out.push([text.slice(0, i), text.slice(i, j), text.slice(j)])
  }
  return out
}

/** All strings over {a, CR, LF} up to `max` characters. */
const strings = (max: number): Array<string> => {
  const out = [""]
  let level = [""]
  for (let n = 1; n <= max; n++) {
    level = level.flatMap((s) => [`${s}a`, `${s}\r`, `${s}\n`])
    out.push(...level)
  }
  return out
}

describe("LineEndings: reject", () => {
  it("passes clean CRLF text through unchanged (same buffer, no copy)", () => {
    const s = LineEndings.make("reject")
    const chunk = Buffer.from("Subject: x\r\n\r\nhello\r\n")
    assert.strictEqual(s.push(chunk), chunk)
    assert.isUndefined(s.end())
  })

  it("finds a bare LF and a bare CR inside one chunk", () => {
    assert.strictEqual(run("reject", ["a\nb"]).verdict, "LF")
    assert.strictEqual(run("reject", ["a\rb"]).verdict, "CR")
    assert.strictEqual(run("reject", ["a\r\r\nb"]).verdict, "CR")
    assert.strictEqual(run("reject", ["\nb"]).verdict, "LF")
  })

  it("a CR at the end of one chunk and the LF at the start of the next is a CRLF", () => {
    assert.deepStrictEqual(run("reject", ["line one\r", "\nline two\r\n"]), { verdict: "ok", out: "line one\r\nline two\r\n" })
    // Even with empty chunks in between.
    assert.strictEqual(run("reject", ["a\r", "", "", "\nb\r\n"]).verdict, "ok")
  })

  it("a CR at the end of a chunk followed by anything else is a bare CR", () => {
    assert.strictEqual(run("reject", ["a\r", "b\r\n"]).verdict, "CR")
    assert.strictEqual(run("reject", ["a\r", "\r\n"]).verdict, "CR")
  })

  it("a CRLF split across chunks followed by a bare LF at the start of the next chunk is caught", () => {
    assert.strictEqual(run("reject", ["a\r\n", "\nb"]).verdict, "LF")
    assert.strictEqual(run("reject", ["a\r", "\n", "\n"]).verdict, "LF")
  })

  it("a CR at the very end of the stream is bare", () => {
    assert.strictEqual(run("reject", ["a\r\nb\r"]).verdict, "CR")
    assert.strictEqual(run("reject", ["a\r\n", "\r"]).verdict, "CR")
  })

  it("agrees with a whole-buffer reference for every input over {a,CR,LF} up to 6 chars, split anywhere", () => {
    let cases = 0
    for (const text of strings(6)) {
      const expected = reference(text)
      for (const chunks of splits(text)) {
        const got = run("reject", chunks)
        cases++
        if (got.verdict !== expected) {
          assert.fail(`${JSON.stringify(chunks)}: expected ${expected}, got ${got.verdict}`)
        }
        if (expected === "ok") assert.strictEqual(got.out, text)
      }
    }
    assert.isAbove(cases, 10_000)
  })
})

describe("LineEndings: normalize", () => {
  const normalized = (text: string) => text.replace(/\r\n|\r|\n/g, "\r\n")

  it("rewrites bare LF and bare CR to CRLF and leaves CRLF alone", () => {
    assert.deepStrictEqual(run("normalize", ["a\nb\rc\r\nd"]), { verdict: "ok", out: "a\r\nb\r\nc\r\nd" })
  })

  it("a CRLF split across chunks stays one CRLF", () => {
    assert.strictEqual(run("normalize", ["line one\r", "\nline two\r\n"]).out, "line one\r\nline two\r\n")
    // An empty chunk in between decides nothing.
    assert.strictEqual(run("normalize", ["a\r", "", "\nb"]).out, "a\r\nb")
  })

  it("a CR held at the end of a chunk becomes CRLF whatever follows", () => {
    assert.strictEqual(run("normalize", ["a\r", "b"]).out, "a\r\nb")
    assert.strictEqual(run("normalize", ["a\r", "\r\n"]).out, "a\r\n\r\n")
    assert.strictEqual(run("normalize", ["a\r"]).out, "a\r\n")
  })

  it("matches the reference and never leaves a bare ending, for every input up to 6 chars split anywhere", () => {
    for (const text of strings(6)) {
      const expected = normalized(text)
      for (const chunks of splits(text)) {
        const got = run("normalize", chunks)
        assert.strictEqual(got.verdict, "ok")
        if (got.out !== expected) {
          assert.fail(`${JSON.stringify(chunks)}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got.out)}`)
        }
        assert.strictEqual(reference(got.out), "ok")
      }
    }
  })
})
