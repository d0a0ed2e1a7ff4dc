/**
 * HotPath.timeout must give what `Effect.timeout` gives: the effect's own outcome when it is in
 * time (synchronously or not), a TimeoutError with the effect interrupted when it is not, and the
 * effect interrupted with its caller.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber } from "effect"
import * as HotPath from "../../src/internal/hotPath.ts"

describe("HotPath.timeout", () => {
  it.effect("passes a synchronous success and failure through", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* HotPath.timeout(Effect.succeed(1), 50), 1)
      const failed = yield* Effect.exit(HotPath.timeout(Effect.fail("no" as const), 50))
      assert.deepStrictEqual(failed, Exit.fail("no"))
    }))

  it.live("waits for an effect that suspends and is in time", () =>
    Effect.gen(function*() {
      const value = yield* HotPath.timeout(Effect.as(Effect.sleep("5 millis"), "late"), 1_000)
      assert.strictEqual(value, "late")
    }))

  it.live("fails with a TimeoutError and interrupts the effect when it is not in time", () =>
    Effect.gen(function*() {
      const interrupted = yield* Deferred.make<void>()
      const exit = yield* Effect.exit(HotPath.timeout(Effect.never.pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))), 10))
      assert.isTrue(Exit.isFailure(exit) && exit.cause.reasons.some((r) => Cause.isFailReason(r) && Cause.isTimeoutError(r.error)))
      assert.isTrue(yield* Deferred.isDone(interrupted))
    }))

  it.live("interrupts the effect when its caller is interrupted", () =>
    Effect.gen(function*() {
      const interrupted = yield* Deferred.make<void>()
      const started = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(HotPath.timeout(
        Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))),
        60_000
      ))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(fiber)
      yield* Deferred.await(interrupted)
    }))
})
