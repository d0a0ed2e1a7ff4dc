/**
 * The scrypt users file and `incoming users`: add / verify good and bad / passwd / remove through
 * the command handlers (password from the PasswordInput reference, never a flag), the stable
 * line format, atomic rewrite (mode 0600, comments kept), and the file-backed UserStore picking
 * up changes without a restart.
 */
import { readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as UserFile from "../../src/auth/UserFile.ts"
import * as Users from "../../src/cli/users.ts"
import { TestIncoming } from "../../src/testing/index.ts"

const cheap = { N: 1024, r: 8, p: 1 }
const withPassword = (pw: string) => Effect.provideService(Users.PasswordInput, Effect.succeed(pw))

describe("UserFile", () => {
  it.effect("hash format is stable: name:scrypt$N$r$p$salt$hash, salted per user, verifies only the right password", () =>
    Effect.gen(function*() {
      const a = yield* UserFile.hashPassword("s3cret", cheap)
      const b = yield* UserFile.hashPassword("s3cret", cheap)
      assert.match(a, /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/)
      assert.notStrictEqual(a, b, "a fresh salt per hash")
      assert.isTrue(yield* UserFile.verifyHash(a, "s3cret"))
      assert.isFalse(yield* UserFile.verifyHash(a, "s3cret "))
      assert.isFalse(yield* UserFile.verifyHash("scrypt$garbage", "s3cret"))
      // a line written by an earlier version keeps verifying (known vector, fixed salt)
      const known = "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA$" +
        Buffer.from(
          (yield* Effect.promise(() =>
            import("node:crypto").then((c) => c.scryptSync("pw", Buffer.alloc(16), 32, { N: 1024, r: 8, p: 1 }))
          ))
        ).toString("base64").replace(/=+$/, "")
      assert.isTrue(yield* UserFile.verifyHash(known, "pw"))
    }))

  it.effect("parse rejects malformed lines with their line number; format round-trips comments", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(UserFile.parse("# users\nalice:scrypt$1$1$1$AA$AA\nbob:plaintext\n", "f"))
      assert.strictEqual(e.message, "f:3: bad hash for user bob")
      const dup = yield* Effect.flip(UserFile.parse("a:scrypt$1$1$1$AA$AA\na:scrypt$1$1$1$AA$AA\n", "f"))
      assert.include(dup.message, "duplicate user a")
      const text = "# users\n\nalice:scrypt$1$1$1$AA$AA\n"
      assert.strictEqual(UserFile.format(yield* UserFile.parse(text, "f")), text)
    }))

  it.effect("users add / passwd / remove through the command handlers; the store sees each change", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-users-")
      const file = join(dir, "users")
      writeFileSync(file, "# managed by incoming users\n")
      const store = UserFile.make(file)

      yield* Users.addHandler({ name: "alice", file }).pipe(withPassword("first pw"))
      const text = readFileSync(file, "utf8")
      assert.match(text, /^# managed by incoming users\nalice:scrypt\$32768\$8\$1\$[^$]+\$[^$]+\n$/)
      assert.strictEqual(statSync(file).mode & 0o777, 0o600)
      assert.deepStrictEqual(readdirSync(dir), ["users"], "no temp file left behind")
      assert.isTrue(yield* store.verify("alice", "first pw"))
      assert.isFalse(yield* store.verify("alice", "wrong"))
      assert.isFalse(yield* store.verify("nobody", "first pw"))

      const exists = yield* Effect.flip(Users.addHandler({ name: "alice", file }).pipe(withPassword("x")))
      assert.strictEqual(exists.message, "user alice already exists")
      const bad = yield* Effect.flip(Users.addHandler({ name: "a:b", file }).pipe(withPassword("x")))
      assert.strictEqual(bad.reason._tag, "Edit")
      const empty = yield* Effect.flip(Users.addHandler({ name: "bob", file }).pipe(withPassword("")))
      assert.strictEqual(empty.message, "empty password")

      yield* Users.passwdHandler({ name: "alice", file }).pipe(withPassword("second pw"))
      assert.isFalse(yield* store.verify("alice", "first pw"))
      assert.isTrue(yield* store.verify("alice", "second pw"))
      const missing = yield* Effect.flip(Users.passwdHandler({ name: "carol", file }).pipe(withPassword("x")))
      assert.strictEqual(missing.message, "no user carol")
      // Refused before the prompt: the password is never asked for.
      const neverAsked = Effect.provideService(Users.PasswordInput, Effect.die(new Error("password prompt for a refused edit")))
      assert.strictEqual((yield* Effect.flip(Users.passwdHandler({ name: "carol", file }).pipe(neverAsked))).message, "no user carol")
      assert.strictEqual((yield* Effect.flip(Users.addHandler({ name: "alice", file }).pipe(neverAsked))).message, "user alice already exists")

      yield* Users.removeHandler({ name: "alice", file })
      assert.strictEqual(readFileSync(file, "utf8"), "# managed by incoming users\n")
      assert.isFalse(yield* store.verify("alice", "second pw"))
    }), { timeout: 30_000 })

  // Live clock: the editors' lock waits sleep on the Clock, and another editor here releases its lock after real time.
  it.live("concurrent editors take turns under <file>.lock: no edit is lost; a held lock is waited for", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-users-")
      const file = join(dir, "users")
      const names = ["u1", "u2", "u3", "u4", "u5", "u6"]
      yield* Effect.forEach(names, (name) => UserFile.edit(file, { _tag: "Add", name, password: "pw", params: cheap }), {
        concurrency: "unbounded"
      })
      const users = (yield* UserFile.read(file)).flatMap((l) => (l._tag === "User" ? [l.name] : []))
      assert.sameMembers(users, names)
      assert.deepStrictEqual(readdirSync(dir), ["users"], "the lock is gone")
      // Another editor holds the lock for 300 ms: the edit waits, then applies.
      writeFileSync(`${file}.lock`, "12345\n")
      setTimeout(() => unlinkSync(`${file}.lock`), 300)
      const started = Date.now()
      assert.isUndefined(yield* UserFile.edit(file, { _tag: "Remove", name: "u1" }))
      assert.isAtLeast(Date.now() - started, 250)
      assert.notInclude(readFileSync(file, "utf8"), "u1:")
    }), { timeout: 30_000 })

  it.effect("the wait for another editor's lock runs on the Clock (TestClock): it gives up at 5 s naming the lock, and can be interrupted", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-users-")
      const file = join(dir, "users")
      const lockFile = `${file}.lock`
      writeFileSync(lockFile, "12345\n")
      const waiting = yield* Effect.forkChild(UserFile.edit(file, { _tag: "Remove", name: "alice" }), { startImmediately: true })
      yield* TestClock.adjust("4999 millis")
      assert.isUndefined(waiting.pollUnsafe(), "still waiting for the other editor")
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(waiting))
      assert.strictEqual(error.reason._tag, "WriteFailed")
      assert.include(error.message, `locked by another editor for 5 s: ${lockFile}`)
      assert.strictEqual(readFileSync(lockFile, "utf8"), "12345\n", "the other editor's lock is left alone")

      const interrupted = yield* Effect.forkChild(UserFile.edit(file, { _tag: "Remove", name: "alice" }), { startImmediately: true })
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(interrupted)
      assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(interrupted)))
      assert.deepStrictEqual(readdirSync(dir), ["users.lock"], "nothing written, nothing left behind")

      unlinkSync(lockFile)
      assert.deepStrictEqual(yield* UserFile.edit(file, { _tag: "Remove", name: "alice" }), { _tag: "NoSuchUser", name: "alice" })
      assert.deepStrictEqual(readdirSync(dir), [], "the lock it took is removed")
    }))

  it.effect("a missing file is empty; an unreadable or malformed one is a typed store error (454 at AUTH)", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-users-")
      assert.isFalse(yield* UserFile.make(join(dir, "none")).verify("a", "b"))
      writeFileSync(join(dir, "bad"), "alice\n")
      const e = yield* Effect.flip(UserFile.make(join(dir, "bad")).verify("alice", "x"))
      assert.strictEqual(e.reason._tag, "Malformed")
      assert.strictEqual(e.reply.code, 454)
    }))
})
