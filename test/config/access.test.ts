/**
 * Relay control, AUTH and policies from the config file:
 *
 * - every new key reaches the option the library takes (listener modes, relay, auth, each
 *   built-in rule with its own settings and `observe`, `policy_timeout`), and `Build` turns the
 *   rules into live ones with those names;
 * - mistakes are load errors naming the entry: a bad CIDR, an unknown rule, a submission
 *   listener without `auth.users_file` (or without TLS), a missing users file, duplicate rule names;
 * - a real `incoming serve --config F`: a users file made with `incoming users add` (password on
 *   stdin), a `submission` listener with a self-signed certificate where nodemailer with AUTH
 *   submits to a local mailbox but is refused (550 5.7.1) for a non-local domain, since delivery
 *   ("discard") has no way off-site, and without AUTH is refused, and a `rate_limit` rule from
 *   the file that defers the 4th message with 450 4.7.1.
 */
import { spawn } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import nodemailer from "nodemailer"
import * as Build from "../../src/config/Build.ts"
import { ConfigError } from "../../src/config/ConfigError.ts"
import { ruleTypes } from "../../src/config/IncomingConfig.ts"
import * as Load from "../../src/config/Load.ts"
import * as ZoneDns from "../../src/dns/ZoneDns.ts"
import * as Options from "../../src/config/Options.ts"
import * as Render from "../../src/config/Render.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"
import { testCertificate, testPrivateKey } from "../support/fixtures.ts"
import { serve } from "../support/server.ts"

const bin = new URL("../../src/bin/incoming.ts", import.meta.url).pathname

const workdir = (files: Record<string, string>) =>
  Effect.map(TestIncoming.tempDir("incoming-access-"), (dir) => {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
    return dir
  })

const load = (cwd: string, configPath = "incoming.toml") =>
  Load.load({ env: {}, cwd, configPath }).pipe(Effect.provide(NodeServices.layer))

const problems = (cwd: string) =>
  load(cwd).pipe(
    Effect.flip,
    Effect.map((e) => {
      assert.instanceOf(e, ConfigError)
      return e.message.split("\n")
    })
  )

const full = `
domains = ["example.test"]
policy_timeout = "3s"

[[listeners]]
name = "mx"
port = 25

[[listeners]]
name = "submission"
port = 587
mode = "submission"
allow_insecure_auth = true
tls = { mode = "optional", cert = "cert.pem", key = "key.pem" }

[relay]
trusted_networks = ["10.0.0.0/8", "::1", "192.0.2.7"]
recipients = ["alice@example.test", "Bob@Example.test"]

[auth]
users_file = "users"
max_failures_per_connection = 2
max_failures_per_ip = 7
ip_window = "5m"
failure_delay = "250ms"

[[policies]]
rule = "connection_limit"
max_per_ip = 10

[[policies]]
rule = "hello_required"
allow_bare_ip = true
require_fqdn = true

[[policies]]
rule = "tls_required"
observe = true

[[policies]]
rule = "rate_limit"
rate = 5
window = "60s"
observe = false
dimensions = ["ip", "recipient_domain"]
max_entries = 1000
sweep_interval = "30s"

[[policies]]
rule = "max_recipients"
name = "few-recipients"
max = 50

[[policies]]
rule = "size_limit"
max = "10MB"
`

const tlsFiles = { "cert.pem": testCertificate, "key.pem": testPrivateKey }

describe("relay, auth and policies: mapping", () => {
  it.effect("each key reaches the library's option", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": full, users: "", ...tlsFiles })
      const { config } = yield* load(dir)
      const runner = Options.toRunner(config)
      const [mx, sub] = runner.options.listeners
      assert.deepStrictEqual([mx?.mode, mx?.allowInsecureAuth], ["mx", false])
      assert.deepStrictEqual([sub?.mode, sub?.allowInsecureAuth], ["submission", true])
      assert.deepStrictEqual(runner.options.relay, {
        trustedNetworks: ["10.0.0.0/8", "::1", "192.0.2.7"],
        recipients: ["alice@example.test", "Bob@Example.test"]
      })
      assert.deepStrictEqual(runner.auth, {
        usersFile: join(dir, "users"),
        maxFailuresPerConnection: 2,
        maxFailuresPerIp: 7,
        ipWindowMs: 300_000,
        failureDelayMs: 250,
        allowInsecure: true
      })
      assert.strictEqual(runner.policies.timeoutMs, 3000)
      assert.deepStrictEqual(runner.policies.rules, [
        { rule: "connection_limit", options: { name: "connection_limit", observe: false, max: 10 } },
        { rule: "hello_required", options: { name: "hello_required", observe: false, allowBareIp: true, requireFqdn: true } },
        { rule: "tls_required", options: { name: "tls_required", observe: true } },
        {
          rule: "rate_limit",
          options: {
            name: "rate_limit",
            observe: false,
            rate: 5,
            window: 60_000,
            maxEntries: 1000,
            sweepInterval: 30_000,
            dimensions: { ip: true, sender: false, recipientDomain: true }
          }
        },
        { rule: "max_recipients", options: { name: "few-recipients", observe: false, max: 50 } },
        { rule: "size_limit", options: { name: "size_limit", observe: false, maxSize: 10_000_000 } }
      ])

      // Build: live rules in the file's order, with the file's names and modes; the user store.
      const options = yield* Effect.scoped(Build.options(runner)).pipe(Effect.provide(ZoneDns.layerEmpty))
      assert.deepStrictEqual(options.policies?.rules.map((r) => [r.name, r.observe === true]), [
        ["connection_limit", false],
        ["hello_required", false],
        ["tls_required", true],
        ["rate_limit", false],
        ["few-recipients", false],
        ["size_limit", false]
      ])
      assert.strictEqual(options.policies?.timeoutMs, 3000)
      assert.strictEqual(options.auth?.maxFailuresPerIp, 7)
      assert.strictEqual(Duration.toMillis(Duration.fromInputUnsafe(options.auth?.failureDelay ?? 0)), 250)
      assert.isFunction(options.auth?.store.verify)

      // check-config's document is a valid config again.
      const rendered = Render.render(config, "toml")
      assert.include(rendered, `rule = "rate_limit"`)
      assert.include(rendered, `users_file = "${join(dir, "users")}"`)
      writeFileSync(join(dir, "again.toml"), rendered)
      const again = yield* load(dir, "again.toml")
      assert.deepStrictEqual(Options.toRunner(again.config).policies, runner.policies)
    }))

  it.effect("defaults: mx listeners, no AUTH, no rules, every rate_limit dimension", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `[[policies]]\nrule = "rate_limit"\n` })
      const runner = Options.toRunner((yield* load(dir)).config)
      assert.strictEqual(runner.options.listeners[0]?.mode, "mx")
      assert.strictEqual(runner.auth, undefined)
      assert.deepStrictEqual(runner.options.relay, { trustedNetworks: [] })
      assert.strictEqual(runner.policies.timeoutMs, 10_000)
      assert.deepStrictEqual(runner.policies.rules, [{
        rule: "rate_limit",
        options: {
          name: "rate_limit",
          observe: false,
          rate: 5,
          window: 60_000,
          maxEntries: 100_000,
          sweepInterval: 60_000,
          dimensions: { ip: true, sender: true, recipientDomain: true }
        }
      }])
    }))
})

describe("relay, auth and policies: errors name the entry", () => {
  it.effect("a bad CIDR, a mailbox outside the domains, an unknown rule, a rule without its setting", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": [
          `domains = ["example.test"]`,
          `[relay]\ntrusted_networks = ["10.0.0.0/8", "10.0.0/33", "example.test"]\nrecipients = ["alice", "bob@other.test"]`,
          `[[policies]]\nrule = "tls_required"`,
          `[[policies]]\nrule = "tarpit"`,
          `[[policies]]\nrule = "max_recipients"`,
          `[[policies]]\nmax = 3`
        ].join("\n")
      })
      // Every rule, in the order of the schema (the list grows with each new rule).
      const expected = ruleTypes.map((t) => `"${t}"`).join(" | ")
      assert.match(expected, /^"rate_limit" \| "tls_required" \| "hello_required" \| "max_recipients" \| "size_limit" \| "connection_limit" \| "spf" \| "dkim" \| "dmarc" \| "arc" \| "iprev" \| "milter" \| "dnsbl" \| "greylist" \| "rspamd"/)
      assert.deepStrictEqual(yield* problems(dir), [
        `incoming.toml: policies[1].rule: unknown rule "tarpit": expected ${expected}`,
        `incoming.toml: policies[3].rule: missing (required): one of ${expected}`,
        `incoming.toml: policies[2].max: missing (required)`
      ])
      // Once the rules are right, the checks after decoding.
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["example.test"]`,
        `[relay]\ntrusted_networks = ["10.0.0.0/8", "10.0.0/33", "example.test"]\nrecipients = ["alice", "bob@other.test"]`,
        `[[policies]]\nrule = "tls_required"`,
        `[[policies]]\nrule = "tls_required"\nobserve = true`
      ].join("\n"))
      assert.deepStrictEqual(yield* problems(dir), [
        `incoming.toml: relay.trusted_networks[1]: not an IP address or CIDR range (like "10.0.0.0/8" or "::1"): "10.0.0/33"`,
        `incoming.toml: relay.trusted_networks[2]: not an IP address or CIDR range (like "10.0.0.0/8" or "::1"): "example.test"`,
        `incoming.toml: relay.recipients[0]: expected a mailbox like "user@example.test", got "alice"`,
        `incoming.toml: relay.recipients[1]: "bob@other.test" is not in one of domains (example.test)`,
        `incoming.toml: policies[1].name: same name as policies[0] ("tls_required"): give each a name, it labels their verdicts and metrics`
      ])
    }))

  it.effect("milter rules: mapping, and a bad address or a timeout not under policy_timeout named", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": [
          `domains = ["example.test"]`,
          `[[policies]]\nrule = "milter"\nname = "rspamd"\naddress = "inet:127.0.0.1:11332"\ntimeout = "3s"\non_error = "tempfail"`,
          `[[policies]]\nrule = "milter"\naddress = "unix:/run/opendkim/opendkim.sock"\nobserve = true`
        ].join("\n")
      })
      const { config } = yield* load(dir)
      assert.deepStrictEqual(Options.toRunner(config).policies.rules.map((r): readonly [string, unknown] => [r.rule, r.options]), [
        ["milter", { name: "rspamd", observe: false, address: { _tag: "inet", host: "127.0.0.1", port: 11332 }, timeoutMs: 3_000, onError: "tempfail" }],
        ["milter", { name: "milter", observe: true, address: { _tag: "unix", path: "/run/opendkim/opendkim.sock" }, timeoutMs: 5_000, onError: "accept" }]
      ])
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["example.test"]`,
        `policy_timeout = "6s"`,
        `[[policies]]\nrule = "milter"\naddress = "127.0.0.1:11332"`,
        `[[policies]]\nrule = "milter"\nname = "slow"\naddress = "inet:[::1]:11332"\ntimeout = "6s"`,
        `[[policies]]\nrule = "milter"\nname = "badport"\naddress = "inet:localhost:99999"\non_error = "reject"`
      ].join("\n"))
      assert.deepStrictEqual(yield* problems(dir), [
        `incoming.toml: policies[2].on_error: expected "accept" | "tempfail", got "reject"`
      ])
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["example.test"]`,
        `policy_timeout = "6s"`,
        `[[policies]]\nrule = "milter"\naddress = "127.0.0.1:11332"`,
        `[[policies]]\nrule = "milter"\nname = "slow"\naddress = "inet:[::1]:11332"\ntimeout = "6s"`,
        `[[policies]]\nrule = "milter"\nname = "badport"\naddress = "inet:localhost:99999"`
      ].join("\n"))
      assert.deepStrictEqual(yield* problems(dir), [
        `incoming.toml: policies[0].address: not a milter address: "127.0.0.1:11332" (expected "inet:HOST:PORT" or "unix:/path")`,
        `incoming.toml: policies[1].timeout: 6s is not under policy_timeout (6s): the policy deadline would answer 451 before on_error applies`,
        `incoming.toml: policies[2].address: port 99999 out of range in "inet:localhost:99999"`
      ])
    }))

  it.effect("[dns] and the authentication rules: mapping, and bad resolver addresses or seal keys named", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": [
          `domains = ["example.test"]`,
          `[dns]\nservers = ["127.0.0.1:5353", "[::1]:53"]\ntimeout = "500ms"\ntries = 3\ncache_size = 10\nunknown_ttl = "1m"`,
          `[[policies]]\nrule = "spf"\nfail = "reject"\ntemperror = "defer"`,
          `[[policies]]\nrule = "dmarc"\nobserve = true\ncheck_trusted = true`,
          `[[policies]]\nrule = "arc"\nseal = { domain = "example.test", selector = "arc", private_key_file = "arc.pem" }`
        ].join("\n"),
        "arc.pem": testPrivateKey
      })
      const { config } = yield* load(dir)
      const runner = Options.toRunner(config)
      assert.deepStrictEqual(runner.dns, {
        servers: ["127.0.0.1:5353", "[::1]:53"],
        timeoutMs: 500,
        tries: 3,
        cache: { maxEntries: 10, maxTtlMs: 3_600_000, unknownTtlMs: 60_000, negativeTtlMs: 60_000 }
      })
      assert.deepStrictEqual(runner.policies.rules.map((r): readonly [string, unknown] => [r.rule, r.options]), [
        ["spf", { name: "spf", observe: false, checkAuthenticated: false, checkTrusted: false, temperror: "defer", fail: "reject", permerror: "record" }],
        ["dmarc", { name: "dmarc", observe: true, checkAuthenticated: false, checkTrusted: true, temperror: "continue" }],
        ["arc", { name: "arc", observe: false, checkAuthenticated: false, checkTrusted: false, temperror: "continue", seal: true }]
      ])
      // The rules build on the server's Dns, the seal key read from its file.
      const options = yield* Effect.scoped(Build.options({ ...runner, options: { ...runner.options, hostname: "mx.test" } })).pipe(
        Effect.provide(ZoneDns.layerEmpty)
      )
      assert.deepStrictEqual(options.policies?.rules.map((r) => r.name), ["spf", "dmarc", "arc"])
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["example.test"]`,
        `[dns]\nservers = ["dns.example.test", "127.0.0.1:5353"]`,
        `[[policies]]\nrule = "arc"\nseal = { domain = "example.test", selector = "arc", private_key_file = "missing.pem" }`
      ].join("\n"))
      const found = yield* problems(dir)
      assert.strictEqual(found.length, 2, found.join("\n"))
      assert.match(found[0]!, /^incoming\.toml: policies\[0\]\.seal\.private_key_file: not readable by this user \(or not found\): \S*missing\.pem$/)
      assert.match(found[1]!, /^incoming\.toml: dns\.servers\[0\]: not a resolver address .*"dns\.example\.test"/)
    }))

  it.effect("a submission listener without auth.users_file or TLS; a users file that does not exist", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": `[[listeners]]\nname = "sub"\nport = 587\nmode = "submission"\n[[listeners]]\nport = 465\nmode = "submissions"\ntls = { mode = "implicit", cert = "cert.pem", key = "key.pem" }\n`,
        "missing.toml": `[[listeners]]\nport = 25\n[auth]\nusers_file = "nobody"\n`,
        ...tlsFiles
      })
      assert.deepStrictEqual(yield* problems(dir), [
        `incoming.toml: listeners[0].mode: listener "sub" is mode "submission", which requires AUTH: set auth.users_file (users are added with "incoming users add NAME --file PATH")`,
        `incoming.toml: listeners[0].tls.mode: listener "sub" is mode "submission", which requires TLS: set tls.mode ("optional" or "required") with a cert and key`,
        `incoming.toml: listeners[1].mode: listener "smtp:127.0.0.1:465" is mode "submissions", which requires AUTH: set auth.users_file (users are added with "incoming users add NAME --file PATH")`
      ])
      const missing = yield* load(dir, "missing.toml").pipe(Effect.flip)
      assert.strictEqual(
        missing.message,
        `missing.toml: auth.users_file: file not found: ${join(dir, "nobody")} (create it with: incoming users add NAME --file ${join(dir, "nobody")})`
      )
    }))
})

/** `incoming users add NAME --file F` with the password on stdin. */
const addUser = (cwd: string, name: string, file: string, password: string) =>
  Effect.callback<{ readonly code: number | null; readonly output: string }>((resume) => {
    const child = spawn(process.execPath, [bin, "users", "add", name, "--file", file], { cwd, stdio: ["pipe", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (c: Buffer) => (output += c.toString()))
    child.stderr.on("data", (c: Buffer) => (output += c.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code, output })))
    child.stdin.end(`${password}\n`)
  })

const submit = (port: number, options: { readonly auth: boolean; readonly to: string }) =>
  Effect.promise(async () => {
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      ...(options.auth ? { auth: { user: "alice", pass: "correct horse" } } : {})
    })
    try {
      const info = await transport.sendMail({ from: "alice@example.test", to: options.to, subject: "submission", text: "x" })
      return { code: Number(info.response.slice(0, 3)), text: info.response }
    } catch (e) {
      const err = e as { responseCode?: number; response?: string; message: string }
      return { code: err.responseCode ?? 0, text: err.response ?? err.message }
    } finally {
      transport.close()
    }
  })

const portOf = (line: string) => Number(/listening on (?:\[[^\]]+\]|[^\s":]+):(\d+)/.exec(line)?.[1])

describe.skipIf(!hasOpenssl)("incoming serve --config with AUTH, a submission listener and a rate limit", () => {
  it.live("AUTH submits (a foreign domain without an off-site route is 550 5.7.1), no AUTH is refused; the 4th message from one sender is deferred", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-access-serve-")
      selfSignedCert(dir)
      const added = yield* addUser(dir, "alice", "users", "correct horse")
      assert.strictEqual(added.code, 0, added.output)
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["example.test"]`,
        `data_dir = "data"`,
        `[[listeners]]\nname = "mx"\nport = 0`,
        `[[listeners]]\nname = "submission"\nmode = "submission"\nport = 0\ntls = { mode = "optional", cert = "cert.pem", key = "key.pem" }`,
        `[auth]\nusers_file = "users"\nfailure_delay = "0s"`,
        `[delivery]\nadapter = "discard"`,
        // Per sender only, so the submission exchanges above do not use up the burst's budget.
        `[[policies]]\nrule = "rate_limit"\nrate = 3\nwindow = "1m"\ndimensions = ["sender"]`
      ].join("\n"))
      // Started from elsewhere: users_file and the certificate are relative to the file.
      const server = yield* serve(["--config", join(dir, "incoming.toml")], join(dir, ".."))
      const submission = portOf(yield* server.waitFor(/listening on .*"listener":"submission"/))
      const mx = portOf(yield* server.waitFor(/listening on .*"listener":"mx"/))
      assert.isAbove(submission, 0)
      assert.isAbove(mx, 0)

      // Authenticated, but delivery is "discard": nowhere off-site, so refused rather than swallowed.
      const relayed = yield* submit(submission, { auth: true, to: "friend@elsewhere.test" })
      assert.strictEqual(relayed.code, 550, relayed.text)
      assert.match(relayed.text, /5\.7\.1 Relaying not available/)
      const local = yield* submit(submission, { auth: true, to: "colleague@example.test" })
      assert.strictEqual(local.code, 250, local.text)
      const anonymous = yield* submit(submission, { auth: false, to: "friend@elsewhere.test" })
      assert.strictEqual(anonymous.code, 530, anonymous.text)
      assert.match(anonymous.text, /5\.7\.0 Authentication required/)
      const wrong = yield* Effect.promise(async () => {
        const t = nodemailer.createTransport({ host: "127.0.0.1", port: submission, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: "alice", pass: "wrong" } })
        try {
          await t.sendMail({ from: "alice@example.test", to: "friend@elsewhere.test", text: "x" })
          return 0
        } catch (e) {
          return (e as { responseCode?: number }).responseCode ?? 0
        } finally {
          t.close()
        }
      })
      assert.strictEqual(wrong, 535, "a wrong password is 535 5.7.8")
      const open = yield* SmtpClient.send({ port: mx, from: "a@remote.test", to: ["friend@elsewhere.test"], data: "x" })
      assert.strictEqual(open.code, 554, "the mx listener is no open relay")

      const codes: Array<number> = []
      for (let i = 0; i < 4; i++) {
        const r = yield* SmtpClient.send({ port: mx, from: "burst@remote.test", to: ["user@example.test"], data: "Subject: b\r\n\r\nx\r\n" })
        codes.push(r.code)
        if (i === 3) assert.strictEqual(r.text, "4.7.1 Rate limit exceeded, try again later")
      }
      assert.deepStrictEqual(codes, [250, 250, 250, 450])
    }), { timeout: 60_000 })
})
