// The kill -9 harness as a user with a queue backend of their own would run it: from the
// installed `incoming-smtp/testing/crash`, against the installed `incoming serve`. The memory
// queue must be caught losing acknowledged mail; the SQLite queue must lose nothing.
import { assert, describe, it } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import * as CrashHarness from "incoming-smtp/testing/crash"

const bin = join(import.meta.dirname, "node_modules/incoming-smtp/dist/bin/incoming.js")

const check = (queue: "memory" | "sqlite", kills: number) =>
  Effect.acquireUseRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), `pack-crash-${queue}-`))),
    (dir) =>
      CrashHarness.run({
        command: (port) => [
          process.execPath, bin, "serve", "--log-format", "json", "--listen", `127.0.0.1:${port}`,
          "--maildir", join(dir, "mail"), "--data-dir", join(dir, "data"), "--queue", queue, "--workers", "2"
        ],
        maildir: join(dir, "mail"),
        kills,
        sessions: 4,
        settleMs: queue === "memory" ? 3_000 : 20_000
      }),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )

describe("crash harness from the installed package", () => {
  it.live("memory queue: caught losing acknowledged mail", () =>
    Effect.gen(function*() {
      const report = yield* check("memory", 2)
      console.log(`memory ${CrashHarness.format(report)}`)
      assert.isAbove(report.acknowledged, 0)
      assert.isAbove(report.lost.length, 0, "the harness did not catch the memory queue losing mail")
    }), { timeout: 90_000 })

  it.live("sqlite queue: every acknowledged message delivered", () =>
    Effect.gen(function*() {
      const report = yield* check("sqlite", 3)
      console.log(`sqlite ${CrashHarness.format(report)}`)
      assert.isAbove(report.acknowledged, 0)
      assert.deepStrictEqual(report.lost, [])
    }), { timeout: 150_000 })
})
