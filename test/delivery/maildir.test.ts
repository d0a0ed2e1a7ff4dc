/**
 * The Maildir adapter: one folder per recipient with tmp/new/cur, the whole message (trace
 * header + body) in `new/` under a unique name carrying the message id (how a reader spots a
 * redelivery), nothing left in `tmp/`, folder names that cannot escape the root and that
 * distinct mailboxes never share, and the start-up recovery that removes partial files dead
 * deliveries left in `tmp/` (and nothing else).
 */
import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Context, Deferred, Effect, Fiber, Layer, Logger, Schema, Stream } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as MaildirAdapter from "../../src/delivery/MaildirAdapter.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import { envelope } from "../support/fixtures.ts"

const isWellFormed = (s: string): boolean => !/\p{Cs}/u.test(s)

const delivery = (id: string, rcpts: ReadonlyArray<string>, text: string) => ({
  id,
  envelope: envelope(rcpts),
  receivedAt: 0,
  recipients: rcpts.map((rcpt) => ({ rcpt, attempt: 1 })),
  size: Buffer.byteLength(text) + "Received: x\r\n".length,
  body: DA.bodyStream(() => BodyStream.fromParts("Received: x\r\n", [Buffer.from(text)]))
})

describe("MaildirAdapter", () => {
  it.effect("writes the message into <root>/<rcpt>/new for each recipient, nothing left in tmp", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      const adapter = MaildirAdapter.make({ root })
      const out = yield* adapter.deliver(delivery("01ABCDEFGHJKMNPQ", ["a@example.test", "B@example.test"], "Subject: s\r\n\r\nbody\r\n"))
      assert.deepStrictEqual(out.map((o) => o._tag), ["Ok", "Ok"])
      for (const rcpt of ["a@example.test", "b@example.test"]) {
        assert.deepStrictEqual(readdirSync(join(root, rcpt)).toSorted(), ["cur", "new", "tmp"])
        assert.deepStrictEqual(readdirSync(join(root, rcpt, "tmp")), [])
        const files = readdirSync(join(root, rcpt, "new"))
        assert.strictEqual(files.length, 1)
        assert.include(files[0]!, "01ABCDEFGHJKMNPQ")
        assert.strictEqual(readFileSync(join(root, rcpt, "new", files[0]!), "utf8"), "Received: x\r\nSubject: s\r\n\r\nbody\r\n")
      }
    }))

  it.effect("gives every delivery of the same message a distinct file name", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      const adapter = MaildirAdapter.make({ root })
      for (let i = 0; i < 5; i++) yield* adapter.deliver(delivery("01ABCDEFGHJKMNPQ", ["a@example.test"], `n${i}\r\n`))
      assert.strictEqual(new Set(readdirSync(join(root, "a@example.test", "new"))).size, 5)
    }))

  it.effect("a redelivery (at-least-once) is a second file with the same message id: messageIdOf tells duplicates apart", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      const adapter = MaildirAdapter.make({ root })
      // The same message delivered twice (a crash before the queue recorded the first), and another.
      yield* adapter.deliver(delivery("01ABCDEFGHJKMNPQ", ["a@example.test"], "x\r\n"))
      yield* adapter.deliver(delivery("01ABCDEFGHJKMNPQ", ["a@example.test"], "x\r\n"))
      yield* adapter.deliver(delivery("01ZZZZZZZZZZZZZZ", ["a@example.test"], "y\r\n"))
      const files = readdirSync(join(root, "a@example.test", "new"))
      const ids = files.map(MaildirAdapter.messageIdOf)
      assert.deepStrictEqual(ids.toSorted(), ["01ABCDEFGHJKMNPQ", "01ABCDEFGHJKMNPQ", "01ZZZZZZZZZZZZZZ"])
      // A mail reader moving it to cur/ with flags keeps the id readable; foreign names give none.
      assert.strictEqual(MaildirAdapter.messageIdOf(`${files[0]!}:2,S`), ids[0])
      assert.isUndefined(MaildirAdapter.messageIdOf("1700000000.12345.host"))
    }))

  it("derives folder names that stay inside the root", () => {
    assert.strictEqual(MaildirAdapter.folderFor("User@Example.TEST"), "user@example.test")
    assert.strictEqual(MaildirAdapter.folderFor("../../etc/passwd@x.test"), "%2E.%2F..%2Fetc%2Fpasswd@x.test")
    assert.notInclude(MaildirAdapter.folderFor("a/b@x.test"), "/")
    assert.isFalse(MaildirAdapter.folderFor("..@x.test").startsWith("."))
  })

  it("gives distinct mailboxes distinct folders (they shared one before), folding only ASCII case", () => {
    // Before: a/b@, a_b@, A_B@ and a?b@ were all `a_b@x.test`; é@ and ü@ both `_@x.test`.
    const folders = ["a/b@x.test", "a_b@x.test", "a?b@x.test", "a%b@x.test", "é@x.test", "ü@x.test", '"a b"@x.test', ".a@x.test", "_a@x.test"]
      .map(MaildirAdapter.folderFor)
    assert.strictEqual(new Set(folders).size, folders.length, folders.join(" "))
    assert.deepStrictEqual(folders.slice(0, 6), ["a%2Fb@x.test", "a_b@x.test", "a%3Fb@x.test", "a%25b@x.test", "%C3%A9@x.test", "%C3%BC@x.test"])
    // The documented choice: ASCII case is folded (User@ and user@ are one mailbox), nothing else.
    assert.strictEqual(MaildirAdapter.folderFor("A_B@x.test"), MaildirAdapter.folderFor("a_b@x.test"))
    assert.notStrictEqual(MaildirAdapter.folderFor("É@x.test"), MaildirAdapter.folderFor("é@x.test"))
    // Reversible, and the old name of an address is still computable (to find earlier mail).
    assert.strictEqual(MaildirAdapter.addressOf("a%2Fb@x.test"), "a/b@x.test")
    assert.isUndefined(MaildirAdapter.addressOf("a%2fb@x.test"))
    assert.strictEqual(MaildirAdapter.legacyFolderFor("a/b@x.test"), "a_b@x.test")
  })

  it.effect("mail for an address whose folder name changed goes to the new folder; the old shared one is named once in a warning", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      // A folder an earlier version made for a/b@x.test (and a_b@, a?b@ ...).
      mkdirSync(join(root, "a_b@x.test", "new"), { recursive: true })
      writeFileSync(join(root, "a_b@x.test", "new", "1.M1P1Q1_01OLDOLDOLDOLDOL.host,S=1"), "old")
      const lines: Array<string> = []
      const collect = Logger.layer([
        Logger.make<unknown, void>(({ message }) => {
          lines.push(Array.isArray(message) ? message.join(" ") : String(message))
        })
      ], { mergeWithExisting: false })
      const adapter = MaildirAdapter.make({ root })
      for (let i = 0; i < 2; i++) {
        const out = yield* adapter.deliver(delivery(`01NEWNEWNEWNEW0${i}`, ["a/b@x.test"], "new\r\n")).pipe(Effect.provide(collect))
        assert.strictEqual(out[0]!._tag, "Ok")
      }
      assert.lengthOf(readdirSync(join(root, "a%2Fb@x.test", "new")), 2)
      assert.deepStrictEqual(readdirSync(join(root, "a_b@x.test", "new")), ["1.M1P1Q1_01OLDOLDOLDOLDOL.host,S=1"])
      const warnings = lines.filter((l) => l.includes("earlier versions filed it in a_b@x.test"))
      assert.lengthOf(warnings, 1, lines.join("\n"))
      assert.include(warnings[0]!, "a%2Fb@x.test")
    }))

  it("cuts a name longer than a file name may be and ends it in ~ and a SHA-256", () => {
    const long = `${"é".repeat(32)}@${"d".repeat(63)}.${"e".repeat(63)}.${"f".repeat(40)}`
    const name = MaildirAdapter.folderFor(long)
    assert.strictEqual(name.length, 255)
    assert.match(name, /~[0-9a-f]{64}$/)
    assert.notStrictEqual(MaildirAdapter.folderFor(long.replace("f", "g")), name)
    assert.isUndefined(MaildirAdapter.addressOf(name))
  })

  it.prop("folders are equal exactly when the addresses are equal but for ASCII case; safe, bounded, reversible", [
    Arbitrary.schema(Schema.String),
    Arbitrary.schema(Schema.String)
  ], ([a, b]) => {
    const fold = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase())
    // Strings with lone surrogates are not addresses (not UTF-8): the encoder sees U+FFFD for them.
    if (!isWellFormed(a) || !isWellFormed(b)) return
    const fa = MaildirAdapter.folderFor(a)
    const fb = MaildirAdapter.folderFor(b)
    assert.strictEqual(fa === fb, fold(a) === fold(b), `${JSON.stringify(a)} ${JSON.stringify(b)}`)
    for (const [address, folder] of [[a, fa], [b, fb]] as const) {
      assert.isAtMost(Buffer.byteLength(folder), 255)
      assert.match(folder, /^[a-z0-9._+=@%A-F~-]*$/)
      assert.isFalse(folder.startsWith("."))
      if (!folder.includes("~")) assert.strictEqual(MaildirAdapter.addressOf(folder), fold(address))
    }
  }, { timeout: 30_000, arbitrary: { runs: 1000 } })

  it.prop("changing the case of ASCII letters keeps the folder; changing any other character does not", [
    Arbitrary.schema(Schema.String),
    Arbitrary.array(Arbitrary.schema(Schema.Boolean), { minLength: 1, maxLength: 40 }),
    Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 1000 })))
  ], ([a, flips, at]) => {
    if (!isWellFormed(a) || a.length === 0) return
    const recased = [...a].map((c, i) => (/^[a-z]$/i.test(c) ? (flips[i % flips.length] === true ? c.toUpperCase() : c.toLowerCase()) : c)).join("")
    assert.strictEqual(MaildirAdapter.folderFor(recased), MaildirAdapter.folderFor(a))
    // One character replaced by another that is not its ASCII case pair: a different folder.
    const chars = [...a]
    const i = at % chars.length
    const other = chars[i] === "x" ? "y" : "x"
    if (chars[i]!.toLowerCase() === other) return
    chars[i] = other
    assert.notStrictEqual(MaildirAdapter.folderFor(chars.join("")), MaildirAdapter.folderFor(a))
  }, { timeout: 30_000, arbitrary: { runs: 1000 } })

  it.effect("a write failure is a retry for that recipient, not a crash", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      // A file where the recipient's folder should be: mkdir fails.
      mkdirSync(root, { recursive: true })
      writeFileSync(join(root, "blocked@example.test"), "not a directory")
      const adapter = MaildirAdapter.make({ root })
      const out = yield* adapter.deliver(delivery("01ABCDEFGHJKMNPQ", ["blocked@example.test", "ok@example.test"], "x\r\n"))
      assert.strictEqual(out[0]!._tag, "Retry")
      assert.include((out[0] as { reason: string }).reason, "maildir write failed")
      assert.strictEqual(out[1]!._tag, "Ok")
    }))
})

describe("MaildirAdapter recovery of tmp/", () => {
  const host = hostname().replace(/[/:]/g, "_")
  const partial = (pid: number, id: string, writerHost = host) => `1765000000.M1000P${pid}Q1_${id}.${writerHost},S=4096`
  /** The pid of a process that has exited. */
  const deadPid = () => spawnSync(process.execPath, ["-e", ""]).pid!
  /** A live process of ours (a child that waits), killed by its pid when the test ends. */
  const livePid = Effect.acquireRelease(
    Effect.sync(() => spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)"], { stdio: "ignore" })),
    (child) => Effect.sync(() => process.kill(child.pid!, "SIGKILL"))
  ).pipe(Effect.map((child) => child.pid!))

  it.effect("building the adapter removes partial files of dead writers, and only those", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      const tmp = join(root, "user@example.test", "tmp")
      mkdirSync(tmp, { recursive: true })
      const files = {
        deadWriter: partial(deadPid(), "01DEADDEADDEAD01"),
        liveWriter: partial(yield* livePid, "01LIVELIVELIVE01"),
        otherHostOld: partial(4242, "01OTHEROLDOTHER1", "other-host"),
        otherHostRecent: partial(4242, "01OTHERNEWOTHER1", "other-host"),
        notOurs: "1765000000.12345.somehost",
        dovecotStyle: "1765000000.M123P99Q1.mail.example"
      }
      for (const name of Object.values(files)) writeFileSync(join(tmp, name), "x".repeat(4096))
      const twoDaysAgo = new Date(Date.now() - 48 * 3600 * 1000)
      utimesSync(join(tmp, files.otherHostOld), twoDaysAgo, twoDaysAgo)

      const ctx = yield* Layer.build(MaildirAdapter.layer({ root }))
      assert.strictEqual(Context.get(ctx, DA.DeliveryAdapter).name, "maildir")
      assert.deepStrictEqual(
        readdirSync(tmp).toSorted(),
        [files.liveWriter, files.otherHostRecent, files.notOurs, files.dovecotStyle].toSorted()
      )
    }))

  it.live("a file this process is writing right now is left alone (a reload rebuilds the adapter)", () =>
    Effect.gen(function*() {
      const root = yield* TestIncoming.tempDir()
      const adapter = MaildirAdapter.make({ root })
      const release = yield* Deferred.make<void>()
      // A body that sends its first chunk, then waits: the delivery is half-way through tmp/.
      const body = Stream.concat(Stream.make(new TextEncoder().encode("Received: x\r\n")), Stream.fromEffect(Deferred.await(release)).pipe(Stream.drain))
      const slow = { ...delivery("01SLOWSLOWSLOW01", ["slow@example.test"], ""), body }
      const fiber = yield* Effect.forkChild(adapter.deliver(slow))
      const tmp = join(root, "slow@example.test", "tmp")
      while (!existsSync(tmp) || readdirSync(tmp).length === 0) yield* Effect.sleep("5 millis")
      const recovered = yield* MaildirAdapter.recover(root)
      assert.deepStrictEqual(recovered.removed, [])
      assert.lengthOf(readdirSync(tmp), 1)
      yield* Deferred.succeed(release, undefined)
      const out = yield* Fiber.join(fiber)
      assert.strictEqual(out[0]!._tag, "Ok")
      assert.lengthOf(readdirSync(join(root, "slow@example.test", "new")), 1)
      assert.lengthOf(readdirSync(tmp), 0)
    }))
})
