/**
 * `incoming queue hold` and `release` against the shared PostgreSQL queue, as an operator on any
 * node runs them (`--config` naming the database): a node that claims everything it can never
 * gets the held message, `list --state held` and `stats` show it from the shared database, and
 * after `release` the node claims it.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import * as PgQueue from "../../src/queue/postgres/PgQueue.ts"
import { message } from "../../src/testing/QueueConformance.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import * as Pg from "../support/postgres.ts"
import { cli } from "../support/queueCli.ts"

describe.skipIf(!Pg.available)("incoming queue hold/release on the PostgreSQL queue", () => {
  it.live("a message held from the CLI is claimed by no node until released", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const dir = yield* TestIncoming.tempDir("incoming-pg-cli-")
      const config = join(dir, "incoming.toml")
      writeFileSync(config, `[queue]\nbackend = "postgres"\nurl = "${url}"\nnode_id = "operator"\n`)
      const node = yield* PgQueue.make({ url: Redacted.make(url), nodeId: "mx1", heartbeat: false, maintenanceIntervalMs: 0 })
      const held = message({ receivedAt: Date.now() - 10 })
      yield* node.queue.commit(held)

      const hold = yield* cli("hold", held.id, "--config", config, "--json")
      assert.strictEqual(hold.code, 0, hold.stderr)
      assert.deepStrictEqual(JSON.parse(hold.stdout), { held: held.id, inflight: 0 })
      assert.isTrue(Option.isNone(yield* node.queue.claim({ owner: "mx1/w0", leaseMs: 60_000 })), "the held message was claimed")
      const list = yield* cli("list", "--state", "held", "--config", config, "--json")
      assert.deepStrictEqual((JSON.parse(list.stdout) as ReadonlyArray<{ id: string }>).map((m) => m.id), [held.id])
      const stats = yield* cli("stats", "--config", config, "--json")
      assert.strictEqual((JSON.parse(stats.stdout) as { held: number }).held, 1)

      const release = yield* cli("release", held.id, "--config", config)
      assert.strictEqual(release.code, 0, release.stderr)
      const again = yield* cli("release", held.id, "--config", config)
      assert.strictEqual(again.code, 1, "releasing a message that is not held")
      assert.include(again.stderr, `no held message ${held.id}`)
      const lease = yield* node.queue.claim({ owner: "mx1/w0", leaseMs: 60_000 })
      assert.strictEqual(Option.getOrThrow(lease).id, held.id)
    }), { timeout: 120_000 })
})

if (!Pg.available) {
  describe("incoming queue hold/release on the PostgreSQL queue", () => {
    it.skip(Pg.skipMessage, () => {})
  })
}
