/**
 * How the PostgreSQL queue stores what it acknowledges, read back from the database itself:
 * - every connection of the pool runs with `synchronous_commit = on`, even on a database whose
 *   default is off (the 250 follows a flushed COMMIT);
 * - concurrent commits share transactions (group commit): 60 messages committed by 60 concurrent
 *   sessions are inserted by far fewer transactions (distinct `xmin` of their rows);
 * - a body above 256 KiB is stored in 256 KiB rows of `body_chunks`, not inline.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"
import { message } from "../../src/testing/QueueConformance.ts"
import { fileBody } from "../../src/testing/queueConformance/support.ts"
import * as Pg from "../support/postgres.ts"

const database = (url: string) => new URL(url).pathname.slice(1)

describe.skipIf(!Pg.available)("PostgreSQL queue: how commits are stored", () => {
  it.live("synchronous_commit is on for the pool even where the database default is off", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const admin = yield* PgQueue.connect({ url: Redacted.make(Pg.adminUrl), poolSize: 1 }, "storage-test")
      yield* admin.unsafe(`ALTER DATABASE ${database(url)} SET synchronous_commit = off`)
      // A session without the queue's startup parameter gets the database default: off.
      const plain = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 1 }).pipe(Effect.provide(Reactivity.layer))
      const byDefault = yield* plain<{ synchronous_commit: string }>`SHOW synchronous_commit`
      assert.strictEqual(byDefault[0]?.synchronous_commit, "off")
      const node = yield* PgQueue.connect({ url: Redacted.make(url), poolSize: 2 }, "storage-node")
      const seen = yield* node<{ synchronous_commit: string }>`SHOW synchronous_commit`
      assert.strictEqual(seen[0]?.synchronous_commit, "on", "the queue's pool overrides the default")
    }), 60_000)

  it.live("concurrent commits share transactions; a large body is stored in chunks", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const q = yield* PgQueue.make({ url: Redacted.make(url), nodeId: "storage", heartbeat: false, maintenanceIntervalMs: 0 })
      const now = Date.now()
      yield* Effect.forEach(Array.from({ length: 60 }, (_, i) => message({ receivedAt: now - 100 + i })), (m) => q.queue.commit(m), {
        concurrency: "unbounded",
        discard: true
      })
      const sql = yield* PgQueue.connect({ url: Redacted.make(url), poolSize: 1 }, "storage-test")
      const rows = yield* sql<{ n: bigint; tx: bigint }>`SELECT count(*) AS n, count(DISTINCT xmin::text) AS tx FROM incoming.messages`
      const transactions = Number(rows[0]?.tx)
      console.info(`group commit: 60 concurrent commits in ${transactions} transaction(s)`)
      assert.strictEqual(Number(rows[0]?.n), 60)
      assert.isAtMost(transactions, 20, "concurrent commits did not share transactions")

      const size = 1024 * 1024 + 17
      const large = message({ receivedAt: now, body: (yield* fileBody(Buffer.alloc(size, 0x61))).body })
      yield* q.queue.commit(large)
      const stored = yield* sql<{ inline: boolean; chunks: number; rows: bigint; bytes: bigint }>`
        SELECT m.body IS NOT NULL AS inline, m.chunks, count(c.n) AS rows, coalesce(sum(length(c.data)), 0) AS bytes
        FROM incoming.messages m LEFT JOIN incoming.body_chunks c ON c.message_id = m.id
        WHERE m.id = ${large.id} GROUP BY m.id`
      assert.deepStrictEqual(
        stored.map((r) => [r.inline, r.chunks, Number(r.rows), Number(r.bytes)]),
        [[false, 5, 5, size]],
        "a 1 MiB body is five 256 KiB chunks, not an inline value"
      )
    }), 60_000)
})

if (!Pg.available) {
  describe("PostgreSQL queue: how commits are stored", () => {
    it.skip(Pg.skipMessage, () => {})
  })
}
