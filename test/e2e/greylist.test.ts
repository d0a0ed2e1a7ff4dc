/**
 * Greylisting end to end: the standalone server from a config file (state in `<data_dir>/greylist.db`)
 * with a 2-second delay, over real sockets. The first attempt gets 451 4.7.1 at RCPT and stores
 * nothing; a retry before the delay is deferred again; the retry after it is accepted and stored;
 * and the passed triplet is still known after a restart (the SQLite state under data_dir). A
 * greylist.db that cannot be opened (corrupt, locked by another process) stops both
 * `check-config` and `serve` with exit 1 and the same line naming the rule and the file.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import { DatabaseSync } from "node:sqlite"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { maildirFiles, runCli, serve, waitForMaildir, writeStandaloneConfig } from "../support/server.ts"

const send = (port: number, subject: string) =>
  SmtpClient.send({ port, from: "a@sender.test", to: ["u@example.test"], data: `Subject: ${subject}\r\n\r\nhello\r\n` })

describe("greylist end to end", () => {
  it.live("451 4.7.1 first, 451 before the delay, 250 after it; known after a restart", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const { config, maildir } = writeStandaloneConfig(dir, {
        sections: [`[[policies]]\nrule = "greylist"\ndelay = "2s"`]
      })
      const scope = yield* Scope.make()
      const incoming = yield* serve(["--config", config]).pipe(Scope.provide(scope))
      const first = yield* send(incoming.port, "first try")
      assert.strictEqual(first.code, 451)
      assert.match(first.lines.join("\n"), /^451 4\.7\.1 Greylisted, try again in 2 seconds$/)
      const early = yield* send(incoming.port, "too early")
      assert.strictEqual(early.code, 451)
      assert.strictEqual(maildirFiles(maildir, "u@example.test").length, 0, "nothing stored for deferred attempts")
      yield* Effect.sleep("2500 millis")
      const retry = yield* send(incoming.port, "retry")
      assert.strictEqual(retry.code, 250, retry.text)
      const files = yield* waitForMaildir(maildir, "u@example.test", (f) => f.length >= 1)
      assert.strictEqual(files.length, 1)
      assert.isTrue(existsSync(join(dir, "data", "greylist.db")))
      yield* Scope.close(scope, Exit.void)

      const restarted = yield* serve(["--config", config])
      const again = yield* send(restarted.port, "after restart")
      assert.strictEqual(again.code, 250, again.text)
    }), { timeout: 90_000 })

  it.live("greylist.db corrupt or locked: check-config and serve exit 1 with the same line", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const { config } = writeStandaloneConfig(dir, { sections: [`[[policies]]\nrule = "greylist"`] })
      const db = join(dir, "data", "greylist.db")
      mkdirSync(join(dir, "data"))
      const expectFailure = Effect.fnUntraced(function*(problem: string) {
        const line = `incoming.toml: policies[0]: greylist store (under data_dir): ${db}: ${problem}`
        const checked = yield* runCli(["check-config", "--config", config], { cwd: dir })
        assert.strictEqual(checked.code, 1, checked.stderr)
        assert.include(checked.stderr, line)
        const served = yield* runCli(["serve", "--log-format", "json", "--config", config], { cwd: dir, timeoutMs: 20_000 })
        assert.strictEqual(served.code, 1, served.stdout + served.stderr)
        assert.include(served.stderr, line)
        assert.notInclude(served.stderr, "    at ", "no stack trace")
      })
      writeFileSync(db, "not a database at all, just text that is long enough to look like a header".repeat(4))
      yield* expectFailure("file is not a database (corrupt: move it away and greylisting starts over)")

      writeFileSync(db, "")
      const holder = new DatabaseSync(db)
      holder.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
      yield* expectFailure("database is locked (another process holds it: stop it, or give this server another data_dir)").pipe(
        Effect.ensuring(Effect.sync(() => holder.close()))
      )
    }), { timeout: 90_000 })
})
