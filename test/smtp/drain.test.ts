/**
 * The listeners' drain over real sockets: its deadline runs on the `Clock` (TestClock moves it),
 * and the work a closing connection starts (the policy `close` hooks) belongs to the listeners'
 * scope, so the drain waits for it instead of returning while it still runs.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Logger, Scope } from "effect"
import { TestClock } from "effect/testing"
import type * as Policy from "../../src/policy/Policy.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"

/** A logger that completes `signal` at the first line containing `text`. */
const watchFor = (text: string, signal: Deferred.Deferred<void>) =>
  Logger.layer([
    Logger.make<unknown, void>(({ message }) => {
      const line = Array.isArray(message) ? message.join(" ") : String(message)
      if (line.includes(text)) Deferred.doneUnsafe(signal, Exit.void)
    })
  ], { mergeWithExisting: true })

describe("listener drain", () => {
  it.effect("the drain deadline runs on the Clock: DATA in flight holds it until TestClock reaches drainTimeoutMs, then 421", () =>
    Effect.gen(function*() {
      const draining = yield* Deferred.make<void>()
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(
        TestIncoming.layer({ drainTimeoutMs: 10_000 }).pipe(Layer.provide(watchFor("draining 1 DATA transaction", draining))),
        scope
      )
      const port = Context.get(ctx, Listeners).all[0]!.port
      const client = yield* SmtpClient.connect({ port })
      assert.strictEqual((yield* client.command("EHLO held.test")).code, 250)
      assert.strictEqual((yield* client.command("MAIL FROM:<a@remote.test>")).code, 250)
      assert.strictEqual((yield* client.command("RCPT TO:<u@example.test>")).code, 250)
      assert.strictEqual((yield* client.command("DATA")).code, 354)
      yield* client.write("Subject: held\r\n\r\nfirst half, and the rest never comes\r\n")

      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* Deferred.await(draining)
      yield* TestClock.adjust("9999 millis")
      assert.isUndefined(closing.pollUnsafe(), "before its deadline the drain waits for the transaction")
      yield* TestClock.adjust("1 millis")
      const reply = yield* client.read
      assert.strictEqual(reply.code, 421, "at the deadline the transaction is interrupted and the client told to come back")
      yield* Fiber.join(closing)
      yield* client.closed
    }))

  it.live("the drain waits for the policy close hooks of the connections it closes", () =>
    Effect.gen(function*() {
      const closedSessions: Array<string> = []
      const slowClose: Policy.Rule = {
        name: "slow-close",
        onClose: (ctx) => Effect.sleep("100 millis").pipe(Effect.andThen(Effect.sync(() => closedSessions.push(ctx.sessionId))))
      }
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(TestIncoming.layer({ policies: { rules: [slowClose] } }), scope)
      const port = Context.get(ctx, Listeners).all[0]!.port
      const idle = yield* SmtpClient.connect({ port })
      assert.strictEqual((yield* idle.command("EHLO idle.test")).code, 250)

      yield* Scope.close(scope, Exit.void)
      assert.lengthOf(closedSessions, 1, "the idle connection's close hook finished before the drain returned")
      yield* idle.closed
    }))
})
