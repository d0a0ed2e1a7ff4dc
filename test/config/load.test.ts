/**
 * Loading the configuration: the same settings written as TOML, JSON and YAML give the same
 * `IncomingOptions`; every kind of mistake is reported with its source, the path to the field
 * and what was expected; `${VAR}` references and `INCOMING_*` variables reach the right field;
 * flags beat variables beat the file; the file lookup order; relative paths.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { ConfigError } from "../../src/config/ConfigError.ts"
import * as Load from "../../src/config/Load.ts"
import * as Options from "../../src/config/Options.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import { testCertificate, testPrivateKey } from "../support/fixtures.ts"

const toml = `
hostname = "mx.example.test"
domains = ["example.test", "other.test"]
data_dir = "state"
drain_timeout = "45s"

[[listeners]]
name = "mx"
host = "0.0.0.0"
port = 2525
max_size = "10MiB"
idle_timeout = "2m"
greeting_delay = 500
line_endings = "normalize"

[[listeners]]
name = "submission"
port = 2587
max_recipients = 20
max_connections_per_ip = 5
hook_timeout = "1m30s"

[queue]
backend = "memory"
max_depth = 500
dead_letter_ttl = "3d"

[delivery]
adapter = "discard"
workers = 2
max_attempts = 5
lease = "90s"
timeout = 30000
[delivery.backoff]
base = "10s"
max = "1h"
jitter = 0

[logging]
format = "json"
level = "debug"

[admin]
listen = "127.0.0.1:9025"
`

const json = JSON.stringify({
  hostname: "mx.example.test",
  domains: ["example.test", "other.test"],
  data_dir: "state",
  drain_timeout: "45s",
  listeners: [
    { name: "mx", host: "0.0.0.0", port: 2525, max_size: "10MiB", idle_timeout: "2m", greeting_delay: 500, line_endings: "normalize" },
    { name: "submission", port: 2587, max_recipients: 20, max_connections_per_ip: 5, hook_timeout: "1m30s" }
  ],
  queue: { backend: "memory", max_depth: 500, dead_letter_ttl: "3d" },
  delivery: { adapter: "discard", workers: 2, max_attempts: 5, lease: "90s", timeout: 30000, backoff: { base: "10s", max: "1h", jitter: 0 } },
  logging: { format: "json", level: "debug" },
  admin: { listen: "127.0.0.1:9025" }
})

const yaml = `
hostname: mx.example.test
domains: [example.test, other.test]
data_dir: state
drain_timeout: 45s
listeners:
  - name: mx
    host: 0.0.0.0
    port: 2525
    max_size: 10MiB
    idle_timeout: 2m
    greeting_delay: 500
    line_endings: normalize
  - name: submission
    port: 2587
    max_recipients: 20
    max_connections_per_ip: 5
    hook_timeout: 1m30s
queue:
  backend: memory
  max_depth: 500
  dead_letter_ttl: 3d
delivery:
  adapter: discard
  workers: 2
  max_attempts: 5
  lease: 90s
  timeout: 30000
  backoff: { base: 10s, max: 1h, jitter: 0 }
logging: { format: json, level: debug }
admin:
  listen: "127.0.0.1:9025"
`

/** Writes `files` into a fresh directory and returns it. */
const workdir = (files: Record<string, string>) =>
  Effect.map(TestIncoming.tempDir("incoming-config-"), (dir) => {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(join(dir, name, ".."), { recursive: true })
      writeFileSync(join(dir, name), text)
    }
    return dir
  })

const load = (options: Partial<Load.LoadOptions> & { readonly cwd: string }) =>
  Load.load({ env: {}, searchPaths: ["./incoming.toml"], ...options }).pipe(Effect.provide(NodeServices.layer))

/** The lines of the error a load fails with. */
const problems = (options: Partial<Load.LoadOptions> & { readonly cwd: string }) =>
  load(options).pipe(
    Effect.flip,
    Effect.map((e) => {
      assert.instanceOf(e, ConfigError)
      return e.message.split("\n")
    })
  )

describe("config files", () => {
  it.effect("TOML, JSON and YAML with the same settings give the same IncomingOptions", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": toml, "incoming.json": json, "incoming.yaml": yaml })
      const fromToml = Options.toRunner((yield* load({ cwd: dir })).config)
      const fromJson = Options.toRunner((yield* load({ cwd: dir, configPath: "incoming.json" })).config)
      const fromYaml = Options.toRunner((yield* load({ cwd: dir, configPath: join(dir, "incoming.yaml") })).config)
      assert.deepStrictEqual(fromJson, fromToml)
      assert.deepStrictEqual(fromYaml, fromToml)

      const o = fromToml.options
      assert.strictEqual(o.hostname, "mx.example.test")
      assert.deepStrictEqual(o.domains, ["example.test", "other.test"])
      assert.strictEqual(o.dataDir, join(dir, "state"), "relative paths in a file are relative to the file")
      assert.strictEqual(o.drainTimeoutMs, 45_000)
      const [mx, sub] = o.listeners
      assert.deepInclude(mx, {
        name: "mx",
        host: "0.0.0.0",
        port: 2525,
        maxSize: 10 * 1024 * 1024,
        idleTimeoutMs: 120_000,
        greetingDelayMs: 500,
        lineEndings: "normalize",
        maxRecipients: 100
      })
      assert.deepInclude(sub, { name: "submission", host: "127.0.0.1", maxRecipients: 20, maxConnectionsPerIp: 5, hookTimeoutMs: 90_000 })
      assert.deepStrictEqual(mx!.tls, { mode: "disabled" })
      assert.deepStrictEqual(o.queue, { kind: "memory", maxDepth: 500, deadLetterTtlMs: 3 * 24 * 3600_000, priorityMaxWaitMs: 3600_000 })
      assert.deepStrictEqual(o.dispatcher, {
        workers: 2,
        maxAttempts: 5,
        leaseMs: 90_000,
        deliveryTimeoutMs: 30_000,
        maxLifetimeMs: 5 * 24 * 3600_000,
        bounces: { reportingMta: o.hostname!, localDomains: o.domains! },
        backoff: { baseMs: 10_000, maxMs: 3600_000, jitter: 0 }
      })
      assert.deepStrictEqual(o.admin, { host: "127.0.0.1", port: 9025 })
      assert.deepStrictEqual(fromToml.delivery, { adapter: "discard" })
      assert.deepStrictEqual(fromToml.logging, { format: "json", level: "Debug" })
    }))

  it.effect("without a file: the defaults of the CLI (one listener on 127.0.0.1:2525, sqlite, maildir)", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({})
      const loaded = yield* load({ cwd: dir })
      assert.isUndefined(loaded.file)
      const r = Options.toRunner(loaded.config)
      assert.deepStrictEqual(r.options.domains, ["localhost"])
      assert.deepInclude(r.options.listeners[0], { host: "127.0.0.1", port: 2525, maxSize: 25 * 1024 * 1024 })
      assert.deepStrictEqual(r.options.queue, { kind: "sqlite", maxDepth: 100_000, deadLetterTtlMs: 7 * 24 * 3600_000, priorityMaxWaitMs: 3600_000, inlineThreshold: 256 * 1024 })
      assert.strictEqual(r.options.dataDir, join(dir, "var/incoming"))
      assert.deepStrictEqual(r.delivery, { adapter: "maildir", root: join(dir, "var/mail") })
      assert.isUndefined(r.options.admin, "the admin endpoint is off by default")
    }))

  it.effect("lookup: --config, then ./incoming.toml, then the next search path; a missing --config is an error", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `domains = ["cwd.test"]`, "etc/incoming.toml": `domains = ["etc.test"]`, "x.json": `{"domains":["x.test"]}` })
      const searchPaths = ["./incoming.toml", join(dir, "etc/incoming.toml")]
      assert.deepStrictEqual((yield* load({ cwd: dir, searchPaths, configPath: "x.json" })).config.domains, ["x.test"])
      assert.deepStrictEqual((yield* load({ cwd: dir, searchPaths })).config.domains, ["cwd.test"])
      const elsewhere = join(dir, "etc")
      assert.deepStrictEqual((yield* load({ cwd: elsewhere, searchPaths })).config.domains, ["etc.test"])
      assert.deepStrictEqual(yield* problems({ cwd: dir, configPath: "nope.toml" }), ["nope.toml: file not found"])
    }))
})

describe("config errors name the source, the field and what was expected", () => {
  it.effect("unknown keys, with their path", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `colour = "blue"\n[[listeners]]\nport = 25\n[[listeners]]\nport = 26\nmax_sise = "1MB"\n[queue]\nbackend = "memory"\nmax_deep = 3\n` })
      assert.deepStrictEqual(yield* problems({ cwd: dir }), [
        "incoming.toml: colour: unknown key",
        "incoming.toml: listeners[1].max_sise: unknown key",
        "incoming.toml: queue.max_deep: unknown key"
      ])
    }))

  it.effect("wrong types and values, with their path and the value given", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `domains = "example.test"\n[[listeners]]\nport = "twenty-five"\n[logging]\nlevel = "loud"\n` })
      assert.deepStrictEqual(yield* problems({ cwd: dir }), [
        `incoming.toml: domains: expected array, got "example.test"`,
        `incoming.toml: listeners[0].port: expected number, got "twenty-five"`,
        `incoming.toml: logging.level: expected "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "none", got "loud"`
      ])
      const ports = yield* workdir({ "incoming.json": `{"listeners":[{"port":70000}],"delivery":{"workers":0}}` })
      assert.deepStrictEqual(yield* problems({ cwd: ports, configPath: "incoming.json" }), [
        "incoming.json: listeners[0].port: expected a value between 0 and 65535, got 70000",
        "incoming.json: delivery.workers: expected a value greater than or equal to 1, got 0"
      ])
    }))

  it.effect("bad durations and sizes", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.yaml": `drain_timeout: soon\nlisteners:\n  - port: 25\n    max_size: 25 parsecs\n    idle_timeout: 5x\nqueue:\n  inline_threshold: -3\n`
      })
      assert.deepStrictEqual(yield* problems({ cwd: dir, configPath: "incoming.yaml" }), [
        `incoming.yaml: drain_timeout: expected a duration like "30s", "5m", "1h30m", "7d" or a number of milliseconds, got "soon"`,
        `incoming.yaml: listeners[0].max_size: expected a size like "25MiB", "256KiB", "10MB" or a number of bytes, got "25 parsecs"`,
        `incoming.yaml: listeners[0].idle_timeout: expected a duration like "30s", "5m", "1h30m", "7d" or a number of milliseconds, got "5x"`,
        "incoming.yaml: queue.inline_threshold: expected a whole, non-negative number of bytes, got -3"
      ])
    }))

  it.effect("a bad listen address", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `[admin]\nlisten = "localhost"\n` })
      assert.deepStrictEqual(yield* problems({ cwd: dir }), [
        `incoming.toml: admin.listen: bad listen address: "localhost" is not HOST:PORT (IPv6 as [::1]:PORT)`
      ])
      const flag = yield* workdir({})
      assert.deepStrictEqual(yield* problems({ cwd: flag, flags: { listen: ["127.0.0.1:99999"] } }), [
        "--listen: port 99999 is out of range (0-65535)"
      ])
    }))

  it.effect("TLS: a missing certificate file, a mode without a key", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "tls/cert.pem": testCertificate,
        "tls/key.pem": testPrivateKey,
        "incoming.toml": [
          "[[listeners]]\nport = 25\ntls = { mode = \"optional\", cert = \"tls/cert.pem\", key = \"tls/key.pem\" }",
          "[[listeners]]\nport = 465\ntls = { mode = \"implicit\", cert = \"/x.pem\", key = \"tls/key.pem\" }",
          "[[listeners]]\nport = 587\ntls = { mode = \"required\", cert = \"tls/cert.pem\" }"
        ].join("\n")
      })
      assert.deepStrictEqual(yield* problems({ cwd: dir }), [
        "incoming.toml: listeners[1].tls.cert: file not found: /x.pem",
        `incoming.toml: listeners[2].tls.key: required when tls.mode is "required"`
      ])
    }))

  it.effect("syntax errors give the line; cross-field checks", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": `domains = ["a.test"]\nport = = 3\n`,
        "dup.toml": `[[listeners]]\nport = 25\n[[listeners]]\nport = 25\ncommand_timeout = "30s"\nhook_timeout = "1m"\n[delivery.backoff]\nbase = "5h"\n`
      })
      const [syntax] = yield* problems({ cwd: dir })
      assert.match(syntax!, /^incoming\.toml:2:\d+: syntax error: /)
      assert.deepStrictEqual(yield* problems({ cwd: dir, configPath: "dup.toml" }), [
        "dup.toml: listeners[1].command_timeout: 30s must be longer than hook_timeout (1m), which runs inside it",
        "dup.toml: listeners[1]: same address as listeners[0] (127.0.0.1:25)",
        "dup.toml: listeners[1].name: same name as listeners[0] (\"smtp:127.0.0.1:25\")",
        "dup.toml: delivery.backoff.base: 5h is more than delivery.backoff.max (4h)"
      ])
    }))
})

describe("the environment", () => {
  it.effect("${VAR} references: secrets, typed values, fallbacks, escapes; an unset one is an error", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": [
          `hostname = "mx.\${ZONE}"`,
          `domains = ["\${ZONE}", "literal-$\${NOT_A_REF}"]`,
          `[[listeners]]\nport = "\${SMTP_PORT}"\nmax_size = "\${MAX_SIZE:-1MB}"`,
          `[admin]\nlisten = "127.0.0.1:9025"\nauth_token = "\${ADMIN_TOKEN}"`
        ].join("\n")
      })
      const env = { ZONE: "example.test", SMTP_PORT: "2600", ADMIN_TOKEN: "s3cret-token" }
      const { config } = yield* load({ cwd: dir, env })
      assert.strictEqual(config.hostname, "mx.example.test")
      assert.deepStrictEqual(config.domains, ["example.test", "literal-${NOT_A_REF}"])
      assert.strictEqual(config.listeners[0].port, 2600, "a whole-value reference takes the type the schema wants")
      assert.strictEqual(config.listeners[0].max_size, 1_000_000)
      assert.isTrue(Redacted.isRedacted(config.admin?.auth_token))
      assert.strictEqual(Redacted.value(config.admin!.auth_token!), "s3cret-token")
      assert.notInclude(String(config.admin?.auth_token), "s3cret", "a secret prints as <redacted>")

      assert.deepStrictEqual(yield* problems({ cwd: dir, env: { ZONE: "example.test", SMTP_PORT: "2600" } }), [
        "incoming.toml: admin.auth_token: environment variable ADMIN_TOKEN is not set (referenced as ${ADMIN_TOKEN})"
      ])
    }))

  it.effect("INCOMING_* variables set the field their name spells, typed by the schema", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `domains = ["file.test"]\n[[listeners]]\nport = 25\nmax_connections = 7\n` })
      const env = {
        INCOMING_ADMIN_LISTEN: "127.0.0.1:9100",
        INCOMING_ADMIN_AUTH_TOKEN: "from-env",
        INCOMING_LISTENERS_0_PORT: "2626",
        INCOMING_LISTENERS_0_MAX_CONNECTIONS_PER_IP: "3",
        INCOMING_LISTENERS_1_PORT: "2627",
        INCOMING_QUEUE_MAX_DEPTH: "42",
        INCOMING_QUEUE_DEAD_LETTER_TTL: "2d",
        INCOMING_DOMAINS: "a.test, b.test",
        INCOMING_DELIVERY_BACKOFF_JITTER: "0.5",
        UNRELATED: "x"
      }
      const { config } = yield* load({ cwd: dir, env })
      assert.deepStrictEqual(config.admin?.listen, { host: "127.0.0.1", port: 9100 })
      assert.strictEqual(Redacted.value(config.admin!.auth_token!), "from-env")
      assert.strictEqual(config.listeners[0].port, 2626)
      assert.strictEqual(config.listeners[0].max_connections, 7, "the file's other settings stay")
      assert.strictEqual(config.listeners[0].max_connections_per_ip, 3)
      assert.strictEqual(config.listeners[1]?.port, 2627, "the next index appends a listener")
      assert.strictEqual(config.queue.max_depth, 42)
      assert.strictEqual(config.queue.dead_letter_ttl, 2 * 24 * 3600_000)
      assert.deepStrictEqual(config.domains, ["a.test", "b.test"])
      assert.strictEqual(config.delivery.backoff.jitter, 0.5)
    }))

  it.effect("a bad INCOMING_* value is blamed on the variable; one that names no setting is an error", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `[[listeners]]\nport = 25\n` })
      assert.deepStrictEqual(yield* problems({ cwd: dir, env: { INCOMING_LISTENERS_0_PORT: "abc", INCOMING_DRAIN_TIMEOUT: "later" } }), [
        `env INCOMING_DRAIN_TIMEOUT: drain_timeout: expected a duration like "30s", "5m", "1h30m", "7d" or a number of milliseconds, got "later"`,
        `env INCOMING_LISTENERS_0_PORT: listeners[0].port: expected number, got "abc"`
      ])
      const [typo] = yield* problems({ cwd: dir, env: { INCOMING_QUEUE_MAX_DEEP: "3" } })
      assert.match(typo!, /^env INCOMING_QUEUE_MAX_DEEP: names no setting/)
      assert.deepStrictEqual(yield* problems({ cwd: dir, env: { INCOMING_LISTENERS_5_PORT: "1" } }), [
        "env INCOMING_LISTENERS_5_PORT: listeners[5].port: listeners has 1 element(s); index 5 would leave a gap"
      ])
      // Referenced from the file, an INCOMING_ name is a plain variable, not a setting.
      const ref = yield* workdir({ "incoming.toml": `hostname = "\${INCOMING_HOST_NAME}"\n` })
      assert.strictEqual((yield* load({ cwd: ref, env: { INCOMING_HOST_NAME: "mx.ref.test" } })).config.hostname, "mx.ref.test")
    }))

  it.effect("precedence: flags over INCOMING_* over the file over defaults", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": `drain_timeout = "10s"\ndata_dir = "from-file"\n[[listeners]]\nname = "mx"\nport = 25\nmax_recipients = 9\n[delivery]\nworkers = 1\nmax_attempts = 3\n`
      })
      const { config } = yield* load({
        cwd: dir,
        env: { INCOMING_DELIVERY_WORKERS: "2", INCOMING_DELIVERY_MAX_ATTEMPTS: "4", INCOMING_DATA_DIR: "from-env" },
        flags: { workers: 3, listen: ["127.0.0.1:0", "[::1]:0"], maxSize: 1000, dataDir: "from-flag" }
      })
      assert.strictEqual(config.delivery.workers, 3, "flag beats env")
      assert.strictEqual(config.delivery.max_attempts, 4, "env beats file")
      assert.strictEqual(config.drain_timeout, 10_000, "file beats default")
      assert.strictEqual(config.data_dir, join(dir, "from-flag"), "paths from flags are relative to the working directory")
      assert.deepStrictEqual(config.listeners.map((l) => [l.host, l.port, l.name, l.max_recipients, l.max_size]), [
        ["127.0.0.1", 0, undefined, 9, 1000],
        ["::1", 0, undefined, 9, 1000]
      ], "--listen replaces the listeners, which keep the file's first listener's settings")
    }))
})
