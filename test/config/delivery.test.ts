/**
 * Delivery through the config file: `[adapters.<name>]` and `[[routes]]`.
 *
 * - In process: the file maps onto the Router's and the adapters' own options (secrets stay
 *   `Redacted`, `${VAR}` reaches secrets and numbers inside adapter tables, relative paths are
 *   relative to the file), and every kind of mistake is one line naming its path.
 * - As processes: `serve --config F` with a webhook route and a Maildir catch-all really
 *   delivers (a signed POST reaches an HTTP server here, the other recipient lands in the
 *   Maildir), and `check-config` prints neither the webhook secret nor the relay password.
 */
import { chmodSync, mkdirSync, readdirSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { ConfigError } from "../../src/config/ConfigError.ts"
import * as Load from "../../src/config/Load.ts"
import * as Options from "../../src/config/Options.ts"
import * as Render from "../../src/config/Render.ts"
import type * as Payload from "../../src/delivery/webhook/Payload.ts"
import * as Signature from "../../src/delivery/webhook/Signature.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as DkimKeys from "../support/dkim.ts"
import { serve, runCli } from "../support/server.ts"


const workdir = (files: Record<string, string>) =>
  Effect.map(TestIncoming.tempDir("incoming-delivery-config-"), (dir) => {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
    return dir
  })

const load = (cwd: string, env: Record<string, string> = {}) =>
  Load.load({ cwd, env, configPath: "incoming.toml" }).pipe(Effect.provide(NodeServices.layer))

const problems = (text: string, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const dir = yield* workdir({ "incoming.toml": text })
    const e = yield* Effect.flip(load(dir, env))
    assert.instanceOf(e, ConfigError)
    return e.message.split("\n")
  })

const routed = `
domains = ["example.test"]

[adapters.hook]
type = "webhook"
url = "https://app.example.test/hooks/mail"
secret = "\${HOOK_SECRET}"
headers = { authorization = "Bearer \${HOOK_TOKEN}" }
timeout = "20s"
max_redirects = 2
raw = "multipart"
parts = { text = true }
responses = { "404" = "retry", "3xx" = "reject" }
tls = { verify = false }

[adapters.relay]
type = "smtp"
host = "smtp.provider.test"
port = "\${RELAY_PORT}"
starttls = "required"
auth = { user = "incoming", password = "\${RELAY_PASSWORD}" }
helo = "mx.example.test"

[adapters.dovecot]
type = "lmtp"
socket = "run/lmtp"

[adapters.mail]
type = "maildir"

[[routes]]
name = "support"
match = ["support@example.test"]
adapter = "hook"
acknowledge = "sync"
schedule = { kind = "delays", delays = ["30s", "2m", "10m"], jitter = 0.1 }
max_attempts = 6
concurrency = 8
timeout = "20s"

[[routes]]
match = ["*@example.test"]
adapter = "dovecot"

[[routes]]
match = ["*"]
adapter = "mail"
schedule = { kind = "exponential", base = "1m", max = "4h", factor = 3 }
[[routes]]
match = ["ops@other.test"]
adapter = "relay"
`

const routedEnv = { HOOK_SECRET: "hook-secret-abc", HOOK_TOKEN: "token-def", RELAY_PORT: "587", RELAY_PASSWORD: "relay-pw-ghi" }

/** A file with one mx adapter `out` (with `settings`), the route of every recipient. */
const mxConfig = (settings: string) =>
  `domains = ["us.test"]\n[adapters.out]\ntype = "mx"\n${settings}\n[[routes]]\nmatch = ["*"]\nadapter = "out"\n`

describe("[adapters] and [[routes]] in the file", () => {
  it.effect("map onto the Router's and the adapters' options; secrets stay Redacted; ${VAR} is typed", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": routed })
      const { config } = yield* load(dir, routedEnv)
      const delivery = Options.toRunner(config).delivery
      assert.strictEqual(delivery.adapter, "router")
      if (delivery.adapter !== "router") return
      assert.strictEqual(delivery.unrouted, "retry")
      assert.deepStrictEqual(delivery.routes.map((r) => [r.name, r.adapter, r.acknowledge]), [
        ["support", "hook", "sync"],
        ["routes[1]", "dovecot", "durable"],
        ["routes[2]", "mail", "durable"],
        ["routes[3]", "relay", "durable"]
      ])
      assert.deepStrictEqual(delivery.routes[0], {
        name: "support",
        match: ["support@example.test"],
        adapter: "hook",
        acknowledge: "sync",
        retry: { kind: "delays", delaysMs: [30_000, 120_000, 600_000], jitter: 0.1 },
        maxAttempts: 6,
        concurrency: 8,
        timeoutMs: 20_000
      })
      assert.deepStrictEqual(delivery.routes[2]!.retry, { kind: "exponential", baseMs: 60_000, maxMs: 4 * 3_600_000, factor: 3 })

      const hook = delivery.adapters.hook!
      assert.strictEqual(hook.type, "webhook")
      if (hook.type === "webhook") {
        const { secret, ...rest } = hook.options
        assert.isTrue(Redacted.isRedacted(secret))
        assert.strictEqual(Redacted.value(secret as Redacted.Redacted<string>), "hook-secret-abc")
        assert.deepStrictEqual(rest, {
          name: "hook",
          url: "https://app.example.test/hooks/mail",
          headers: { authorization: "Bearer token-def" },
          timeoutMs: 20_000,
          maxRedirects: 2,
          raw: "multipart",
          parts: { text: true, html: false },
          maxPartsBytes: 10 * 1024 * 1024,
          responses: { "404": "retry", "3xx": "reject" },
          tls: { rejectUnauthorized: false }
        })
      }
      const relay = delivery.adapters.relay!
      assert.strictEqual(relay.type, "smtp")
      if (relay.type === "smtp") {
        assert.strictEqual(relay.options.port, 587, "a ${VAR} reference inside an adapter table takes the field's type")
        assert.strictEqual(relay.options.startTls, "required")
        assert.strictEqual(relay.options.heloName, "mx.example.test")
        assert.strictEqual(relay.options.auth?.user, "incoming")
        assert.isTrue(Redacted.isRedacted(relay.options.auth?.pass))
      }
      assert.deepStrictEqual(delivery.adapters.dovecot, {
        type: "lmtp",
        options: { name: "dovecot", target: { path: join(dir, "run/lmtp") }, connectTimeoutMs: 10_000, commandTimeoutMs: 60_000, dataTimeoutMs: 90_000 }
      }, "a relative socket path is relative to the file")
      assert.deepStrictEqual(delivery.adapters.mail, { type: "maildir", root: config.delivery.maildir.root }, "a maildir adapter without root uses delivery.maildir.root")

      // Rendered, no secret is left, and the document loads again.
      const text = Render.render(config, "toml")
      for (const secret of Object.values(routedEnv).filter((v) => v !== "587")) assert.notInclude(text, secret)
      assert.notInclude(text, `adapter = "maildir"`, "delivery.adapter is left out when routes are present")
      const again = yield* workdir({ "incoming.toml": text })
      yield* load(again)
    }))

  it.effect("without adapters and routes, delivery.adapter works as before", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": `[delivery]\nadapter = "discard"\n` })
      assert.deepStrictEqual(Options.toRunner((yield* load(dir)).config).delivery, { adapter: "discard" })
      const plain = yield* workdir({ "incoming.toml": `[delivery.maildir]\nroot = "m"\n` })
      assert.deepStrictEqual(Options.toRunner((yield* load(plain)).config).delivery, { adapter: "maildir", root: join(plain, "m") })
    }))

  it.effect("mistakes in adapters: one line each, naming the path", () =>
    Effect.gen(function*() {
      const lines = yield* problems(`
[adapters.a]
type = "webhok"
[adapters.b]
type = "webhook"
url = "ftp://files.example.test/"
secret = ""
timeout = "soon"
retries = 3
[adapters.c]
type = "webhook"
url = "http://x.test/"
responses = { "6xx" = "ok" }
[adapters.d]
type = "smtp"
auth = { user = "u" }
[adapters."bad name"]
type = "discard"
[[routes]]
match = ["*"]
adapter = "a"
`)
      assert.deepStrictEqual(lines, [
        `incoming.toml: adapters.a.type: expected "maildir" | "discard" | "webhook" | "lmtp" | "smtp" | "mx", got "webhok"`,
        `incoming.toml: adapters.bad name: bad adapter name "bad name": letters, digits, "-" and "_", starting with a letter or digit`,
        "incoming.toml: adapters.b.retries: unknown key",
        `incoming.toml: adapters.b.url: expected an http:// or https:// URL, got "ftp://files.example.test/"`,
        "incoming.toml: adapters.b.secret: expected a non-empty string (a secret: the value is not shown)",
        `incoming.toml: adapters.b.timeout: expected a duration like "30s", "5m", "1h30m", "7d" or a number of milliseconds, got "soon"`,
        `incoming.toml: adapters.c.responses.6xx: expected a status ("404") or a class ("4xx") as the key, got "6xx"`,
        "incoming.toml: adapters.d.host: missing (required)",
        "incoming.toml: adapters.d.auth.password: missing (required)"
      ])
    }))

  it.effect("an mx adapter: local_address, mta_sts and DKIM keys by sender domain reach its options; key files resolved", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": mxConfig(`local_address = "127.0.0.8"
mta_sts = true
dkim = { domain = "us.test", selector = "out", private_key = "keys/us.pem" }
dkim_by_domain = { "Other.test" = { domain = "other.test", selector = "s2", private_key = "keys/other.pem" } }`)
      })
      mkdirSync(join(dir, "keys"))
      for (const f of ["us.pem", "other.pem"]) writeFileSync(join(dir, "keys", f), DkimKeys.ed25519Key().privateKey, { mode: 0o600 })
      const { config } = yield* load(dir)
      const delivery = Options.toRunner(config).delivery
      if (delivery.adapter !== "router") return assert.fail(`expected the router, got ${delivery.adapter}`)
      const out = delivery.adapters.out!
      if (out.type !== "mx") return assert.fail(`expected an mx adapter, got ${out.type}`)
      assert.strictEqual(out.options.localAddress, "127.0.0.8")
      assert.deepStrictEqual(out.options.mtaSts, { port: 443 })
      assert.deepStrictEqual(out.dkim, {
        key: { domain: "us.test", selector: "out", privateKeyFile: join(dir, "keys", "us.pem") },
        byDomain: { "Other.test": { domain: "other.test", selector: "s2", privateKeyFile: join(dir, "keys", "other.pem") } }
      })
    }))

  it.effect("DKIM key files: open to group or others, not a private key, or missing: a load error naming the field", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({
        "incoming.toml": mxConfig(`dkim = { domain = "us.test", selector = "out", private_key = "open.pem" }
dkim_by_domain = { "a.test" = { domain = "a.test", selector = "s", private_key = "junk.pem" }, "b.test" = { domain = "b.test", selector = "s", private_key = "missing.pem" }, "c.test" = { domain = "c.test", selector = "s", private_key = "group.pem" }, "d.test" = { domain = "d.test", selector = "s", private_key = "fine.pem" } }`),
        "open.pem": DkimKeys.rsaKey(1024).privateKey,
        "junk.pem": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        "group.pem": DkimKeys.ed25519Key().privateKey,
        "fine.pem": DkimKeys.ed25519Key().privateKey
      })
      // writeFileSync's mode is filtered by the umask: set the modes the test is about explicitly.
      chmodSync(join(dir, "open.pem"), 0o644)
      chmodSync(join(dir, "group.pem"), 0o640)
      chmodSync(join(dir, "junk.pem"), 0o600)
      chmodSync(join(dir, "fine.pem"), 0o600)
      const e = yield* Effect.flip(load(dir))
      assert.instanceOf(e, ConfigError)
      assert.deepStrictEqual(e.message.split("\n").sort(), [
        `incoming.toml: adapters.out.dkim.private_key: readable by group or others (mode 644): chmod 600 ${join(dir, "open.pem")}`,
        `incoming.toml: adapters.out.dkim_by_domain.a.test.private_key: not a PEM private key: ${join(dir, "junk.pem")}`,
        `incoming.toml: adapters.out.dkim_by_domain.b.test.private_key: not readable by this user (or not found): ${join(dir, "missing.pem")}`,
        `incoming.toml: adapters.out.dkim_by_domain.c.test.private_key: readable by group or others (mode 640): chmod 600 ${join(dir, "group.pem")}`
      ].sort())
      // Fixed, the same file loads.
      chmodSync(join(dir, "open.pem"), 0o600)
      chmodSync(join(dir, "group.pem"), 0o600)
      writeFileSync(join(dir, "junk.pem"), DkimKeys.rsaKey(1024).privateKey)
      writeFileSync(join(dir, "missing.pem"), DkimKeys.rsaKey(1024).privateKey, { mode: 0o600 })
      yield* load(dir)
    }))

  it.effect("mistakes in routes and across the tables", () =>
    Effect.gen(function*() {
      const adapters = `[adapters.mail]\ntype = "maildir"\n[adapters.hook2]\ntype = "discard"\n`
      assert.deepStrictEqual(
        yield* problems(`${adapters}[[routes]]\nmatch = ["a@x.test"]\nadapter = "mail"\n[[routes]]\nmatch = ["*"]\nadapter = "hook2"\n[[routes]]\nmatch = ["b@x.test"]\nadapter = "hook"\n`),
        [`incoming.toml: routes[2].adapter: no adapter named "hook" (configured: "mail", "hook2")`]
      )
      assert.deepStrictEqual(
        yield* problems(`${adapters}[[routes]]\nmatch = ["*"]\nadapter = "mail"\n[[routes]]\nname = "second"\nmatch = ["*"]\nadapter = "hook2"\n`),
        [`incoming.toml: routes[1]: route "second" and route "routes[0]" are both catch-alls`]
      )
      assert.deepStrictEqual(
        yield* problems(`${adapters}[[routes]]\nmatch = ["*"]\nadapter = "mail"\n`),
        ["incoming.toml: adapters.hook2: not used by any route"]
      )
      assert.deepStrictEqual(
        yield* problems(adapters),
        [`incoming.toml: routes: missing: [adapters.*] are only used by [[routes]] (add a [[routes]] table with match = ["*"] for a catch-all)`]
      )
      assert.deepStrictEqual(
        yield* problems(`[delivery]\nadapter = "discard"\n[adapters.mail]\ntype = "maildir"\n[[routes]]\nmatch = ["*"]\nadapter = "mail"\n`),
        ["incoming.toml: delivery.adapter: not used when [[routes]] are configured: route recipients to an [adapters.<name>] instead"]
      )
      assert.deepStrictEqual(
        yield* problems(`[adapters.l]\ntype = "lmtp"\n[adapters.m]\ntype = "lmtp"\nsocket = "/run/x"\nhost = "h"\n[[routes]]\nmatch = ["*"]\nadapter = "l"\n[[routes]]\nmatch = ["a@x.test"]\nadapter = "m"\n`),
        [
          "incoming.toml: adapters.l: needs socket (a Unix socket path) or host (and port)",
          "incoming.toml: adapters.m: socket and host are exclusive: give one"
        ]
      )
      assert.deepStrictEqual(
        yield* problems(
          `[adapters.mail]\ntype = "maildir"\n[[routes]]\nmatch = ["*"]\nadapter = "mail"\nmax_attempts = 20\ntimeout = "5m"\n` +
            `schedule = { kind = "exponential", base = "1h", max = "1m" }\n[[routes]]\nmatch = ["a@x.test"]\nadapter = "mail"\nschedule = { kind = "linear" }\nacknowledge = "later"\n`
        ),
        [
          `incoming.toml: routes[1].acknowledge: expected "durable" | "sync", got "later"`,
          `incoming.toml: routes[1].schedule: expected a table with kind = "delays" | "exponential", got {"kind":"linear"}`
        ]
      )
      assert.deepStrictEqual(
        yield* problems(`[adapters.mail]\ntype = "maildir"\n[[routes]]\nmatch = ["*"]\nadapter = "mail"\nmax_attempts = 20\ntimeout = "5m"\nschedule = { kind = "exponential", base = "1h", max = "1m" }\n`),
        [
          "incoming.toml: routes[0].max_attempts: 20 is more than delivery.max_attempts (12), which dead-letters first",
          "incoming.toml: routes[0].timeout: 5m is not below delivery.timeout (2m), which would cut the whole delivery off first",
          "incoming.toml: routes[0].schedule.base: 1h is more than schedule.max (1m)"
        ]
      )
      assert.deepStrictEqual(
        yield* problems(`[adapters.hook]\ntype = "webhook"\nurl = "http://x.test/"\nsecret = "\${HOOK_SECRET}"\n[[routes]]\nmatch = ["*"]\nadapter = "hook"\n`),
        ["incoming.toml: adapters.hook.secret: environment variable HOOK_SECRET is not set (referenced as ${HOOK_SECRET})"]
      )
    }))
})

const run = runCli

interface Posted {
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

/** An HTTP server on loopback that records each POST and answers 200; closed with the scope. */
const receiver = Effect.acquireRelease(
  Effect.callback<{ readonly server: http.Server; readonly port: number; readonly posts: Array<Posted> }>((resume) => {
    const posts: Array<Posted> = []
    const server = http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => {
        posts.push({ headers: req.headers, body: Buffer.concat(chunks) })
        res.writeHead(200).end("ok")
      })
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, port: (server.address() as AddressInfo).port, posts })))
  }),
  ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
)

const eventually = <A>(what: string, probe: () => A | undefined) =>
  Effect.gen(function*() {
    for (let i = 0; i < 400; i++) {
      const value = probe()
      if (value !== undefined) return value
      yield* Effect.sleep("25 millis")
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

describe("incoming serve and check-config with routes", () => {
  it.live("a webhook route and a Maildir catch-all: the POST is signed, the other recipient lands in the Maildir", () =>
    Effect.gen(function*() {
      const hooks = yield* receiver
      const dir = yield* workdir({
        "incoming.toml": [
          `domains = ["file.test"]`,
          `data_dir = "data"`,
          `[[listeners]]\nport = 0`,
          `[adapters.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:${hooks.port}/hooks/mail"\nsecret = "\${HOOK_SECRET}"\nparts = { text = true }`,
          `[adapters.mail]\ntype = "maildir"\nroot = "mail"`,
          `[[routes]]\nname = "support"\nmatch = ["support@file.test"]\nadapter = "hook"`,
          `[[routes]]\nname = "rest"\nmatch = ["*"]\nadapter = "mail"`
        ].join("\n")
      })
      const secret = "hook-secret-for-serve"
      const server = yield* serve(["--config", join(dir, "incoming.toml")], dir, { HOOK_SECRET: secret })
      yield* server.waitFor(/support \(support@file.test\) → hook/)
      const reply = yield* SmtpClient.send({
        port: server.port,
        from: "a@remote.test",
        to: ["support+urgent@file.test", "user@file.test"],
        data: "Subject: routed\r\n\r\nhello both\r\n"
      })
      assert.strictEqual(reply.code, 250)

      const post = yield* eventually("the webhook POST", () => hooks.posts[0])
      const timestamp = String(post.headers["x-incoming-timestamp"])
      const signature = String(post.headers["x-incoming-signature"])
      assert.isTrue(Signature.verify({ secret, timestamp, signature, body: post.body }), "signed with the secret from ${HOOK_SECRET}")
      const payload = JSON.parse(post.body.toString("utf8")) as Payload.WebhookPayload
      assert.deepStrictEqual(payload.envelope.to, ["support+urgent@file.test"], "only the routed recipient, +tag aware")
      assert.strictEqual(payload.subject, "routed")
      assert.include(payload.text ?? "", "hello both")

      const files = yield* eventually("the Maildir file", () => {
        try {
          const found = readdirSync(join(dir, "mail", "user@file.test", "new"))
          return found.length > 0 ? found : undefined
        } catch {
          return undefined
        }
      })
      assert.lengthOf(files, 1)
      assert.lengthOf(hooks.posts, 1)
      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
      assert.notInclude(server.output(), secret)
    }))

  it.live("check-config redacts the webhook secret, its headers and the relay password; a bad route is exit 1", () =>
    Effect.gen(function*() {
      const dir = yield* workdir({ "incoming.toml": routed })
      const ok = yield* run(["check-config", "--config", "incoming.toml"], { cwd: dir, env: routedEnv })
      assert.strictEqual(ok.code, 0, ok.stderr)
      assert.include(ok.stdout, `[adapters.hook]`)
      assert.include(ok.stdout, `secret = "<redacted>"`)
      assert.include(ok.stdout, `password = "<redacted>"`)
      assert.include(ok.stdout, `authorization = "<redacted>"`)
      assert.include(ok.stdout, `port = 587`)
      for (const value of ["hook-secret-abc", "token-def", "relay-pw-ghi"]) assert.notInclude(ok.stdout + ok.stderr, value)

      const bad = yield* workdir({ "incoming.toml": routed.replace(`adapter = "relay"`, `adapter = "hook-typo"`) })
      const failed = yield* run(["check-config"], { cwd: bad, env: routedEnv })
      assert.strictEqual(failed.code, 1)
      assert.strictEqual(
        failed.stderr.trim(),
        [
          `incoming.toml: routes[3].adapter: no adapter named "hook-typo" (configured: "hook", "relay", "dovecot", "mail")`,
          "incoming.toml: adapters.relay: not used by any route"
        ].join("\n")
      )
    }))
})
