/**
 * The Maildir adapter: one folder per recipient with tmp/new/cur, the whole message (trace
 * header + body) in `new/` under a unique name carrying the message id (how a reader spots a
 * redelivery), nothing left in `tmp/`, and recipient names that cannot escape the root.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as MaildirAdapter from "../../src/delivery/MaildirAdapter.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import { envelope } from "../support/fixtures.ts"

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
    assert.strictEqual(MaildirAdapter.folderFor("../../etc/passwd@x.test"), "_._.._etc_passwd@x.test")
    assert.notInclude(MaildirAdapter.folderFor("a/b@x.test"), "/")
    assert.isFalse(MaildirAdapter.folderFor("..@x.test").startsWith("."))
  })

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
