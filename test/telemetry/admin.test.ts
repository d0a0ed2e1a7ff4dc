/**
 * The admin HTTP endpoint in process, on 127.0.0.1 port 0: `/healthz` answers while the process
 * runs; `/metrics` shows the incoming_* counters after real SMTP traffic and the sampled queue
 * gauges; a bearer token guards `/readyz` and `/metrics`; `/readyz` is 200 while serving, 503
 * with a reason while a DATA transaction holds the drain open, and 503 when the queue fails.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Option, Redacted, Scope } from "effect"
import { MailQueueError } from "../../src/queue/MailQueueError.ts"
import { Listeners } from "../../src/smtp/Listener.ts"
import { Health } from "../../src/admin/Admin.ts"
import { CapturingAdapter, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { memoryWith } from "../support/queues.ts"

interface Got {
  readonly status: number
  readonly body: string
  readonly contentType: string
}

const get = (port: number, path: string, headers: Record<string, string> = {}) =>
  Effect.promise(async (): Promise<Got> => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers })
    return { status: res.status, body: await res.text(), contentType: res.headers.get("content-type") ?? "" }
  })

/** The value of a sample line (`name{labels} value`) in Prometheus text, if present. */
const sampleValue = (text: string, series: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

/** The server in a scope of the test's own, with the admin endpoint; returns its ports. */
const start = (options: Parameters<typeof TestIncoming.layerWith>[0] = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const ctx = yield* Layer.buildWithScope(
      TestIncoming.layerWith({ admin: { host: "127.0.0.1", port: 0 }, ...options }).pipe(Layer.provideMerge(CapturingAdapter.layer)),
      scope
    )
    const admin = yield* Context.get(ctx, Health).admin
    assert.isTrue(Option.isSome(admin), "the admin endpoint reports where it listens")
    return { scope, smtp: Context.get(ctx, Listeners).all[0]!.port, admin: Option.getOrThrow(admin).port }
  })

describe("admin endpoint", () => {
  it.live("/healthz, /readyz and /metrics after real SMTP traffic", () =>
    Effect.gen(function*() {
      const { scope, smtp, admin } = yield* start()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))

      assert.deepStrictEqual(yield* get(admin, "/healthz"), { status: 200, body: "ok\n", contentType: "text/plain" })
      const ready = yield* get(admin, "/readyz")
      assert.deepStrictEqual([ready.status, ready.body], [200, "ready\n"])
      assert.strictEqual((yield* get(admin, "/nope")).status, 404)

      const before = yield* get(admin, "/metrics")
      assert.strictEqual(sampleValue(before.body, "incoming_ready"), 1)
      assert.isDefined(sampleValue(before.body, "incoming_messages_accepted_total"), "counters exist at 0 before any event")

      for (let i = 0; i < 2; i++) {
        const ok = yield* SmtpClient.send({ port: smtp, from: "a@remote.test", to: ["u@example.test"], data: "Subject: m\r\n\r\nhi\r\n" })
        assert.strictEqual(ok.code, 250)
      }
      const refused = yield* SmtpClient.send({ port: smtp, from: "a@remote.test", to: ["u@elsewhere.test"], data: "x" })
      assert.strictEqual(refused.code, 554)

      const m = yield* get(admin, "/metrics")
      assert.strictEqual(m.status, 200)
      assert.match(m.contentType, /^text\/plain; version=0\.0\.4/)
      const accepted = sampleValue(m.body, "incoming_messages_accepted_total")
      assert.isAtLeast(accepted ?? 0, (sampleValue(before.body, "incoming_messages_accepted_total") ?? 0) + 2)
      assert.isAtLeast(sampleValue(m.body, `incoming_connections_total{listener="test"}`) ?? 0, 3)
      assert.isAtLeast(sampleValue(m.body, `incoming_replies_rejected_total{listener="test",stage="rcpt",reason="relay_denied",code="554"}`) ?? 0, 1)
      assert.include(m.body, "# TYPE incoming_message_bytes histogram")
      for (const state of ["queued", "inflight", "retry", "delivered", "dead"]) {
        assert.isDefined(sampleValue(m.body, `incoming_queue_recipients{state="${state}"}`), state)
      }
      assert.isDefined(sampleValue(m.body, `incoming_connections_active{listener="test"}`))
      assert.isAbove(sampleValue(m.body, "incoming_process_resident_memory_bytes") ?? 0, 0)
      assert.strictEqual(sampleValue(m.body, "incoming_draining"), 0)
    }))

  it.live("a bearer token guards /readyz and /metrics, not /healthz", () =>
    Effect.gen(function*() {
      const { scope, admin } = yield* start({ admin: { host: "127.0.0.1", port: 0, authToken: Redacted.make("t0ken-t0ken") } })
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      assert.strictEqual((yield* get(admin, "/healthz")).status, 200)
      for (const path of ["/readyz", "/metrics"]) {
        assert.strictEqual((yield* get(admin, path)).status, 401, `${path} without a token`)
        assert.strictEqual((yield* get(admin, path, { authorization: "Bearer wrong-token" })).status, 401, `${path} with a wrong token`)
        assert.strictEqual((yield* get(admin, path, { authorization: "Bearer t0ken-t0ken" })).status, 200, `${path} with the token`)
      }
    }))

  it.live("/readyz turns 503 while a DATA transaction holds the drain open, and answers until it ends", () =>
    Effect.gen(function*() {
      const { scope, smtp, admin } = yield* start({ drainTimeoutMs: 10_000 })
      const client = yield* SmtpClient.connect({ port: smtp })
      assert.strictEqual((yield* client.command("EHLO busy.test")).code, 250)
      assert.strictEqual((yield* client.command("MAIL FROM:<a@remote.test>")).code, 250)
      assert.strictEqual((yield* client.command("RCPT TO:<u@example.test>")).code, 250)
      assert.strictEqual((yield* client.command("DATA")).code, 354)
      yield* client.write("Subject: held\r\n\r\nfirst half\r\n")
      assert.strictEqual((yield* get(admin, "/readyz")).status, 200)

      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      let during: Got | undefined
      for (let i = 0; i < 100 && during?.status !== 503; i++) {
        during = yield* get(admin, "/readyz")
        if (during.status !== 503) yield* Effect.sleep("20 millis")
      }
      assert.strictEqual(during?.status, 503)
      assert.match(during!.body, /^not ready: draining/)
      assert.strictEqual(sampleValue((yield* get(admin, "/metrics")).body, "incoming_draining"), 1)
      assert.isUndefined(closing.pollUnsafe(), "the drain is still waiting for the transaction")

      yield* client.write("second half\r\n.\r\n")
      assert.strictEqual((yield* client.read).code, 250, "the held transaction completes during the drain")
      yield* Fiber.join(closing)
      const gone = yield* Effect.promise(() => fetch(`http://127.0.0.1:${admin}/healthz`).then(() => "up", () => "down"))
      assert.strictEqual(gone, "down", "the admin endpoint closes after the drain")
    }))

  it.live("/readyz is 503 with the reason when the queue fails", () =>
    Effect.gen(function*() {
      const failing = memoryWith(() => ({}), () => ({
        stats: Effect.fail(new MailQueueError({ reason: { _tag: "StorageFailed", detail: "disk on fire" } }))
      }))
      const { scope, admin } = yield* start({ queue: { kind: "custom", layer: failing } })
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const r = yield* get(admin, "/readyz")
      assert.strictEqual(r.status, 503)
      assert.include(r.body, "storage failed: disk on fire")
      assert.strictEqual((yield* get(admin, "/healthz")).status, 200, "alive, just not ready")
    }))
})
