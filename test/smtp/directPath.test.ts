/**
 * Which DATA path a transaction takes (smtp/Session.ts), asked of the session's DATA handler
 * directly: the direct path answers with a `Pending` (answered from callbacks), the general path
 * with an Effect. The standalone server's delivery always has a route table, so `SyncDelivery`
 * always gives a priority; a check that required there be none sent every message of `serve`
 * down the general path (docs/benchmark.md, issue 20: the direct path was never taken there). A
 * priority decided at once keeps the direct path, and the message is committed with it; one that
 * needs an effect, tracing on, or a recipient on a sync-ack route takes the general path.
 */
import { PassThrough } from "node:stream"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Option, Ref, References } from "effect"
import type { SMTPServerSession } from "smtp-server"
import * as Relay from "../../src/policy/Relay.ts"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import { Pending } from "../../src/smtp/internal/bridge.ts"
import * as ListenerOptions from "../../src/smtp/ListenerOptions.ts"
import * as Session from "../../src/smtp/Session.ts"
import { SyncDelivery } from "../../src/smtp/SyncDelivery.ts"
import * as Spool from "../../src/spool/Spool.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { TestIncoming } from "../../src/testing/index.ts"

interface Delivery {
  readonly priority: Effect.Effect<number | undefined>
  readonly syncRcpt?: string
}

/** The session's handlers over real services (memory queue, spool in a temp dir), as `serve` has them. */
const handlers = (delivery: Delivery, tracing: boolean) =>
  Effect.gen(function*() {
    const dir = yield* TestIncoming.tempDir()
    const settings = yield* Ref.make(ListenerOptions.resolve({ port: 0, name: "test" }, "mx.test"))
    const services = Layer.mergeAll(
      MemoryQueue.layer(),
      Spool.layer({ dir }),
      Telemetry.layer(),
      Relay.layer({ domains: ["example.test"] }),
      Layer.succeed(SyncDelivery, SyncDelivery.of({
        isSync: (rcpt) => rcpt === delivery.syncRcpt,
        tryNow: () => Option.none(),
        priorityOf: () => delivery.priority
      })),
      Layer.succeed(References.TracerEnabled, tracing)
    )
    const context = yield* Layer.build(services)
    const made = yield* Session.make(settings, {
      auth: { mode: "mx", tlsAvailable: false, methods: [] },
      isDraining: () => false,
      enterData: () => undefined,
      leaveData: () => undefined
    }).pipe(Effect.provideContext(context))
    return { data: made.data, queue: Context.get(context, MailQueue) }
  })

const session = (rcpts: ReadonlyArray<string>) =>
  ({
    id: "s1",
    remoteAddress: "127.0.0.1",
    clientHostname: "[127.0.0.1]",
    hostNameAppearsAs: "client.test",
    openingCommand: "EHLO",
    secure: false,
    user: undefined,
    transmissionType: "ESMTP",
    envelope: { mailFrom: { address: "a@sender.test", args: false }, rcptTo: rcpts.map((address) => ({ address, args: false })) }
  }) as unknown as SMTPServerSession

describe("the direct DATA path", () => {
  it.live("a route priority decided at once keeps the direct path; the message is committed with it", () =>
    Effect.gen(function*() {
      const { data, queue } = yield* handlers({ priority: Effect.succeed(5) }, false)
      const stream = new PassThrough()
      const answer = data(stream, session(["user@example.test"]))
      assert.instanceOf(answer, Pending)
      const pending = answer as Pending<string, unknown>
      const exit = yield* Effect.callback<Exit.Exit<string, unknown>>((resume) => {
        pending.start((e) => resume(Effect.succeed(e)), { runFork: Effect.runFork, fork: (e) => void Effect.runFork(e) })
        stream.end("Subject: direct\r\n\r\nhello\r\n")
      })
      assert.isTrue(Exit.isSuccess(exit) && /^2\.0\.0 queued as [0-9A-Z]{16}$/.test(exit.value), String(exit))
      const lease = yield* queue.claim({ owner: "test", leaseMs: 60_000 })
      assert.isTrue(Option.isSome(lease))
      const claimed = Option.getOrThrow(lease)
      assert.strictEqual(claimed.envelope.priority, 5)
      assert.deepStrictEqual(claimed.envelope.rcptTo, ["user@example.test"])
    }).pipe(Effect.scoped))

  it.live("no priority from delivery at all: the direct path", () =>
    Effect.gen(function*() {
      const { data } = yield* handlers({ priority: Effect.succeed(undefined) }, false)
      assert.instanceOf(data(new PassThrough(), session(["user@example.test"])), Pending)
    }).pipe(Effect.scoped))

  it.live("a priority that needs an effect, tracing on, or a sync-ack recipient: the general path", () =>
    Effect.gen(function*() {
      const suspends = yield* handlers({ priority: Effect.as(Effect.sleep(1), 5) }, false)
      assert.notInstanceOf(suspends.data(new PassThrough(), session(["user@example.test"])), Pending)
      const traced = yield* handlers({ priority: Effect.succeed(5) }, true)
      assert.notInstanceOf(traced.data(new PassThrough(), session(["user@example.test"])), Pending)
      const sync = yield* handlers({ priority: Effect.succeed(undefined), syncRcpt: "user@example.test" }, false)
      assert.notInstanceOf(sync.data(new PassThrough(), session(["user@example.test"])), Pending)
    }).pipe(Effect.scoped))
})
