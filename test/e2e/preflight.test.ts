/**
 * check-config catches what serve would hit, and both say it the same way: for a data dir under
 * a regular file, on a read-only file system, or not writable by the server's user, and for a
 * TLS certificate that is not PEM or a key that does not match it, `incoming check-config` and
 * `incoming serve` each exit 1 with the same single line on stderr naming the setting and the
 * cause — no stack trace — and serve logs nothing as listening or serving.
 *
 * The read-only case mounts a read-only tmpfs (root only); where mounting is not permitted it is
 * skipped with a message. The unwritable case runs the commands as `nobody` when the test runs
 * as root (root may write anywhere), else against a directory of mode 0555.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"
import { type RunOptions, runCli } from "../support/server.ts"

const isRoot = process.getuid?.() === 0

/** Runs check-config and serve on the case's file and checks both refuse it with `expected`, alike. */
const refusedAlike = (dir: string, expected: string, as: Partial<RunOptions> = {}) =>
  Effect.gen(function*() {
    const options = { cwd: dir, ...as }
    const [checked, served] = yield* Effect.all([
      runCli(["check-config", "--config", "incoming.toml"], options),
      runCli(["serve", "--config", "incoming.toml", "--log-format", "json"], { ...options, timeoutMs: 20_000 })
    ], { concurrency: 2 })
    assert.strictEqual(checked.code, 1, `check-config accepted it:\n${checked.stderr}`)
    assert.strictEqual(checked.stderr, `${expected}\n`)
    assert.strictEqual(served.code, 1, `serve: ${served.stdout}${served.stderr}`)
    assert.strictEqual(served.stderr, checked.stderr, "serve and check-config say it differently")
    assert.notMatch(served.stdout + served.stderr, /\n\s+at /, "a stack trace")
    assert.notInclude(served.stdout, "listening on")
    assert.notInclude(served.stdout, "serving")
  })

const writeConfig = (dir: string, lines: ReadonlyArray<string>) =>
  writeFileSync(join(dir, "incoming.toml"), [`domains = ["example.test"]`, ...lines].join("\n"), { mode: 0o644 })

/** A read-only tmpfs at `path` for the scope, or a reason it could not be mounted. */
const readOnlyMount = (path: string): Effect.Effect<string | undefined, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      mkdirSync(path)
      try {
        execFileSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", path], { stdio: "pipe" })
        return undefined
      } catch (e) {
        return e instanceof Error ? e.message.split("\n")[0]! : String(e)
      }
    }),
    (problem) =>
      Effect.sync(() => {
        if (problem === undefined) execFileSync("umount", [path], { stdio: "ignore" })
      })
  )

describe("start-up preflight: check-config and serve refuse alike", () => {
  it.live("data_dir under a regular file", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-preflight-")
      writeFileSync(join(dir, "state"), "a file, not a directory")
      writeConfig(dir, [`data_dir = "state/data"`, `[[listeners]]\nport = 0`])
      yield* refusedAlike(dir, `incoming.toml: data_dir: ${dir}/state/data: not a directory (${dir}/state is a file)`)
    }), { timeout: 60_000 })

  it.live("data_dir on a read-only file system (EROFS, not a misleading ENOENT)", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-preflight-")
      const problem = yield* readOnlyMount(join(dir, "ro"))
      if (problem !== undefined) {
        console.log(`SKIPPED data_dir on a read-only file system: cannot mount a read-only tmpfs here (${problem})`)
        return
      }
      writeConfig(dir, [`data_dir = "ro/data"`, `[[listeners]]\nport = 0`])
      yield* refusedAlike(dir, `incoming.toml: data_dir: ${dir}/ro/data: read-only file system`)
    }), { timeout: 60_000 })

  it.live("data_dir not writable by the server's user", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-preflight-")
      const locked = join(dir, "locked")
      mkdirSync(locked)
      // As root: the test directory readable by `nobody`, who runs the commands and cannot write `locked`.
      chmodSync(dir, 0o755)
      chmodSync(locked, isRoot ? 0o755 : 0o555)
      writeConfig(dir, [`data_dir = "locked/data"`, `[[listeners]]\nport = 0`])
      yield* refusedAlike(
        dir,
        `incoming.toml: data_dir: ${locked}/data: permission denied (${locked} is not writable by this user)`,
        isRoot ? { uid: 65534, gid: 65534 } : {}
      )
      chmodSync(locked, 0o755)
    }), { timeout: 60_000 })

  describe.skipIf(!hasOpenssl)("TLS files", () => {
    it.live("a certificate file that is not PEM", () =>
      Effect.gen(function*() {
        const dir = yield* TestIncoming.tempDir("incoming-preflight-")
        selfSignedCert(dir)
        const der = join(dir, "cert.der")
        execFileSync("openssl", ["x509", "-in", join(dir, "cert.pem"), "-outform", "DER", "-out", der], { stdio: "ignore" })
        writeConfig(dir, [`data_dir = "data"`, `[[listeners]]\nport = 0\ntls = { mode = "optional", cert = "cert.der", key = "key.pem" }`])
        yield* refusedAlike(
          dir,
          `incoming.toml: listeners[0].tls.cert: ${der}: not a PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`
        )
      }), { timeout: 60_000 })

    it.live("a key that does not match the certificate", () =>
      Effect.gen(function*() {
        const dir = yield* TestIncoming.tempDir("incoming-preflight-")
        mkdirSync(join(dir, "a"))
        mkdirSync(join(dir, "b"))
        const a = selfSignedCert(join(dir, "a"))
        const b = selfSignedCert(join(dir, "b"))
        writeConfig(dir, [`data_dir = "data"`, `[[listeners]]\nport = 0\ntls = { mode = "optional", cert = "a/cert.pem", key = "b/key.pem" }`])
        yield* refusedAlike(dir, `incoming.toml: listeners[0].tls.key: ${b.key}: does not match the certificate ${a.cert}`)
      }), { timeout: 60_000 })
  })
})
