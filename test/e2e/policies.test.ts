/**
 * Policy rules through the whole server: an enforcing rule's refusal is the reply the client
 * sees; an observe-mode rule only records what it would have done (a PolicyVerdict event) and
 * the mail goes through; the sliding-window rate limiter defers the client past its rate.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type * as Policy from "../../src/policy/Policy.ts"
import * as RateLimiter from "../../src/policy/rules/RateLimiter.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"

const noSpammers = (observe: boolean): Policy.Rule => ({
  name: "no-spammers",
  observe,
  onMailFrom: (ctx) =>
    Effect.succeed(
      ctx.mailFrom.endsWith("@spam.test") ? Verdict.reject(SmtpReply.make(550, "5.7.1", "Sender refused by policy")) : Verdict.Continue
    )
})

const send = (port: number, from: string) =>
  SmtpClient.send({ port, from, to: ["u@example.test"], data: "Subject: p\r\n\r\nx\r\n" })

describe("policies through the server", () => {
  it.live("an enforcing rule refuses with its reply; in observe mode it records and lets the mail through", () =>
    Effect.gen(function*() {
      for (const observe of [false, true]) {
        const ctx = yield* Layer.build(TestIncoming.layer({ policies: { rules: [noSpammers(observe)] } }))
        const port = Context.get(ctx, Listeners).all[0]!.port
        const sub = yield* Context.get(ctx, Telemetry.Telemetry).subscribe
        const reply = yield* send(port, "bad@spam.test")
        const verdict = yield* Telemetry.awaitEvent(sub, (e): e is Extract<Telemetry.TelemetryEvent, { _tag: "PolicyVerdict" }> =>
          e._tag === "PolicyVerdict" && e.verdict === "Reject")
        assert.strictEqual(verdict.rule, "no-spammers")
        assert.strictEqual(verdict.mode, observe ? "observe" : "enforce")
        if (observe) {
          assert.strictEqual(reply.code, 250, "observe mode lets the mail through")
        } else {
          assert.deepStrictEqual([reply.code, reply.text], [550, "5.7.1 Sender refused by policy"])
        }
        assert.strictEqual((yield* send(port, "good@friend.test")).code, 250)
      }
    }))

  it.live("the rate limiter defers a client past its rate with 450 4.7.1", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ rate: 3, window: "1 minute", dimensions: { ip: true, sender: false, recipientDomain: false } })
      const ctx = yield* Layer.build(TestIncoming.layer({ policies: { rules: [limiter.rule] } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      const codes: Array<number> = []
      for (let i = 0; i < 5; i++) codes.push((yield* send(port, `s${i}@friend.test`)).code)
      assert.deepStrictEqual(codes, [250, 250, 250, 450, 450])
    }))
})
