/**
 * The greylist shared by several nodes on the real PostgreSQL (each test on a database of its
 * own, dropped after): two rules on two stores (two pools, as two nodes) over one database — a
 * triplet deferred by one node passes on the other after the delay, and auto_allow counts the
 * passes of both; pruning and the bound; a database that cannot be reached is a start-up
 * `GreylistStoreError` (a store failing while running is covered by greylist.test.ts). The config: the store
 * follows `[queue] backend`, `store = "postgres"` without that queue is a config error.
 */
import { writeFileSync } from "node:fs"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { TestClock } from "effect/testing"
import * as Load from "../../src/config/Load.ts"
import * as Options from "../../src/config/Options.ts"
import type { RcptContext } from "../../src/policy/Policy.ts"
import * as Greylist from "../../src/policy/rules/spam/Greylist.ts"
import * as PgGreylistStore from "../../src/policy/rules/spam/PgGreylistStore.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import * as Pg from "../support/postgres.ts"

const rcpt = (clientAddress: string, rcptTo: string, mailFrom = "a@sender.test"): RcptContext => ({
  listener: "mx",
  sessionId: "s1",
  clientAddress,
  secure: false,
  helo: "client.test",
  user: undefined,
  mailFrom,
  declaredSize: undefined,
  rcptTo,
  recipients: []
})

const tag = (g: Greylist.Greylist, ctx: RcptContext) => Effect.map(g.rule.onRcptTo!(ctx), (v) => v._tag)

describe.skipIf(!Pg.available)("greylist on PostgreSQL (shared by nodes)", () => {
  it.effect("deferred on one node, passed on the other after the delay; auto_allow counts both nodes' passes", () =>
    Effect.gen(function*() {
      const url = Redacted.make(yield* Pg.freshDatabase)
      const nodeA = yield* Greylist.make(yield* PgGreylistStore.make({ url }), { autoAllow: 2 })
      const nodeB = yield* Greylist.make(yield* PgGreylistStore.make({ url }), { autoAllow: 2 })
      assert.strictEqual(yield* tag(nodeA, rcpt("192.0.2.10", "u@example.test")), "Defer")
      assert.strictEqual(yield* tag(nodeB, rcpt("192.0.2.11", "u@example.test")), "Defer", "same /24, early on the other node")
      yield* TestClock.adjust("6 minutes")
      assert.strictEqual(yield* tag(nodeB, rcpt("192.0.2.12", "u@example.test")), "Continue", "the retry passes on the other node")
      assert.strictEqual(yield* tag(nodeA, rcpt("192.0.2.10", "u@example.test")), "Continue", "and is known on the first")
      assert.strictEqual(yield* tag(nodeA, rcpt("192.0.2.10", "v@example.test")), "Defer")
      yield* TestClock.adjust("6 minutes")
      assert.strictEqual(yield* tag(nodeA, rcpt("192.0.2.10", "v@example.test")), "Continue")
      // Two passes of the network (one per node's record): auto-allowed everywhere.
      assert.strictEqual(yield* tag(nodeB, rcpt("192.0.2.99", "w@example.test", "other@x.test")), "Continue")
      assert.strictEqual(yield* tag(nodeB, rcpt("198.51.100.1", "w@example.test")), "Defer", "another network is still greylisted")
    }), { timeout: 60_000 })

  it.effect("pruned after the retry window and the lifetime; bounded by max_entries", () =>
    Effect.gen(function*() {
      const url = Redacted.make(yield* Pg.freshDatabase)
      const store = yield* PgGreylistStore.make({ url, schema: "greylist_test" })
      const greylist = yield* Greylist.make(store, { maxEntries: 2, autoAllow: 0 })
      for (const r of ["a", "b", "c", "d"]) yield* tag(greylist, rcpt("192.0.2.1", `${r}@example.test`))
      assert.strictEqual(yield* store.size, 4)
      assert.strictEqual(yield* greylist.prune, 2, "the two waiting triplets seen least recently go")
      assert.strictEqual(yield* store.size, 2)
      yield* TestClock.adjust("3 days")
      assert.strictEqual(yield* greylist.prune, 2, "past the retry window")
      assert.strictEqual(yield* store.size, 0)
    }), { timeout: 60_000 })

  it.effect("unreachable at start: a GreylistStoreError", () =>
    Effect.gen(function*() {
      const dead = yield* Effect.flip(PgGreylistStore.make({ url: Redacted.make("postgres://postgres@127.0.0.1:1/none"), connectTimeoutMs: 2_000 }))
      assert.strictEqual(dead._tag, "GreylistStoreError")
      assert.match(dead.message, /^greylist store: cannot connect to PostgreSQL and set up the greylist tables: /)
    }), { timeout: 60_000 })
})

if (!Pg.available) {
  describe("greylist on PostgreSQL (shared by nodes)", () => {
    it.skip(Pg.skipMessage, () => undefined)
  })
}

describe("greylist store in the config", () => {
  const load = (toml: string) =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("greylist-config-")
      writeFileSync(`${dir}/incoming.toml`, `domains = ["example.test"]\ndata_dir = "data"\n${toml}`)
      return yield* Load.load({ env: {}, cwd: dir, configPath: "incoming.toml" }).pipe(Effect.provide(NodeServices.layer), Effect.result)
    })
  const storeOf = (config: Parameters<typeof Options.toRunner>[0]) => {
    const rule = Options.toRunner(config).policies.rules[0]!
    return rule.rule === "greylist" ? rule.store._tag : undefined
  }

  it.live("follows [queue] backend; store = \"postgres\" needs the postgres queue", () =>
    Effect.gen(function*() {
      const sqlite = yield* load(`[[policies]]\nrule = "greylist"\n`)
      assert.strictEqual(sqlite._tag === "Success" ? storeOf(sqlite.success.config) : sqlite.failure.message, "sqlite")
      const pg = yield* load(`[queue]\nbackend = "postgres"\nurl = "postgres://u@db.test/mail"\n[[policies]]\nrule = "greylist"\n`)
      assert.strictEqual(pg._tag === "Success" ? storeOf(pg.success.config) : pg.failure.message, "postgres")
      const own = yield* load(`[queue]\nbackend = "postgres"\nurl = "postgres://u@db.test/mail"\n[[policies]]\nrule = "greylist"\nstore = "sqlite"\n`)
      assert.strictEqual(own._tag === "Success" ? storeOf(own.success.config) : own.failure.message, "sqlite")
      const bad = yield* load(`[[policies]]\nrule = "greylist"\nstore = "postgres"\n`)
      assert.strictEqual(bad._tag, "Failure")
      assert.include(bad._tag === "Failure" ? bad.failure.message : "", `policies[0].store: "postgres" shares the PostgreSQL queue's database: it needs [queue] backend = "postgres" and its url`)
    }))
})
