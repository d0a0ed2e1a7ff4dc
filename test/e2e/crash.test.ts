/**
 * Crash safety, through the shipped harness (`incoming-smtp/testing/crash`): `incoming serve` is
 * SIGKILLed at random moments while concurrent sessions send mail, and restarted. With the
 * SQLite queue every message that got a 250 must be delivered (Maildir) — zero lost; duplicates
 * are allowed only for deliveries in flight at a kill, and are reported. With the memory queue
 * the harness must catch the loss: that is what it is for.
 *
 * Bounded: a handful of kills, each after at most 0.8 s of load, plus a last run that delivers
 * what is left. Runnable alone: `npm run test:crash` (CRASH_KILLS / CRASH_SESSIONS size it).
 */
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as CrashHarness from "../../src/testing/CrashHarness.ts"
import { TestIncoming } from "../../src/testing/index.ts"

const KILLS = Number(process.env["CRASH_KILLS"] ?? 5)
const SESSIONS = Number(process.env["CRASH_SESSIONS"] ?? 6)
const bin = new URL("../../src/bin/incoming.ts", import.meta.url).pathname

/** `incoming serve` with the given queue, delivering into `<dir>/mail`. */
const incoming = (dir: string, queue: "sqlite" | "memory") => (port: number) =>
  [
    process.execPath,
    bin,
    "serve",
    "--log-format",
    "json",
    "--listen",
    `127.0.0.1:${port}`,
    "--maildir",
    join(dir, "mail"),
    "--data-dir",
    join(dir, "data"),
    "--queue",
    queue,
    "--workers",
    "2"
  ] as const

describe("crash safety (SIGKILL), with the shipped harness", () => {
  it.live(`sqlite queue: no message that got 250 is lost across ${KILLS} kill/restart cycles`, () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-crash-")
      const report = yield* CrashHarness.run({
        command: incoming(dir, "sqlite"),
        maildir: join(dir, "mail"),
        recipients: ["user0@localhost", "user1@localhost", "user2@localhost"],
        kills: KILLS,
        sessions: SESSIONS
      })
      console.log(`sqlite ${CrashHarness.format(report)}`)
      assert.isAbove(report.acknowledged, KILLS * 5, "the load generator barely sent anything")
      assert.deepStrictEqual(report.lost, [])
      assert.strictEqual(report.finalExitCode, 0)
    }), { timeout: 240_000 })

  it.live("memory queue: the harness catches it losing acknowledged mail", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-crash-")
      const report = yield* CrashHarness.run({
        command: incoming(dir, "memory"),
        maildir: join(dir, "mail"),
        kills: 3,
        sessions: SESSIONS,
        // What a memory queue lost never comes: no need to wait long for it.
        settleMs: 3_000
      })
      console.log(`memory ${CrashHarness.format(report)}`)
      assert.isAbove(report.acknowledged, 0)
      assert.isAbove(report.lost.length, 0, "a SIGKILLed memory queue lost nothing: the harness would not catch a broken backend")
    }), { timeout: 120_000 })
})
