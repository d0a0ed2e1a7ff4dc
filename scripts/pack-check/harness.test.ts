// The README's test against a real listener, run by vitest inside the fresh app (`npm run
// test:pack`) from the installed `incoming-smtp/testing`.
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { Captured, SmtpClient, TestIncoming } from "incoming-smtp/testing"

layer(TestIncoming.layer({ domains: ["example.test"] }), { excludeTestServices: true })((it) => {
  it.effect("accepts and delivers", () =>
    Effect.gen(function*() {
      const port = yield* TestIncoming.port
      const reply = yield* SmtpClient.send({ port, from: "a@b.test", to: ["user@example.test"], data: "Subject: x\r\n\r\nhi" })
      assert.strictEqual(reply.code, 250)
      const [message] = yield* Captured.use((c) => c.awaitDelivered(1))
      assert.include(message!.text, "hi")
    }))
})
