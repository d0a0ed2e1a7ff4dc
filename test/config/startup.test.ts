/**
 * What an `incoming` command loads before it does anything: every command imports every
 * subcommand's modules, so a library that only some features use (mailauth for email
 * authentication and DKIM signing, acme-client for managed certificates) must be loaded when the
 * feature first runs, not at start-up, or each `incoming queue ...` and `incoming --help` pays for
 * it. A module-resolution hook in the child records the npm packages it resolved.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestIncoming } from "../../src/testing/index.ts"
import { runCli } from "../support/server.ts"

const hook = `import { registerHooks } from "node:module"
const seen = new Set()
registerHooks({
  resolve(specifier, context, next) {
    const resolved = next(specifier, context)
    const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(resolved.url)
    if (m !== null) seen.add(m[1])
    return resolved
  }
})
process.on("exit", () => process.stderr.write("LOADED " + [...seen].sort().join(" ") + "\\n"))
`

describe("incoming start-up", () => {
  it.live("--help loads neither mailauth nor acme-client", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const file = join(dir, "hook.mjs")
      writeFileSync(file, hook)
      const ran = yield* runCli(["--help"], { cwd: dir, env: { NODE_OPTIONS: `--import ${file}` }, timeoutMs: 60_000 })
      assert.strictEqual(ran.code, 0, ran.stderr)
      const line = ran.stderr.split("\n").find((l) => l.startsWith("LOADED "))
      assert.isDefined(line, `the hook did not report:\n${ran.stderr}`)
      const loaded = line!.slice("LOADED ".length).split(" ")
      assert.include(loaded, "effect", "the hook saw no package at all")
      assert.notInclude(loaded, "mailauth")
      assert.notInclude(loaded, "acme-client")
    }), { timeout: 90_000 })
})
