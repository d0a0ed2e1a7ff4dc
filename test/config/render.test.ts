/**
 * Units and the printed configuration: durations and sizes parse as documented and print back
 * in the shortest exact unit; the printed effective configuration hides every secret and, fed
 * back in (secret aside), loads to the same configuration in each format.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as Load from "../../src/config/Load.ts"
import * as Render from "../../src/config/Render.ts"
import { formatDuration, formatSize, parseDuration, parseSize } from "../../src/config/Units.ts"
import { TestIncoming } from "../../src/testing/index.ts"

describe("units", () => {
  it("durations: units, combinations, plain milliseconds", () => {
    assert.strictEqual(parseDuration("250ms"), 250)
    assert.strictEqual(parseDuration("30s"), 30_000)
    assert.strictEqual(parseDuration("5m"), 300_000)
    assert.strictEqual(parseDuration("1h30m"), 5_400_000)
    assert.strictEqual(parseDuration("1.5h"), 5_400_000)
    assert.strictEqual(parseDuration("7d"), 604_800_000)
    assert.strictEqual(parseDuration("2w"), 1_209_600_000)
    assert.strictEqual(parseDuration("1500"), 1500)
    for (const bad of ["", "5x", "m", "-1s", "1.0001ms", "5 minutes"]) {
      assert.isString(parseDuration(bad), bad)
    }
    assert.deepStrictEqual([0, 250, 30_000, 300_000, 5_400_000, 604_800_000, 1_001].map(formatDuration), ["0s", "250ms", "30s", "5m", "90m", "7d", "1001ms"])
  })

  it("sizes: KB = 1000, KiB = 1024, any case, plain bytes", () => {
    assert.strictEqual(parseSize("25MB"), 25_000_000)
    assert.strictEqual(parseSize("25MiB"), 26_214_400)
    assert.strictEqual(parseSize("256KiB"), 262_144)
    assert.strictEqual(parseSize("256 kib"), 262_144)
    assert.strictEqual(parseSize("1.5KB"), 1500)
    assert.strictEqual(parseSize("2GiB"), 2 * 1024 ** 3)
    assert.strictEqual(parseSize("512"), 512)
    assert.strictEqual(parseSize("512B"), 512)
    for (const bad of ["", "MB", "1.5B", "3 parsecs", "-1KB"]) assert.isString(parseSize(bad), bad)
    assert.deepStrictEqual([0, 26_214_400, 262_144, 25_000_000, 1001].map(formatSize), [0, "25MiB", "256KiB", "25MB", 1001])
  })
})

describe("the printed configuration", () => {
  it.effect("redacts secrets and loads back to the same configuration in every format", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-render-")
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["example.test"]`,
        `[[listeners]]\nport = 2525\nmax_size = "10MiB"\nidle_timeout = "90s"`,
        `[admin]\nlisten = "[::1]:9025"\nauth_token = "\${TOKEN}"`
      ].join("\n"))
      const load = (options: Partial<Load.LoadOptions>) =>
        Load.load({ cwd: dir, env: { TOKEN: "hunter2-hunter2" }, searchPaths: ["./incoming.toml"], ...options }).pipe(
          Effect.provide(NodeServices.layer)
        )
      const { config } = yield* load({})
      for (const format of ["toml", "json", "yaml"] as const) {
        const text = Render.render(config, format)
        assert.notInclude(text, "hunter2", `${format}: the secret is not printed`)
        assert.include(text, Render.redactedMarker)
        assert.include(text, format === "json" ? `"max_size": "10MiB"` : format === "toml" ? `max_size = "10MiB"` : "max_size: 10MiB")
        assert.include(text, format === "json" ? `"idle_timeout": "90s"` : "90s")
        const file = join(dir, `printed.${format}`)
        writeFileSync(file, text)
        const again = yield* load({ configPath: file })
        assert.strictEqual(Redacted.value(again.config.admin!.auth_token!), Render.redactedMarker)
        assert.deepStrictEqual(Render.toDocument(again.config), Render.toDocument(config), `${format} round trip`)
      }
    }))
})
