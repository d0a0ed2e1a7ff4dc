/**
 * The configuration through the `incoming` command, as separate processes:
 *
 * - `check-config` exits 0 and prints the effective configuration (defaults filled in, secrets
 *   `<redacted>`) for a valid file; exits 1 with one precise line per problem for a bad one.
 * - `serve --config F` serves with the file's settings (domains, listener limits, Maildir root
 *   relative to the file, admin endpoint), a flag overrides the file, `/metrics` counts the
 *   traffic, and `/readyz` turns 503 when SIGTERM starts a drain held open by a DATA transaction.
 */
import { readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { serve, runCli } from "../support/server.ts"


const run = runCli

const sampleValue = (text: string, series: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

const get = (port: number, path: string) =>
  Effect.promise(async () => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`)
    return { status: res.status, body: await res.text() }
  })

describe("incoming check-config", () => {
  it.live("valid: exit 0, the effective configuration with defaults, secrets redacted", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-check-")
      writeFileSync(join(dir, "mx.toml"), [
        `domains = ["example.test"]`,
        `[[listeners]]\nport = 2525\nmax_size = "10MiB"`,
        `[admin]\nlisten = "127.0.0.1:9025"\nauth_token = "\${ADMIN_TOKEN}"`
      ].join("\n"))
      // One secret through a ${VAR} reference, then overridden by an INCOMING_* variable: neither shows.
      const ok = yield* run(["check-config", "--config", "mx.toml"], {
        cwd: dir,
        env: { ADMIN_TOKEN: "very-secret-token-123", INCOMING_ADMIN_AUTH_TOKEN: "env-secret-456" }
      })
      assert.strictEqual(ok.code, 0, ok.stderr)
      assert.include(ok.stderr, "mx.toml: valid")
      assert.include(ok.stdout, `max_size = "10MiB"`)
      assert.include(ok.stdout, "max_recipients = 100", "defaults are filled in")
      assert.include(ok.stdout, `dead_letter_ttl = "7d"`)
      assert.include(ok.stdout, `auth_token = "<redacted>"`)
      assert.notInclude(ok.stdout + ok.stderr, "very-secret-token-123")
      assert.notInclude(ok.stdout + ok.stderr, "env-secret-456")
    }))

  // Every kind of problem and its message is covered in process by load.test.ts; here, that the
  // command reports it on stderr alone and exits 1.
  it.live("invalid: exit 1 and one line per problem, no stack trace; a missing --config file is exit 1", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-check-")
      writeFileSync(join(dir, "incoming.toml"), `[[listeners]]\nport = 25\nmax_sise = 3\n[queue]\nbackend = "mysql"\n`)
      const bad = yield* run(["check-config"], { cwd: dir })
      assert.strictEqual(bad.code, 1)
      assert.strictEqual(bad.stdout, "")
      assert.deepStrictEqual(bad.stderr.trim().split("\n"), [
        "incoming.toml: listeners[0].max_sise: unknown key",
        `incoming.toml: queue.backend: expected "sqlite" | "memory" | "postgres", got "mysql"`
      ])

      const missing = yield* run(["check-config", "--config", "nope.toml"], { cwd: dir })
      assert.strictEqual(missing.code, 1)
      assert.strictEqual(missing.stderr.trim(), "nope.toml: file not found")
    }))
})

describe("incoming serve --config", () => {
  it.live("serves the file's settings, counts traffic on /metrics, and /readyz is 503 during a SIGTERM drain", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-serve-config-")
      writeFileSync(join(dir, "incoming.toml"), [
        `domains = ["file.test"]`,
        `data_dir = "data"`,
        `drain_timeout = "10s"`,
        `[[listeners]]\nname = "mx"\nport = 0\nmax_size = "1MB"`,
        `[delivery.maildir]\nroot = "mail"`,
        `[admin]\nlisten = "127.0.0.1:0"`,
        `[logging]\nformat = "json"`
      ].join("\n"))
      // Started from another directory: the file's relative paths are relative to the file.
      const server = yield* serve(["--config", join(dir, "incoming.toml"), "--max-size", "2000000"], join(dir, ".."))
      const adminLine = yield* server.waitFor(/admin endpoint at /)
      const admin = Number(/admin endpoint at http:\/\/127\.0\.0\.1:(\d+)/.exec(adminLine)?.[1])
      assert.isAbove(admin, 0)
      assert.strictEqual((yield* get(admin, "/readyz")).status, 200)

      const probe = yield* SmtpClient.connect({ port: server.port })
      const ehlo = yield* probe.command("EHLO probe.test")
      assert.include(ehlo.lines.join("\n"), "SIZE 2000000", "the --max-size flag overrides the file's max_size")
      yield* probe.command("QUIT")

      const ok = yield* SmtpClient.send({ port: server.port, from: "a@remote.test", to: ["user@file.test"], data: "Subject: c\r\n\r\nfrom config\r\n" })
      assert.strictEqual(ok.code, 250, "a domain from the file is ours")
      const refused = yield* SmtpClient.send({ port: server.port, from: "a@remote.test", to: ["user@localhost"], data: "x" })
      assert.strictEqual(refused.code, 554, "the default domain is not, once the file names its own")

      let delivered: Array<string> = []
      for (let i = 0; i < 200 && delivered.length === 0; i++) {
        try {
          delivered = readdirSync(join(dir, "mail", "user@file.test", "new"))
        } catch {
          delivered = []
        }
        if (delivered.length === 0) yield* Effect.sleep("25 millis")
      }
      assert.lengthOf(delivered, 1, "delivered into the Maildir root the file names, relative to the file")

      const metrics = yield* get(admin, "/metrics")
      assert.isAtLeast(sampleValue(metrics.body, "incoming_messages_accepted_total") ?? 0, 1)
      assert.isAtLeast(sampleValue(metrics.body, `incoming_connections_total{listener="mx"}`) ?? 0, 3)
      assert.isAtLeast(sampleValue(metrics.body, `incoming_replies_rejected_total{listener="mx",stage="rcpt",reason="relay_denied",code="554"}`) ?? 0, 1)

      // Hold a transaction open, SIGTERM: the drain waits for it, and /readyz says so.
      const held = yield* SmtpClient.connect({ port: server.port })
      yield* held.command("EHLO busy.test")
      yield* held.command("MAIL FROM:<a@remote.test>")
      yield* held.command("RCPT TO:<user@file.test>")
      assert.strictEqual((yield* held.command("DATA")).code, 354)
      yield* held.write("Subject: held\r\n\r\nfirst half\r\n")
      yield* server.signal("SIGTERM")
      yield* server.waitFor(/draining 1 DATA transaction/)
      const during = yield* get(admin, "/readyz")
      assert.strictEqual(during.status, 503)
      assert.match(during.body, /^not ready: draining/)
      yield* held.write("second half\r\n.\r\n")
      assert.strictEqual((yield* held.read).code, 250)
      assert.strictEqual(yield* server.exitCode, 0)
    }))
})
