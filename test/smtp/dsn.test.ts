/**
 * RFC 3461 over a real socket: `DSN` in EHLO, RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT checked
 * (501 5.5.4 for a bad value, xtext decoded), and kept with the message: in the envelope the
 * delivery adapter gets, and in the stored row of the SQLite queue (read back through the queue,
 * not from memory). Before this, DSN was not advertised and its parameters were refused with
 * 555 5.5.4.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import type { Envelope } from "../../src/protocol/Envelope.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import { Captured, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { deliverVia, sendVia } from "./helpers.ts"

const commands = [
  ["MAIL FROM:<a@sender.test> RET=HDRS ENVID=QQ314159+2Bx", 250, "2.1.0"],
  ["RCPT TO:<one@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;One+40example.test", 250, "2.1.5"],
  ["RCPT TO:<two@example.test> NOTIFY=NEVER", 250, "2.1.5"],
  ["RCPT TO:<three@example.test>", 250, "2.1.5"]
] as const

const expected: Pick<Envelope, "dsn" | "recipientDsn"> = {
  dsn: { ret: "HDRS", envid: "QQ314159+x" },
  recipientDsn: {
    "one@example.test": { notify: ["SUCCESS", "FAILURE"], orcpt: { type: "rfc822", address: "One@example.test" } },
    "two@example.test": { notify: ["NEVER"] }
  }
}

describe("DSN (RFC 3461)", () => {
  layer(TestIncoming.layer(), { excludeTestServices: true })((it) => {
    it.effect("DSN is advertised; bad values are 501 5.5.4 naming the parameter", () =>
      Effect.gen(function*() {
        const c = yield* SmtpClient.connect({ port: yield* TestIncoming.port })
        const caps = yield* c.command("EHLO client.test")
        assert.include(caps.lines.map((l) => l.slice(4)), "DSN")
        const refused = (rows: ReadonlyArray<readonly [line: string, parameter: string]>) =>
          Effect.forEach(rows, ([line, parameter]) =>
            Effect.map(c.command(line), (r) => {
              assert.strictEqual(`${r.code} ${r.text.slice(0, 5)}`, "501 5.5.4", line)
              assert.include(r.text, parameter, line)
            }), { discard: true })
        yield* refused([
          ["MAIL FROM:<a@sender.test> RET=ALL", "RET"],
          ["MAIL FROM:<a@sender.test> ENVID=not+xtext", "ENVID"],
          ["MAIL FROM:<a@sender.test> ENVID=ab+0D+0Acd", "ENVID"],
          ["MAIL FROM:<a@sender.test> RET=FULL RET=HDRS", "RET"]
        ])
        assert.strictEqual((yield* c.command("MAIL FROM:<a@sender.test> RET=FULL")).code, 250)
        yield* refused([
          ["RCPT TO:<u@example.test> NOTIFY=NEVER,DELAY", "NOTIFY"],
          ["RCPT TO:<u@example.test> NOTIFY=ALWAYS", "NOTIFY"],
          ["RCPT TO:<u@example.test> ORCPT=u@example.test", "ORCPT"],
          ["RCPT TO:<u@example.test> ORCPT=rfc822;bad+xx", "ORCPT"]
        ])
      }))

    it.effect("the parameters reach the delivery adapter with the envelope, decoded", () =>
      Effect.gen(function*() {
        const msg = yield* deliverVia(yield* TestIncoming.port, commands, "dsn")
        assert.deepStrictEqual(msg.envelope.dsn, expected.dsn)
        assert.deepStrictEqual(msg.envelope.recipientDsn, expected.recipientDsn)
      }))

    it.effect("a transaction without DSN parameters has none in its envelope", () =>
      Effect.gen(function*() {
        const msg = yield* deliverVia(yield* TestIncoming.port, [["MAIL FROM:<a@sender.test>", 250, "2.1.0"], ["RCPT TO:<u@example.test>", 250, "2.1.5"]], "plain")
        assert.isFalse("dsn" in msg.envelope)
        assert.isFalse("recipientDsn" in msg.envelope)
      }))
  })

  layer(TestIncoming.layer({ queue: { kind: "sqlite" } }), { excludeTestServices: true })((it) => {
    it.effect("the SQLite queue stores them: the row read back carries the same values", () =>
      Effect.gen(function*() {
        // Keep the message queued: every recipient is retried.
        yield* Captured.use((c) => c.setDecision((d) => Effect.succeed(DA.all(d, (rcpt) => DA.retry(rcpt, "later")))))
        // Committed before the 250: the row is there to read.
        const id = yield* sendVia(yield* TestIncoming.port, commands, "dsn stored")
        const stored = yield* QueueAdmin.use((q) => q.get(id))
        assert.isTrue(Option.isSome(stored))
        const envelope = Option.getOrThrow(stored).envelope
        assert.deepStrictEqual(envelope.dsn, expected.dsn)
        assert.deepStrictEqual(envelope.recipientDsn, expected.recipientDsn)
      }))
  })
})
