/**
 * The `[acme]` section as `incoming check-config` and `serve` see it: a valid section becomes
 * the manager's options (named directories resolved, durations in ms), and each mistake is
 * reported with its path — before anything is bound or ordered.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ConfigError } from "../../src/config/ConfigError.ts"
import * as Load from "../../src/config/Load.ts"
import * as Options from "../../src/config/Options.ts"

const inDir = (text: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = mkdtempSync(join(tmpdir(), "incoming-acme-config-"))
      writeFileSync(join(dir, "incoming.toml"), text)
      return dir
    }),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )

const load = (text: string) =>
  Effect.flatMap(inDir(text), (cwd) => Load.load({ env: {}, cwd, searchPaths: ["./incoming.toml"] })).pipe(Effect.provide(NodeServices.layer))

const problems = (text: string) =>
  load(text).pipe(
    Effect.flip,
    Effect.map((e) => {
      assert.instanceOf(e, ConfigError)
      return e.message
    })
  )

describe("[acme] in the config file", () => {
  it.effect("a valid section: the manager's options, the listener marked", () =>
    Effect.gen(function*() {
      const { config } = yield* load(`
hostname = "mx.example.com"
[[listeners]]
port = 25
tls = { mode = "optional", acme = true }
[acme]
directory = "letsencrypt-staging"
email = "hostmaster@example.com"
challenge = "tls-alpn-01"
key_type = "rsa-2048"
renew_before = "20d"
`)
      const options = Options.toIncomingOptions(config)
      assert.strictEqual(options.acme?.directory, "https://acme-staging-v02.api.letsencrypt.org/directory")
      assert.strictEqual(options.acme?.challenge, "tls-alpn-01")
      assert.strictEqual(options.acme?.keyType, "rsa-2048")
      assert.strictEqual(options.acme?.renewBeforeMs, 20 * 86_400_000)
      assert.deepStrictEqual(options.acme?.httpListen, { host: "0.0.0.0", port: 80 })
      assert.strictEqual(options.listeners[0]!.tls?.acme, true)
    }).pipe(Effect.scoped))

  it.effect("mistakes are reported with their paths", () =>
    Effect.gen(function*() {
      const message = yield* problems(`
hostname = "mx.example.com"
[[listeners]]
port = 25
tls = { mode = "disabled", acme = true, cert = "x.pem" }
[acme]
directory = "http://ca.example.com/dir"
email = "nobody"
domains = ["*.example.com", "not a name"]
http_listen = "0.0.0.0:25"
retry_base = "2h"
retry_max = "1h"
`)
      assert.include(message, "listeners[0].tls.mode: tls.acme needs TLS")
      assert.include(message, "listeners[0].tls.cert: not used with tls.acme")
      assert.include(message, "acme.directory: expected \"letsencrypt\" or \"letsencrypt-staging\" or an https:// directory URL")
      assert.include(message, "acme.email: not an e-mail address")
      assert.include(message, "acme.domains[0]: *.example.com: a wildcard needs the DNS-01 challenge")
      assert.include(message, "acme.domains[1]: not a host name")
      assert.include(message, "acme.http_listen: same port as listeners[0] (25)")
      assert.include(message, "acme.retry_base: 2h is more than acme.retry_max (1h)")
    }).pipe(Effect.scoped))

  it.effect("tls.acme without [acme], and a challenge type that does not exist", () =>
    Effect.gen(function*() {
      assert.include(yield* problems(`[[listeners]]\nport = 25\ntls = { mode = "optional", acme = true }\n`), "listeners[0].tls.acme: needs an [acme] section")
      assert.include(yield* problems(`[acme]\ndomains = ["mx.example.com"]\nchallenge = "dns-01"\n`), "acme.challenge")
    }).pipe(Effect.scoped))
})
