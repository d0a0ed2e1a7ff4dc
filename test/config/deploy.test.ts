/**
 * The files operators take as they are stay true to the code: the configuration reference
 * documents every key of the schema, the example config is valid, every metric the Grafana
 * dashboard queries exists, and the systemd unit stops with SIGTERM and waits longer than a drain.
 */
import { readFileSync } from "node:fs"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Schema, SchemaAST } from "effect"
import { Adapter, PolicyRule } from "../../src/config/IncomingConfig.ts"
import * as Load from "../../src/config/Load.ts"
import { leafPaths } from "../../src/config/Shape.ts"
import { parseDuration } from "../../src/config/Units.ts"
import { sampled } from "../../src/admin/Metrics.ts"
import { metrics as certificateMetrics } from "../../src/acme/CertManager.ts"
import { metrics } from "../../src/telemetry/Telemetry.ts"

const root = new URL("../../", import.meta.url).pathname
const read = (path: string) => readFileSync(`${root}${path}`, "utf8")

describe("deploy files and docs", () => {
  it("docs/configuration.md has a row for every key of the schema", () => {
    const doc = read("docs/configuration.md")
    const missing = leafPaths()
      .map((p) => p.filter((s): s is string => typeof s === "string"))
      .map((s) => (s.length > 1 ? s.slice(1).join(".") : s[0]!))
      .filter((key) => !doc.includes(`| \`${key}\` |`))
    assert.deepStrictEqual(missing, [])
  })

  it("docs/configuration.md has a row for every key of every adapter type", () => {
    const doc = read("docs/configuration.md")
    // `adapters` is a record of a union: leafPaths does not enter it, so walk each member here.
    const keys = (ast: SchemaAST.AST, at: string): Array<string> =>
      SchemaAST.isObjects(ast) && ast.propertySignatures.length > 0
        ? ast.propertySignatures.flatMap((p) => keys(p.type, at === "" ? String(p.name) : `${at}.${String(p.name)}`))
        : [at]
    const union = SchemaAST.toEncoded(Schema.revealCodec(Adapter).ast)
    assert.isTrue(SchemaAST.isUnion(union))
    const all = (union as SchemaAST.Union).types.flatMap((member) => keys(member, "")).filter((k) => k !== "type")
    assert.isAbove(all.length, 25)
    assert.deepStrictEqual([...new Set(all)].filter((key) => !doc.includes(`| \`${key}\` |`)), [])
  })

  it("docs/configuration.md has a row for every key of every policy rule", () => {
    const doc = read("docs/configuration.md")
    // `policies` is a list of a union, which leafPaths does not enter either.
    const union = SchemaAST.toEncoded(Schema.revealCodec(PolicyRule).ast)
    assert.isTrue(SchemaAST.isUnion(union))
    const all = (union as SchemaAST.Union).types.flatMap((member) =>
      SchemaAST.isObjects(member) ? member.propertySignatures.map((p) => String(p.name)) : []
    )
    assert.isAbove(all.length, 15)
    assert.deepStrictEqual([...new Set(all)].filter((key) => !doc.includes(`| \`${key}\` |`)), [])
  })

  it.effect("deploy/incoming.toml is a valid configuration", () =>
    Effect.gen(function*() {
      const { config } = yield* Load.load({ cwd: root, env: { ADMIN_TOKEN: "x" }, configPath: "deploy/incoming.toml" }).pipe(
        Effect.provide(NodeServices.layer)
      )
      assert.strictEqual(config.listeners[0].port, 25)
      assert.deepStrictEqual(config.admin?.listen, { host: "127.0.0.1", port: 9025 })
    }))

  it("every metric in the Grafana dashboard exists", () => {
    const dashboard = JSON.parse(read("deploy/grafana-dashboard.json")) as { panels: Array<{ targets?: Array<{ expr: string }> }> }
    const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr)
    assert.isAbove(exprs.length, 10)
    const known = new Set<string>()
    for (const m of [...Object.values(metrics), ...Object.values(sampled), ...Object.values(certificateMetrics)]) {
      known.add(m.id)
      for (const suffix of ["_bucket", "_sum", "_count"]) known.add(`${m.id}${suffix}`)
    }
    const used = new Set(exprs.flatMap((e) => e.match(/\bincoming_[a-z_]+/g) ?? []))
    assert.deepStrictEqual([...used].filter((n) => !known.has(n)), [])
    assert.isAtLeast(used.size, 12)
  })

  it("the systemd unit: serve --config, SIGTERM, a stop timeout above the drain, restart on failure", () => {
    const unit = read("deploy/incoming.service")
    const setting = (key: string) => unit.split("\n").find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1)
    assert.strictEqual(setting("Type"), "simple")
    assert.match(setting("ExecStart") ?? "", /incoming serve --config \/etc\/incoming\/incoming\.toml$/)
    // The installed bin itself, found by systemd's search path whichever npm prefix installed it
    // (/usr/bin or /usr/local/bin): never `npm start`, which would not pass SIGTERM on.
    assert.match(setting("ExecStart") ?? "", /^incoming serve /)
    assert.strictEqual(setting("KillSignal"), "SIGTERM")
    assert.strictEqual(setting("Restart"), "on-failure")
    assert.strictEqual(setting("StateDirectory"), "incoming")
    assert.strictEqual(setting("User"), "incoming")
    assert.strictEqual(setting("NoNewPrivileges"), "yes")
    const stopMs = parseDuration(setting("TimeoutStopSec") ?? "")
    const drainMs = parseDuration(/^drain_timeout = "(.+)"$/m.exec(read("deploy/incoming.toml"))![1]!)
    assert.isNumber(stopMs)
    assert.isAtLeast(stopMs as number, (drainMs as number) + 10_000, "room for the drain and the queue to close")
  })
})
