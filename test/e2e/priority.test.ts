/**
 * Message priority end to end, on every queue backend (memory, SQLite, PostgreSQL when its server
 * answers): a real listener, nodemailer sending the bulk of the mail, and a delivery adapter slowed
 * down so that a backlog builds. Two promises of issue 24:
 * - 500 normal messages queued, then one sent with `MT-PRIORITY=9` (critical): the critical one
 *   is the next to be delivered, before all the normal mail still waiting;
 * - low-priority mail sent while normal mail keeps arriving, so that some is always waiting: each
 *   low message is delivered once it reached the ageing limit (plus what a claim takes to notice:
 *   SQLite ages rows once a second), not before; with ageing off (the control) low mail waits
 *   until the normal flow stops, and overtakes none of it.
 * "Waits past the ageing limit" is only a promise when normal mail itself does not: a message
 * that aged counts as normal, behind normal mail that arrived before it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Redacted, type Scope } from "effect"
import nodemailer from "nodemailer"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import type { QueueChoice } from "../../src/IncomingOptions.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as Pg from "../support/postgres.ts"

interface Started {
  readonly id: string
  readonly priority: number
  readonly receivedAt: number
  /** When the adapter got it (epoch ms): the end of its wait in the queue. */
  readonly at: number
}

/**
 * A delivery adapter that records what it is given, in order, waits for `gate`, then takes
 * `delayMs` per message: the slowed-down destination behind which the queue fills up.
 */
const slowAdapter = (delayMs: number, gate: Deferred.Deferred<void>) => {
  const started: Array<Started> = []
  const adapter = DA.DeliveryAdapter.of({
    name: "slow",
    deliver: (d) =>
      Effect.gen(function*() {
        started.push({ id: d.id, priority: d.envelope.priority ?? 0, receivedAt: d.receivedAt, at: Date.now() })
        yield* Deferred.await(gate)
        yield* Effect.sleep(delayMs)
        return DA.all(d, (rcpt) => DA.ok(rcpt))
      })
  })
  return { adapter, started }
}

interface Backend {
  readonly name: string
  readonly skip?: string | undefined
  readonly queue: (priorityMaxWaitMs: number) => Effect.Effect<QueueChoice, never, Scope.Scope>
}

const backends: ReadonlyArray<Backend> = [
  { name: "memory", queue: (priorityMaxWaitMs) => Effect.succeed({ kind: "memory", priorityMaxWaitMs }) },
  { name: "sqlite", queue: (priorityMaxWaitMs) => Effect.succeed({ kind: "sqlite", priorityMaxWaitMs }) },
  {
    name: "postgres",
    skip: Pg.available ? undefined : Pg.skipMessage,
    queue: (priorityMaxWaitMs) =>
      Effect.map(Pg.freshDatabase, (url): QueueChoice => ({ kind: "postgres", url: Redacted.make(url), priorityMaxWaitMs, poolSize: 4 }))
  }
]

/** A server on `queue` delivering through `adapter`, trusting loopback (so MT-PRIORITY counts). */
const server = (queue: QueueChoice, adapter: DA.DeliveryAdapter["Service"]) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(
      TestIncoming.layerWith({ queue, relay: { trustedNetworks: ["127.0.0.0/8"] } }).pipe(
        Layer.provide(Layer.succeed(DA.DeliveryAdapter, adapter))
      )
    )
    return yield* TestIncoming.port.pipe(Effect.provide(ctx))
  })

/** nodemailer over a few pooled connections, closed with the scope. */
const pooledTransport = (port: number) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true, pool: true, maxConnections: 4, maxMessages: Infinity })
    ),
    (transport) => Effect.sync(() => transport.close())
  )

/** `count` normal messages sent with nodemailer; done once all are queued. */
const sendNormal = (port: number, count: number) =>
  Effect.gen(function*() {
    const transport = yield* pooledTransport(port)
    yield* Effect.promise(() =>
      Promise.all(Array.from({ length: count }, (_, i) =>
        transport.sendMail({ from: "news@remote.test", to: "user@example.test", subject: `normal ${i}`, text: "normal" })
      ))
    )
  }).pipe(Effect.scoped)

/** One message with `MT-PRIORITY=level` from the project's transcript client; its queue id. */
const sendWithPriority = (port: number, level: number) =>
  Effect.gen(function*() {
    const reply = yield* SmtpClient.send({
      port,
      from: "ops@remote.test",
      to: ["user@example.test"],
      mailParameters: [`MT-PRIORITY=${level}`],
      data: `Subject: priority ${level}\r\n\r\nurgent\r\n`
    })
    assert.strictEqual(reply.code, 250, reply.text)
    return /queued as (\w+)/.exec(reply.text)![1]!
  })

const waitFor = (what: string, done: () => boolean, timeoutMs: number) =>
  Effect.gen(function*() {
    const until = Date.now() + timeoutMs
    while (!done()) {
      if (Date.now() > until) return assert.fail(`timed out waiting for ${what}`)
      yield* Effect.sleep(20)
    }
  })

/** Each low-priority message's wait, and how many normal ones it overtook (received before it was delivered, delivered after). */
const lowWaits = (started: ReadonlyArray<Started>) =>
  started.flatMap((s, i) =>
    s.priority < 0 ? [{ waitMs: s.at - s.receivedAt, normalAfter: started.slice(i + 1).filter((n) => n.priority === 0 && n.receivedAt < s.at).length }] : []
  )

const AGEING_MS = 2_000
/** What a claim may add to the limit: SQLite ages rows at most once a second; a delivery under way. */
const SLACK_MS = 1_500

/**
 * Normal mail kept flowing so that some is always waiting (about `BACKLOG` messages, a fraction of
 * a second's delivery), with a low-priority message every 250 ms meanwhile; the flow goes on
 * until the ageing limit and its slack have passed for the last low one. Without ageing low mail
 * would wait for the flow to stop. Returns the low messages' waits.
 */
const starvationRun = (backend: Backend, priorityMaxWaitMs: number) =>
  Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    yield* Deferred.succeed(gate, undefined)
    const slow = slowAdapter(40, gate)
    const port = yield* server(yield* backend.queue(priorityMaxWaitMs), slow.adapter)
    const transport = yield* pooledTransport(port)
    const BACKLOG = 20
    const lows = 8
    let sent = 0
    let flowing = true
    const waiting = () => sent - slow.started.filter((s) => s.priority === 0).length
    const flow = yield* Effect.forkChild(Effect.gen(function*() {
      while (flowing) {
        if (waiting() >= BACKLOG) {
          yield* Effect.sleep(10)
          continue
        }
        yield* Effect.promise(() =>
          Promise.all(Array.from({ length: 10 }, (_, i) =>
            transport.sendMail({ from: "news@remote.test", to: "user@example.test", subject: `flow ${sent + i}`, text: "normal" })
          ))
        )
        sent += 10
      }
    }))
    yield* waitFor("the normal backlog", () => waiting() >= BACKLOG / 2, 30_000)
    for (let i = 0; i < lows; i++) {
      yield* Effect.sleep(250)
      yield* sendWithPriority(port, -5)
    }
    yield* Effect.sleep(AGEING_MS + SLACK_MS + 1_000)
    flowing = false
    yield* Fiber.join(flow)
    yield* waitFor("every message delivered", () => slow.started.length >= sent + lows, 60_000)
    return lowWaits(slow.started)
  })

describe("message priority end to end", () => {
  for (const backend of backends) {
    describe(backend.name, () => {
      it.live.skipIf(backend.skip !== undefined)("500 normal messages queued: a critical one is delivered before the rest", () =>
        Effect.gen(function*() {
          const gate = yield* Deferred.make<void>()
          const slow = slowAdapter(2, gate)
          const port = yield* server(yield* backend.queue(3600_000), slow.adapter)
          yield* sendNormal(port, 500)
          // All 500 are queued; the two workers hold one each at the closed gate.
          yield* waitFor("the workers to take their first messages", () => slow.started.length >= 2, 10_000)
          const critical = yield* sendWithPriority(port, 9)
          // Deliveries that began before the critical message was queued (its 250 came after its commit).
          const before = slow.started.length
          yield* Deferred.succeed(gate, undefined)
          yield* waitFor("every message delivered", () => slow.started.length >= 501, 60_000)
          const position = slow.started.findIndex((s) => s.id === critical)
          assert.strictEqual(slow.started[position]?.priority, 9)
          // Only the deliveries already under way when it arrived came before it.
          assert.strictEqual(position, before, `critical delivered after ${position} normal messages, ${before} of them begun before it was queued`)
          assert.isAtMost(before, 3)
          assert.strictEqual(slow.started.filter((s) => s.priority === 0).length, 500)
        }).pipe(Effect.scoped), { timeout: 180_000 })

      it.live.skipIf(backend.skip !== undefined)(`low priority amid a normal backlog waits at most the ageing limit (${AGEING_MS} ms)`, () =>
        Effect.gen(function*() {
          const waits = yield* starvationRun(backend, AGEING_MS).pipe(Effect.scoped)
          assert.lengthOf(waits, 8)
          const longest = Math.max(...waits.map((w) => w.waitMs))
          assert.isAtMost(longest, AGEING_MS + SLACK_MS, `waits: ${waits.map((w) => w.waitMs).join(", ")} ms`)
          // The low messages did overtake normal mail that was waiting: ageing, not an empty queue.
          for (const w of waits) assert.isAbove(w.normalAfter, 5, `normal messages left waiting by a low one: ${waits.map((x) => x.normalAfter).join(", ")}`)
          // ... and none went before its time while normal mail waited.
          assert.isAtLeast(Math.min(...waits.map((w) => w.waitMs)), AGEING_MS - 20, `waits: ${waits.map((w) => w.waitMs).join(", ")} ms`)
          // Control: with ageing off, the same load keeps low mail waiting past the limit.
          const control = yield* starvationRun(backend, 0).pipe(Effect.scoped)
          const controlLongest = Math.max(...control.map((w) => w.waitMs))
          assert.isAbove(controlLongest, AGEING_MS + SLACK_MS, `control waits: ${control.map((w) => w.waitMs).join(", ")} ms`)
          // Without ageing a low message overtakes no normal one (the deliveries under way aside).
          assert.isAtMost(Math.max(...control.map((w) => w.normalAfter)), 2, `overtaken: ${control.map((w) => w.normalAfter).join(", ")}`)
        }), { timeout: 300_000 })
    })
  }
})
