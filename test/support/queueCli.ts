/**
 * Runs `incoming queue ...` as a child process (the CLI an operator types), and polls a command
 * until its answer satisfies a check: for end-to-end tests of the queue commands.
 */
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { Effect } from "effect"

const root = new URL("../../", import.meta.url).pathname
const run = promisify(execFile)

export interface CliResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export const cli = (...args: Array<string>): Effect.Effect<CliResult> =>
  Effect.promise(() =>
    run(process.execPath, [`${root}src/bin/incoming.ts`, "queue", ...args]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr })
    )
  )

/** Runs `probe` until `ok` holds, at most `tries` times `intervalMs` apart; then the last answer. */
export const waitUntil = <A>(probe: Effect.Effect<A>, ok: (a: A) => boolean, tries = 100, intervalMs = 100) =>
  Effect.gen(function*() {
    for (let i = 0; i < tries; i++) {
      const a = yield* probe
      if (ok(a)) return a
      yield* Effect.sleep(intervalMs)
    }
    return yield* probe
  })
