/**
 * End-to-end smoke: a message sent with nodemailer over a real socket is queued and delivered
 * to the capturing adapter with a Received header.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import nodemailer from "nodemailer"
import { Captured, TestIncoming } from "../src/testing/index.ts"

describe("smoke", () => {
  layer(TestIncoming.layer(), { excludeTestServices: true })((it) => {
    it.effect("delivers a message sent by nodemailer", () =>
      Effect.gen(function*() {
        const port = yield* TestIncoming.port
        const transport = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true })
        const info = yield* Effect.promise(() =>
          transport.sendMail({ from: "a@sender.test", to: "user@example.test", subject: "hi", text: "hello" })
        )
        assert.match(info.response, /^250 2\.0\.0 queued as [0-9A-Z]{16}$/)
        const [msg] = yield* Captured.use((c) => c.awaitDelivered(1))
        assert.deepStrictEqual(msg!.envelope.rcptTo, ["user@example.test"])
        assert.match(msg!.text, /^Received: from /)
        assert.include(msg!.text, "hello")
      }))
  })
})
