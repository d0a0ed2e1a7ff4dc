/**
 * The standalone server with `[acme]`, whole process, against pebble: `incoming serve` issues
 * before it listens, `incoming check-config` accepts the section, `incoming cert status` shows
 * the stored certificate, `incoming cert renew` orders a new one, SIGHUP installs it while a
 * STARTTLS session stays open, and `/metrics` carries the expiry and the renewal outcomes.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Pebble from "../support/pebble.ts"
import { runCli, serve } from "../support/server.ts"
import * as StartTls from "../support/starttls.ts"
import { name, ready, setup, warnIfSkipped } from "./helpers.ts"

warnIfSkipped("serve.test.ts")

const metrics = (port: number) => Effect.promise(() => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()))

describe.skipIf(!ready)("incoming serve with [acme]", () => {
  it.live("issues before listening; cert status and renew; SIGHUP swaps with a session open; metrics", () =>
    Effect.gen(function*() {
      const s = yield* setup("http-01")
      const adminPort = yield* Effect.promise(() => Pebble.freePort())
      const file = join(s.dir, "incoming.toml")
      writeFileSync(file, `
hostname = "${name}"
domains = ["acme.test"]
data_dir = "${s.dataDir}"

[[listeners]]
port = 0
tls = { mode = "optional", acme = true }

[queue]
backend = "memory"

[delivery]
adapter = "discard"

[admin]
listen = "127.0.0.1:${adminPort}"

[acme]
directory = "${s.pebble.directory}"
directory_ca = "${s.acme.directoryCaFile}"
email = "postmaster@acme.test"
http_listen = "127.0.0.1:${s.acme.httpListen.port}"
`)
      const checked = yield* runCli(["check-config", "--config", file], { cwd: s.dir })
      assert.strictEqual(checked.code, 0, checked.stderr)
      const server = yield* serve(["--config", file], s.dir)
      assert.match(server.output(), /certificate for mx\.acme\.test issued in \d+ ms/)
      const before = yield* StartTls.open(server.port, name, s.pebble.root)
      assert.isTrue(before.authorized, before.authorizationError)

      const status = yield* runCli(["cert", "status", "--config", file], { cwd: s.dir })
      assert.strictEqual(status.code, 0, status.stderr)
      assert.match(status.stdout, /mx\.acme\.test: valid; expires /)

      const renewed = yield* runCli(["cert", "renew", "--config", file], { cwd: s.dir, timeoutMs: 60_000 })
      assert.strictEqual(renewed.code, 0, renewed.stderr)
      assert.match(renewed.stdout, /mx\.acme\.test: issued in \d+ ms/)

      yield* server.signal("SIGHUP")
      yield* server.waitFor(/configuration reloaded/, 20_000)
      const after = yield* StartTls.open(server.port, name, s.pebble.root)
      assert.isTrue(after.authorized, after.authorizationError)
      assert.notStrictEqual(after.fingerprint, before.fingerprint)
      assert.strictEqual((yield* before.command("NOOP")).slice(0, 3), "250")

      const text = yield* metrics(adminPort)
      assert.match(text, /incoming_certificate_expiry_seconds\{domain="mx\.acme\.test"\} \d+/)
      assert.match(text, /incoming_certificate_renewals_total\{[^}]*outcome="issued"[^}]*\} 1/)
    }).pipe(Effect.scoped), 180_000)
})
