/**
 * The embedded greylist store when `greylist.db` is not usable: a corrupt file, a directory in its
 * place, or a database another process has locked. `problem` (the start-up preflight behind
 * `check-config` and `serve`) names each; `make` fails with a `GreylistStoreError` saying the same;
 * `Build.options` names the rule (`policies[0]`); and a lock taken while the server runs makes the
 * rule let the recipient through (never a 5xx).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Build from "../../src/config/Build.ts"
import * as Load from "../../src/config/Load.ts"
import * as Options from "../../src/config/Options.ts"
import * as ZoneDns from "../../src/dns/ZoneDns.ts"
import type { RcptContext } from "../../src/policy/Policy.ts"
import * as Greylist from "../../src/policy/rules/spam/Greylist.ts"
import * as SqliteGreylistStore from "../../src/policy/rules/spam/SqliteGreylistStore.ts"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "greylist-store-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/**
 * Another connection holding `greylist.db` (as another process would) until the scope ends:
 * exclusively (nobody may open it), or only its write lock (the store's writes wait, then fail).
 */
const holdLock = (dir: string, lock: "exclusive" | "write" = "exclusive") =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const db = new DatabaseSync(join(dir, SqliteGreylistStore.fileName))
      db.exec(lock === "exclusive"
        ? "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS other (x); PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO other VALUES (1);"
        : "BEGIN IMMEDIATE;")
      return db
    }),
    (db) => Effect.sync(() => db.close())
  )

const rcpt: RcptContext = {
  listener: "mx",
  sessionId: "s1",
  clientAddress: "192.0.2.1",
  secure: false,
  helo: "client.test",
  user: undefined,
  mailFrom: "a@x.test",
  declaredSize: undefined,
  rcptTo: "u@example.test",
  recipients: []
}

describe("greylist.db that cannot be used", () => {
  it.effect("a missing or healthy database is no problem", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      assert.isUndefined(SqliteGreylistStore.problem(dir))
      yield* Effect.scoped(SqliteGreylistStore.make(dir))
      assert.isUndefined(SqliteGreylistStore.problem(dir))
    }))

  it.effect("corrupt: named by problem and by make", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFileSync(join(dir, "greylist.db"), "this is not a database, just some text long enough to fill a header".repeat(4))
      assert.strictEqual(SqliteGreylistStore.problem(dir), `${join(dir, "greylist.db")}: file is not a database (corrupt: move it away and greylisting starts over)`)
      const error = yield* Effect.flip(Effect.scoped(SqliteGreylistStore.make(dir)))
      assert.strictEqual(error.message, `greylist store: cannot open ${join(dir, "greylist.db")}: file is not a database (corrupt: move it away and greylisting starts over)`)
    }))

  it.effect("a directory in its place", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      mkdirSync(join(dir, "greylist.db"))
      assert.strictEqual(SqliteGreylistStore.problem(dir), `${join(dir, "greylist.db")}: not a file`)
      const error = yield* Effect.flip(Effect.scoped(SqliteGreylistStore.make(dir)))
      assert.include(error.message, `greylist store: cannot open ${join(dir, "greylist.db")}`)
    }))

  it.effect("locked by another process: named after the wait; Build names the rule", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      yield* holdLock(dir)
      const lockedText = `${join(dir, "greylist.db")}: database is locked (another process holds it: stop it, or give this server another data_dir)`
      assert.strictEqual(SqliteGreylistStore.problem(dir), lockedText)
      const error = yield* Effect.flip(Effect.scoped(SqliteGreylistStore.make(dir)))
      assert.strictEqual(error.message, `greylist store: cannot open ${lockedText}`)
      // The file was fine at load (another data_dir); the database is locked when the rule is built.
      const elsewhere = yield* tempDir
      writeFileSync(join(elsewhere, "incoming.toml"), `domains = ["example.test"]\ndata_dir = "data"\n[[policies]]\nrule = "greylist"\n`)
      const { config } = yield* Load.load({ env: {}, cwd: elsewhere, configPath: "incoming.toml" }).pipe(Effect.provide(NodeServices.layer))
      const runner = Options.toRunner(config)
      const locked = { ...runner, policies: { ...runner.policies, rules: [{ rule: "greylist" as const, options: {}, dataDir: dir }] } }
      const built = yield* Effect.flip(Effect.scoped(Build.options(locked)).pipe(Effect.provide(ZoneDns.layerEmpty)))
      assert.strictEqual(built._tag, "RuleBuildError")
      assert.strictEqual(built.message, `policies[0]: greylist store: cannot open ${lockedText}`)
    }), { timeout: 20_000 })

  it.effect("locked while running: the recipient goes through (store_error), never a 5xx", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const greylist = yield* Greylist.make(yield* SqliteGreylistStore.make(dir))
      assert.strictEqual((yield* greylist.rule.onRcptTo!(rcpt))._tag, "Defer", "greylisted while the store works")
      yield* Effect.scoped(Effect.gen(function*() {
        yield* holdLock(dir, "write")
        const verdict = yield* greylist.rule.onRcptTo!({ ...rcpt, rcptTo: "v@example.test" })
        assert.strictEqual(verdict._tag, "Continue")
      }))
      assert.strictEqual((yield* greylist.rule.onRcptTo!({ ...rcpt, rcptTo: "w@example.test" }))._tag, "Defer", "and greylisting again once the lock is gone")
    }), { timeout: 20_000 })
})
