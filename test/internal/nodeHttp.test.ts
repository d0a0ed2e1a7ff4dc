/**
 * The server's module graph must not load undici (Node's fetch/WebSocket): an ES import of
 * node:http — ours, or one inside an ES build of smtp-server or nodemailer — does, and costs a
 * few MiB resident in every server (internal/nodeHttp.ts). Checked in a fresh Node process,
 * since this test runner itself may well have loaded it.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"

const root = fileURLToPath(new URL("../..", import.meta.url))

const loadsUndici = (entry: string): { readonly undici: boolean; readonly output: string } => {
  const probe = `await import(${JSON.stringify(entry)}); console.log("undici=" + process.moduleLoadList.some((m) => m.includes("undici")))`
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", probe], { cwd: root, encoding: "utf8", timeout: 60_000 })
  const output = `${r.stdout}${r.stderr}`
  assert.match(output, /undici=(true|false)/, `the probe did not run: ${output}`)
  return { undici: output.includes("undici=true"), output }
}

describe("no undici at start-up", () => {
  it("the library (src/index.ts) and the serve command do not load it", { timeout: 120_000 }, () => {
    for (const entry of ["./src/index.ts", "./src/cli/serve.ts"]) {
      const { undici, output } = loadsUndici(entry)
      assert.isFalse(undici, `${entry} loads undici: ${output}`)
    }
  })

  it("the probe sees it when something does import node:http as an ES module", { timeout: 60_000 }, () => {
    assert.isTrue(loadsUndici("node:http").undici)
  })
})
