/**
 * A bounce survives a crash right after its recipient was dead-lettered: a child process over a
 * SQLite queue (test/support/bounceCrashChild.ts) SIGKILLs itself the instant the settle that
 * records the dead letter returns. The bounce was committed in that settle's transaction, so
 * after the crash it is in the queue, and a restarted dispatcher delivers it — once.
 */
import { spawn } from "node:child_process"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Queue, Stream } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as Dispatcher from "../../src/delivery/Dispatcher.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import * as SqliteQueue from "../../src/queue/SqliteQueue.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { TestIncoming } from "../../src/testing/index.ts"

const child = new URL("../support/bounceCrashChild.ts", import.meta.url).pathname

const run = (dataDir: string) =>
  Effect.callback<{ readonly code: number | null; readonly signal: NodeJS.Signals | null; readonly stderr: string }>((resume) => {
    const p = spawn(process.execPath, [child, dataDir], { stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    p.on("exit", (code, signal) => resume(Effect.succeed({ code, signal, stderr })))
  })

describe("bounces and crashes", () => {
  it.live("SIGKILL right after the dead letter is recorded: the bounce is in the queue, and is delivered once", () =>
    Effect.gen(function*() {
      const dataDir = yield* TestIncoming.tempDir("incoming-bounce-crash-")
      const exit = yield* run(dataDir)
      assert.strictEqual(exit.signal, "SIGKILL", `the child died by its own SIGKILL after the settle (code ${exit.code}): ${exit.stderr}`)

      const inbox = yield* Queue.unbounded<{ readonly from: string; readonly rcpt: string; readonly text: string }>()
      const capture = Layer.succeed(DA.DeliveryAdapter, DA.DeliveryAdapter.of({
        name: "capture",
        deliversOffSite: () => false,
        deliver: (d) =>
          Effect.gen(function*() {
            const text = Buffer.from(yield* Effect.orDie(Stream.mkUint8Array(d.body))).toString("utf8")
            for (const r of d.recipients) yield* Queue.offer(inbox, { from: d.envelope.mailFrom, rcpt: r.rcpt, text })
            return d.recipients.map((r) => DA.ok(r.rcpt, "250 ok"))
          })
      }))
      const queue = SqliteQueue.layer({ dataDir })
      // After the crash, before any delivery: the dead original and its bounce, both recorded.
      const stored = yield* Effect.gen(function*() {
        return yield* (yield* QueueAdmin).list({ state: "all" })
      }).pipe(Effect.provide(queue), Effect.scoped)
      const original = stored.find((m) => m.envelope.mailFrom === "sender@us.test")
      const bounce = stored.find((m) => m.envelope.mailFrom === "")
      assert.deepStrictEqual(original?.recipients.map((r) => [r.rcpt, r.state]), [["gone@dest.test", "dead"]])
      assert.isDefined(bounce, "the bounce was committed with the dead letter")
      assert.deepStrictEqual(bounce!.envelope.rcptTo, ["sender@us.test"])

      // Restarted: the bounce is delivered to the sender, and nothing is bounced twice.
      yield* Effect.gen(function*() {
        const ctx = yield* Layer.build(Dispatcher.layer({
          workers: 1,
          idlePollMs: 50,
          bounces: { reportingMta: "mx.us.test", localDomains: ["us.test"] }
        }).pipe(Layer.provideMerge(Layer.mergeAll(queue, Telemetry.layer(), capture))))
        const got = yield* Queue.take(inbox).pipe(Effect.timeout("10 seconds"))
        assert.deepStrictEqual([got.from, got.rcpt], ["", "sender@us.test"])
        assert.include(got.text, "Final-Recipient: rfc822; gone@dest.test\r\nAction: failed\r\nStatus: 5.1.1")
        yield* Effect.sleep("300 millis")
        assert.strictEqual(yield* Queue.size(inbox), 0, "one bounce only")
        const left = yield* Context.get(ctx, QueueAdmin).list({ state: "all" })
        assert.deepStrictEqual(left.map((m) => m.envelope.mailFrom), ["sender@us.test"], "the bounce left the queue; the dead original stays")
      }).pipe(Effect.scoped)
    }), 30_000)
})
