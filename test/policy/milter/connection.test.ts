/**
 * One milter connection (src/policy/milter/Connection.ts) against the scripted filter, below the
 * rule: the answer to end of message written in several packets by a filter that leaves Nagle's
 * algorithm on (as libmilter does) comes back in one round trip, not after our kernel's delayed
 * ACK (40 ms at least on Linux) — we send the end-of-message macros again on the first
 * modification, which carries the ACK. Replies split at every byte reach us whole; a replaced
 * body's chunks are handed over as they arrive, in order, and never collected.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Codec from "../../../src/policy/milter/Codec.ts"
import * as Connection from "../../../src/policy/milter/Connection.ts"
import * as Scripted from "../../support/scriptedMilter.ts"

const addressOf = (m: Scripted.ScriptedMilter) => {
  const a = Connection.parseAddress(m.address)
  assert.ok(typeof a !== "string")
  return a
}

const eom = [Codec.macros(Codec.Command.EndOfMessage, [["i", "Q1"]]), Codec.endOfMessage()]

describe("milter connection", () => {
  it.live("a multi-packet answer to end of message takes one round trip, not a delayed ACK", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        on: (p) => (p.command === "E" ? [Scripted.reply.insertHeader(0, "X-A", "b".repeat(400)), Scripted.reply.addHeader("X-B", "c"), Scripted.reply.continue] : undefined)
      })
      const conn = yield* Connection.open(addressOf(m), 5_000)
      const times: Array<number> = []
      for (let i = 0; i < 15; i++) {
        const t0 = performance.now()
        const answer = yield* conn.ask(eom, true)
        times.push(performance.now() - t0)
        assert.strictEqual(answer.reply._tag, "Continue")
        assert.deepStrictEqual(answer.modifications.map((x) => x._tag), ["InsertHeader", "AddHeader"])
      }
      times.sort((a, b) => a - b)
      // Without the nudge every ask waits for the delayed ACK: 40 ms at the very least.
      assert.isBelow(times[7]!, 40, `median ${times[7]!.toFixed(1)} ms; all: ${times.map((t) => t.toFixed(1)).join(" ")}`)
      // What the filter saw: each end of message, then our macros again (a no-op for it).
      const after = m.connections[0]!.slice(1).map((p) => (p.command === "D" ? `D${p.data.toString("latin1", 0, 1)}` : p.command))
      assert.deepStrictEqual(after.slice(0, 3), ["DE", "E", "DE"])
      assert.ok(after.filter((c) => c === "DE").length >= 16)
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("replies written one byte at a time are read whole", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        byteByByte: true,
        on: (p) => (p.command === "E" ? [Scripted.reply.changeHeader(1, "Subject", "new"), Scripted.reply.code("554 5.7.1 no thanks")] : undefined)
      })
      const conn = yield* Connection.open(addressOf(m), 5_000)
      assert.strictEqual(conn.negotiated.version, 6)
      assert.deepStrictEqual((yield* conn.ask([Codec.helo("client.test")])).reply, { _tag: "Continue" })
      const answer = yield* conn.ask(eom, true)
      assert.deepStrictEqual(answer, {
        reply: { _tag: "ReplyCode", code: 554, text: "554 5.7.1 no thanks" },
        modifications: [{ _tag: "ChangeHeader", index: 1, name: "Subject", value: "new" }]
      })
    }).pipe(Effect.scoped), { timeout: 60_000 })

  it.live("replace-body chunks go to the body sink as they arrive (one byte per segment), the other modifications are collected", () =>
    Effect.gen(function*() {
      const m = yield* Scripted.start({
        actions: Scripted.allActions,
        byteByByte: true,
        on: (p) =>
          p.command === "E"
            ? [Scripted.reply.replaceBody("first\r\n"), Scripted.reply.deleteRecipient("a@x.test"), Scripted.reply.replaceBody("second\r\n"), Scripted.reply.continue]
            : undefined
      })
      const conn = yield* Connection.open(addressOf(m), 5_000)
      assert.strictEqual(conn.negotiated.actions & Scripted.allActions, Connection.offeredActions)
      const chunks: Array<string> = []
      const answer = yield* conn.ask(eom, true, (chunk) => Effect.sync(() => void chunks.push(Buffer.from(chunk).toString())))
      assert.deepStrictEqual(chunks, ["first\r\n", "second\r\n"])
      assert.deepStrictEqual(answer, { reply: { _tag: "Continue" }, modifications: [{ _tag: "DeleteRecipient", recipient: "a@x.test" }] })
    }).pipe(Effect.scoped), { timeout: 60_000 })
})
