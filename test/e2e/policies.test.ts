/**
 * Policy rules through the whole server: an enforcing rule's refusal is the reply the client
 * sees; an observe-mode rule only records what it would have done (a PolicyVerdict event) and
 * the mail goes through; the sliding-window rate limiter defers the client past its rate.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Stream } from "effect"
import type * as Policy from "../../src/policy/Policy.ts"
import * as RateLimiter from "../../src/policy/rules/RateLimiter.ts"
import * as MessageEdit from "../../src/policy/MessageEdit.ts"
import * as Verdict from "../../src/policy/Verdict.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import * as SmtpReply from "../../src/protocol/SmtpReply.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"

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

  it.live("DATA rules read the body and edit the message: applied in rule order, observed rules' edits only recorded", () =>
    Effect.gen(function*() {
      // Reads the whole body through the stream it is given (the spooled copy, read afresh).
      const marker: Policy.Rule = {
        name: "marker",
        onData: (ctx) =>
          Effect.gen(function*() {
            const bytes = yield* Stream.mkUint8Array(ctx.body!).pipe(Effect.orDie)
            const subject = ctx.headers?.find(([n]) => n.toLowerCase() === "subject")?.[1]
            return Verdict.continueWith([
              MessageEdit.prependHeader("X-Body-Bytes", String(bytes.byteLength)),
              MessageEdit.removeHeader("X-Secret"),
              MessageEdit.changeHeader("Subject", 1, `[checked] ${subject}`),
              MessageEdit.annotate("seen", ctx.edits?.length ?? 0),
              MessageEdit.quarantine("marked by a test")
            ])
          })
      }
      const observed: Policy.Rule = {
        name: "observed",
        observe: true,
        onData: () => Effect.succeed(Verdict.continueWith([MessageEdit.prependHeader("X-Observed", "yes")]))
      }
      const second: Policy.Rule = {
        name: "second",
        onData: (ctx) => Effect.succeed(Verdict.continueWith([MessageEdit.annotate("before-me", ctx.edits?.map((e) => e.rule) ?? [])]))
      }
      // Spill at 1 KiB: the edits must work on a body in a spool file as well as in memory.
      for (const bodyBytes of [100, 200_000]) {
        const ctx = yield* Layer.build(TestIncoming.layer({
          policies: { rules: [marker, observed, second] },
          spool: { inMemoryThreshold: 1024 }
        }))
        const port = Context.get(ctx, Listeners).all[0]!.port
        const body = "x".repeat(78) + "\r\n"
        const data = `Subject: hello\r\nX-Secret: s3cret\r\n\r\n${body.repeat(Math.ceil(bodyBytes / body.length))}`
        const reply = yield* SmtpClient.send({ port, from: "a@friend.test", to: ["u@example.test"], data })
        assert.strictEqual(reply.code, 250)
        const [m] = yield* Context.get(ctx, CapturingAdapter.Captured).awaitDelivered(1)
        assert.match(m!.text, new RegExp(`^X-Body-Bytes: ${Buffer.byteLength(data)}\r\nReceived: `))
        assert.include(m!.text, "\r\nSubject: [checked] hello\r\n\r\n")
        assert.notInclude(m!.text, "X-Secret")
        assert.notInclude(m!.text, "X-Observed", "an observed rule's edits are not applied")
        assert.deepStrictEqual(m!.envelope.quarantine, { rule: "marker", reason: "marked by a test" })
        assert.deepStrictEqual(m!.envelope.annotations, { seen: 0, "before-me": ["marker", "marker", "marker", "marker", "marker"] })
        assert.isTrue(m!.text.endsWith(body), "the body after the header block is untouched")
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
