/**
 * `[queue] backend = "postgres"` in the config file: the URL is a secret (a `${VAR}` reference
 * works, `check-config` never prints it), it is required with that backend, the schema name is
 * checked, and the PostgreSQL-only keys are refused with another backend.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestIncoming } from "../../src/testing/index.ts"
import { runCli } from "../support/server.ts"

describe("[queue] backend = \"postgres\"", () => {
  it.live("check-config: url from ${VAR}, shown as <redacted>; pool_size and schema printed", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-pg-config-")
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["example.test"]`,
        `[queue]\nbackend = "postgres"\nurl = "\${DATABASE_URL}"\npool_size = 4\nschema = "mx_queue"\nnode_id = "mx1"`
      ].join("\n"))
      const ok = yield* runCli(["check-config"], { cwd: dir, env: { DATABASE_URL: "postgres://incoming:s3cret-pw@db.internal:5432/mail" } })
      assert.strictEqual(ok.code, 0, ok.stderr)
      assert.include(ok.stdout, `backend = "postgres"`)
      assert.include(ok.stdout, `url = "<redacted>"`)
      assert.include(ok.stdout, "pool_size = 4")
      assert.include(ok.stdout, `schema = "mx_queue"`)
      assert.include(ok.stdout, `node_id = "mx1"`)
      assert.notInclude(ok.stdout + ok.stderr, "s3cret-pw")
    }), 60_000)

  it.live("check-config: a missing url, a bad schema name, a url that is not postgres://, keys of another backend", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-pg-config-")
      writeFileSync(join(dir, "a.toml"), `[queue]\nbackend = "postgres"\nschema = "Bad-Name"\n`)
      const a = yield* runCli(["check-config", "--config", "a.toml"], { cwd: dir })
      assert.strictEqual(a.code, 1)
      assert.include(a.stderr, "queue.schema: expected lower-case letters, digits and _")
      writeFileSync(join(dir, "b.toml"), `[queue]\nbackend = "postgres"\n`)
      const b = yield* runCli(["check-config", "--config", "b.toml"], { cwd: dir })
      assert.strictEqual(b.code, 1)
      assert.include(b.stderr, `b.toml: queue.url: required when backend is "postgres"`)
      writeFileSync(join(dir, "c.toml"), `[queue]\nbackend = "postgres"\nurl = "mysql://secret-host/db"\n`)
      const c = yield* runCli(["check-config", "--config", "c.toml"], { cwd: dir })
      assert.strictEqual(c.code, 1)
      assert.include(c.stderr, "queue.url: expected a postgres:// or postgresql:// URL")
      assert.notInclude(c.stderr, "secret-host")
      writeFileSync(join(dir, "d.toml"), `[queue]\nbackend = "sqlite"\nurl = "postgres://x@y/z"\n`)
      const d = yield* runCli(["check-config", "--config", "d.toml"], { cwd: dir })
      assert.strictEqual(d.code, 1)
      assert.include(d.stderr, `queue.url: only used with backend = "postgres"`)
    }), 120_000)
})
