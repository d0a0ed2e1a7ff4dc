/**
 * The PostgreSQL server restarted under load, as a whole process: `incoming serve` on a cluster
 * this test owns (`test/support/pgCluster.ts`; the shared server is never touched) takes mail
 * from 6 concurrent sessions; the database is stopped (fast shutdown: every connection cut), kept
 * down for 3 s, and started again, while the sessions keep sending. Sessions during the outage
 * must get 4xx (451 4.3.0), never a 5xx; the node must recover by itself (250s again, nothing
 * restarted but the database); every message that got a 250, before, during or after the outage,
 * must be delivered to the Maildir; and the node's LISTEN must be back (its connection seen in
 * `pg_stat_activity`, and its NOTIFY waking another node's idle worker).
 *
 * Bounded: about 10 s of load, then at most 60 s for the deliveries.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, Redacted } from "effect"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"
import { maildirTokens, tokenHeader } from "../../src/testing/CrashHarness.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as PgCluster from "../support/pgCluster.ts"
import { serve } from "../support/server.ts"

const SESSIONS = 6

interface Outcome {
  readonly token: string
  readonly at: number
  /** The reply code, or 0 when the session was cut off or could not connect. */
  readonly code: number
  readonly text: string
}

describe.skipIf(!PgCluster.available)("PostgreSQL restarted under load (a cluster of the test's own)", () => {
  it.live("451 during the outage, no 5xx, nothing acknowledged lost, the node and its LISTEN recover by themselves", () =>
    Effect.gen(function*() {
      const cluster = yield* PgCluster.make
      const url = cluster.url("postgres")
      const dir = yield* TestIncoming.tempDir("incoming-pg-restart-")
      const mail = join(dir, "mail")
      const config = join(dir, "node.toml")
      writeFileSync(config, [
        `domains = ["localhost"]`,
        `[queue]\nbackend = "postgres"\nurl = "\${DATABASE_URL}"\nnode_id = "restart-node"\npool_size = 4`,
        `[delivery]\nlease = "3s"\nworkers = 2`
      ].join("\n"))
      const server = yield* serve(["--config", config, "--listen", "127.0.0.1:0", "--maildir", mail, "--data-dir", join(dir, "data")], dir, { DATABASE_URL: url })
      // Another node on the same database, only to see the served node's NOTIFYs arrive.
      const watcher = yield* PgQueue.make({ url: Redacted.make(url), nodeId: "watcher", heartbeat: false, maintenanceIntervalMs: 0 })

      const outcomes: Array<Outcome> = []
      let stop = false
      const sender = (s: number) =>
        Effect.gen(function*() {
          for (let n = 0; !stop; n++) {
            const token = `s${s}n${n}`
            const reply = yield* SmtpClient.send({
              port: server.port,
              from: "sender@example.net",
              to: [`user${n % 3}@localhost`],
              data: `Subject: restart\r\n${tokenHeader}: ${token}\r\n\r\n${"x".repeat(1024)}\r\n`
            }).pipe(Effect.option)
            outcomes.push({
              token,
              at: Date.now(),
              code: Option.match(reply, { onNone: () => 0, onSome: (r) => r.code }),
              text: Option.match(reply, { onNone: () => "cut off", onSome: (r) => `${r.code} ${r.text}` })
            })
            // A refused session waits a little, as a client's retry would.
            if (Option.isNone(reply) || reply.value.code !== 250) yield* Effect.sleep("50 millis")
          }
        })
      const senders = yield* Effect.forEach(Array.from({ length: SESSIONS }, (_, i) => i), (i) => Effect.forkChild(sender(i)))
      yield* Effect.sleep("2500 millis")
      const down = Date.now()
      yield* cluster.stop
      yield* Effect.sleep("3 seconds")
      yield* cluster.start
      const up = Date.now()
      yield* Effect.sleep("4 seconds")
      stop = true
      yield* Fiber.joinAll(senders)

      const acknowledged = outcomes.filter((o) => o.code === 250)
      const during = outcomes.filter((o) => o.at > down && o.at < up)
      const after = outcomes.filter((o) => o.at > up + 1_000)
      const codes = (os: ReadonlyArray<Outcome>) => [...new Set(os.map((o) => o.text.replace(/ [0-9A-Z]{16}.*$/, "")))].join("; ")
      console.info(
        `restart: ${outcomes.length} transactions, ${acknowledged.length} got 250; during the ${up - down} ms outage: ${during.length} ` +
          `(${codes(during)}); after: ${after.filter((o) => o.code === 250).length}/${after.length} got 250`
      )
      const fiveHundreds = outcomes.filter((o) => o.code >= 500)
      assert.deepStrictEqual(fiveHundreds.map((o) => o.text), [], "a session got a permanent refusal")
      assert.isAbove(acknowledged.filter((o) => o.at < down).length, 10, "the load barely ran before the outage")
      assert.isTrue(during.some((o) => o.code >= 400 && o.code < 500), "no session met the outage")
      for (const o of during.filter((o) => o.code >= 400 && o.code < 500)) assert.match(o.text, /^451 4\.3\.0/)
      assert.isAbove(after.filter((o) => o.code === 250).length, 10, "the node did not recover by itself")

      // Every 250 is delivered: those acknowledged before the outage too (committed, then claimed
      // again by the node after its connections came back).
      const tokens = acknowledged.map((o) => o.token)
      let delivered: ReadonlyMap<string, number> = new Map()
      const deadline = Date.now() + 60_000
      while (Date.now() < deadline) {
        delivered = yield* maildirTokens(mail)
        if (tokens.every((t) => delivered.has(t))) break
        yield* Effect.sleep("500 millis")
      }
      const lost = tokens.filter((t) => !delivered.has(t))
      const twice = [...delivered].filter(([, n]) => n > 1).map(([t]) => t)
      console.info(`restart: ${lost.length} lost, ${twice.length} delivered twice (a settle cut off by the outage: at-least-once)`)
      assert.deepStrictEqual(lost, [], "a message that got 250 was never delivered")

      // LISTEN is back: the node's listening connection is there again, and its NOTIFY (sent in
      // a commit) wakes the other node's idle worker.
      const listening = yield* Effect.scoped(Effect.gen(function*() {
        const sql = yield* PgQueue.connect({ url: Redacted.make(url), poolSize: 1 }, "restart-test")
        for (let i = 0; i < 40; i++) {
          const rows = yield* sql<{ n: bigint }>`
            SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'incoming restart-node' AND query ILIKE 'LISTEN%'`
          if (Number(rows[0]?.n ?? 0) > 0) return true
          yield* Effect.sleep("250 millis")
        }
        return false
      }))
      assert.isTrue(listening, "the node's LISTEN connection did not come back")
      yield* watcher.queue.awaitWork(0) // a wake-up already counted (its own reconnect) is used up
      const woken = yield* Effect.forkChild(watcher.queue.awaitWork(60_000).pipe(Effect.as("woken"), Effect.timeoutOption("10 seconds")))
      yield* Effect.sleep("100 millis")
      const reply = yield* SmtpClient.send({
        port: server.port,
        from: "sender@example.net",
        to: ["user0@localhost"],
        data: `Subject: after\r\n${tokenHeader}: last\r\n\r\nhello\r\n`
      })
      assert.strictEqual(reply.code, 250)
      assert.isTrue(Option.isSome(yield* Fiber.join(woken)), "the node's NOTIFY did not reach another node after the restart")
      yield* server.signal("SIGTERM")
      yield* server.exitCode
    }), { timeout: 180_000 })
})

if (!PgCluster.available) {
  describe("PostgreSQL restarted under load", () => {
    it.skip(PgCluster.skipMessage, () => {})
  })
}
