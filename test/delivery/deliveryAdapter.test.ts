/**
 * The delivery contract's own pieces: the body is a Stream that reads the stored message afresh
 * on every run and fails with `MailQueueError` when it cannot; `DeliveryError`'s reasons say
 * whether a failure is permanent and which reply it is; an Effect handler may leave a body read
 * failure in its error channel; and the DATA encoding (dot-stuffing, CRLF) applied while the
 * body streams holds across chunk edges.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as EffectAdapter from "../../src/delivery/EffectAdapter.ts"
import { dotStuffed } from "../../src/delivery/internal/dotStuff.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"
import { envelope } from "../support/fixtures.ts"

const text = <E>(body: Stream.Stream<Uint8Array, E>) => Stream.mkString(Stream.decodeText(body))

describe("DeliveryAdapter", () => {
  it.effect("the body reads the stored message afresh on every run", () =>
    Effect.gen(function*() {
      let opened = 0
      const body = DA.bodyStream(() => {
        opened++
        return BodyStream.fromParts("Received: x\r\n", [Buffer.from("Subject: s\r\n\r\n"), Buffer.from("hi\r\n")])
      })
      const first = yield* text(body)
      const second = yield* text(body)
      assert.strictEqual(first, "Received: x\r\nSubject: s\r\n\r\nhi\r\n")
      assert.strictEqual(second, first)
      assert.strictEqual(opened, 2)
    }))

  it.effect("a body whose spool file is gone fails with MailQueueError (StorageFailed)", () =>
    Effect.gen(function*() {
      const error = yield* text(DA.bodyStream(() => BodyStream.fromFile("Received: x\r\n", "/nonexistent/incoming/spool"))).pipe(Effect.flip)
      assert.strictEqual(error._tag, "MailQueueError")
      assert.strictEqual(error.reason._tag, "StorageFailed")
      assert.include(error.message, "ENOENT")
    }))

  it("DeliveryError: Rejected is permanent with a 5xx; Timeout, Refused and Failed are retried with a 4xx", () => {
    const rejected = new DA.DeliveryError({ reason: { _tag: "Rejected", reply: "550 5.1.1 no such user" } })
    assert.deepStrictEqual([rejected.retryable, rejected.message], [false, "550 5.1.1 no such user"])
    assert.deepStrictEqual(rejected.reply, SmtpReply.make(550, "5.1.1", "no such user"))
    const timeout = new DA.DeliveryError({ reason: { _tag: "Timeout", detail: "no answer within 300 ms" } })
    assert.deepStrictEqual([timeout.retryable, timeout.message, timeout.reply], [true, "no answer within 300 ms", SmtpReply.timeout])
    const refused = new DA.DeliveryError({ reason: { _tag: "Refused", detail: "connect ECONNREFUSED 127.0.0.1:9" } })
    assert.deepStrictEqual([refused.retryable, refused.reply.code], [true, 451])
    const failed = new DA.DeliveryError({ reason: { _tag: "Failed", detail: "450 4.2.0 mailbox busy" } })
    assert.deepStrictEqual([failed.retryable, failed.reply], [true, SmtpReply.make(450, "4.2.0", "mailbox busy")])
  })

  it.effect("an Effect handler that cannot read the body fails with a retried DeliveryError", () =>
    Effect.gen(function*() {
      const adapter = yield* EffectAdapter.make("app", (delivery) => Effect.asVoid(Stream.runDrain(delivery.body)))
      const error = yield* adapter.deliver({
        id: "01EFFECTADAPTER1",
        envelope: envelope(["a@example.test"]),
        receivedAt: 0,
        recipients: [{ rcpt: "a@example.test", attempt: 1 }],
        size: 10,
        body: DA.bodyStream(() => BodyStream.fromFile("", "/nonexistent/incoming/spool"))
      }).pipe(Effect.flip)
      assert.strictEqual(error.reason._tag, "Failed")
      assert.isTrue(error.retryable)
      assert.include(error.message, "reading message 01EFFECTADAPTER1 failed")
    }))

  it.effect("DATA encoding while the body streams: dots doubled and bare LFs made CRLF across chunk edges, then the terminator", () =>
    Effect.gen(function*() {
      const chunks = (...parts: ReadonlyArray<string>) => Stream.fromIterable(parts.map((p) => Buffer.from(p, "latin1")))
      assert.strictEqual(yield* text(dotStuffed(chunks("a\n", ".b\r", "\n.c"))), "a\r\n..b\r\n..c\r\n.\r\n")
      assert.strictEqual(yield* text(dotStuffed(chunks("x\r\n", "", ".\r\n"))), "x\r\n..\r\n.\r\n")
      assert.strictEqual(yield* text(dotStuffed(chunks())), ".\r\n")
    }))
})
