/**
 * Priorities in the config file: a listener's `priority`, a route's, and `[[priorities]]`
 * patterns reach `Incoming.layer`'s options as numbers; a bad level or a pattern-less table is a
 * load error naming the field.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Load from "../../src/config/Load.ts"
import * as Options from "../../src/config/Options.ts"
import { TestIncoming } from "../../src/testing/index.ts"

const workdir = (text: string) =>
  Effect.map(TestIncoming.tempDir("incoming-priority-"), (dir) => {
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, "incoming.toml"), text)
    return dir
  })

const load = (cwd: string) => Load.load({ env: {}, searchPaths: ["./incoming.toml"], cwd }).pipe(Effect.provide(NodeServices.layer))

describe("priority settings", () => {
  it.effect("listener, route and pattern levels become numbers", () =>
    Effect.gen(function*() {
      const dir = yield* workdir(`
[[listeners]]
port = 2587
priority = "high"

[adapters.keep]
type = "discard"

[[routes]]
match = ["pager@localhost"]
adapter = "keep"
priority = "critical"

[[routes]]
match = ["*"]
adapter = "keep"

[[priorities]]
sender = ["*@bank.test"]
priority = 3

[[priorities]]
recipient = ["newsletter@*"]
priority = "low"
`)
      const { config } = yield* load(dir)
      const options = Options.toIncomingOptions(config)
      assert.strictEqual(options.listeners[0]!.priority, 5)
      assert.deepStrictEqual(options.priorities, [
        { sender: ["*@bank.test"], recipient: [], priority: 3 },
        { sender: [], recipient: ["newsletter@*"], priority: -5 }
      ])
      const delivery = Options.toDelivery(config)
      assert.strictEqual(delivery.adapter, "router")
      if (delivery.adapter === "router") assert.deepStrictEqual(delivery.routes.map((r) => r.priority), [9, undefined])
    }))

  it.effect("a bad level or a table without patterns names the field", () =>
    Effect.gen(function*() {
      const bad = yield* workdir(`[[listeners]]\nport = 25\npriority = "urgent"\n`)
      const e1 = yield* Effect.flip(load(bad))
      assert.include(e1.message, "listeners[0].priority")
      assert.include(e1.message, "low, normal, high, critical or an integer from -9 to 9")
      const empty = yield* workdir(`[[priorities]]\npriority = "high"\n`)
      const e2 = yield* Effect.flip(load(empty))
      assert.include(e2.message, "priorities[0]: needs sender or recipient patterns")
    }))
})
