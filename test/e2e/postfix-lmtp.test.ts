/**
 * Incoming as Postfix's LMTP transport, end to end with a real Postfix (a private instance in a
 * temporary directory, see test/support/postfix.ts): a message with three recipients is sent to
 * Postfix over SMTP; Postfix's `lmtp` client hands it to Incoming's `mode = "lmtp"` listener, over
 * TCP and over a Unix socket. Postfix's log shows a per-recipient outcome from Incoming's
 * per-recipient replies: two delivered (`250 2.0.0 queued as <id>`), the unknown mailbox bounced
 * with Incoming's `550 5.1.1` at RCPT. The two delivered recipients arrive in one message whose
 * trace has Postfix's hop and Incoming's `with LMTP`. Skipped, with a message, without Postfix or
 * without root.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, chownSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { Listeners } from "../../src/smtp/Listener.ts"
import { Captured, SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as Postfix from "../support/postfix.ts"

if (Postfix.usable !== undefined) console.warn(`postfix-lmtp.test.ts: skipped: ${Postfix.usable}`)

const incoming = (listener: Parameters<typeof TestIncoming.layer>[0]) =>
  TestIncoming.layer({ domains: ["example.test"], relay: { recipients: ["user1@example.test", "user2@example.test"] }, ...listener })

const throughPostfix = (lmtpTarget: string, ctx: Context.Context<Captured>) =>
  Effect.gen(function*() {
    const postfix = yield* Postfix.start(lmtpTarget)
    const reply = yield* SmtpClient.send({
      port: postfix.smtpPort,
      // The null sender: Postfix sends no bounce for the refused recipient (it would come back here).
      from: "",
      to: ["user1@example.test", "nobody@example.test", "user2@example.test"],
      data: "From: a@sender.test\r\nSubject: via postfix\r\n\r\nhello through postfix\r\n"
    })
    assert.strictEqual(reply.code, 250, reply.text)
    const log = yield* Postfix.awaitLog(
      postfix,
      /(status=(sent|bounced|deferred)[^\n]*\n[^]*){3}/
    )
    const outcome = (rcpt: string) => new RegExp(`to=<${rcpt}>,[^\\n]*status=(\\w+) \\(([^\\n]*)\\)`).exec(log)
    const user1 = outcome("user1@example.test")
    const user2 = outcome("user2@example.test")
    const nobody = outcome("nobody@example.test")
    assert.strictEqual(user1?.[1], "sent", log)
    assert.strictEqual(user2?.[1], "sent", log)
    assert.match(user1![2]!, /250 2\.0\.0 queued as [0-9A-Z]{16}/)
    assert.strictEqual(nobody?.[1], "bounced", log)
    assert.match(nobody![2]!, /said: 550 5\.1\.1 No such user here \(in reply to RCPT TO command\)/)
    // One message in Incoming for the two accepted recipients, with both hops in its trace.
    const id = /queued as ([0-9A-Z]{16})/.exec(user1![2]!)![1]!
    assert.strictEqual(/queued as ([0-9A-Z]{16})/.exec(user2![2]!)![1], id)
    const msgs = yield* Captured.use((c) => c.awaitDelivered(1)).pipe(Effect.provideContext(ctx))
    const msg = msgs.find((m) => m.id === id)
    assert.isDefined(msg)
    assert.deepStrictEqual(msg!.envelope.rcptTo, ["user1@example.test", "user2@example.test"])
    assert.match(msg!.text, /^Received: from postfix\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test \(Incoming\) with LMTP id /)
    assert.match(msg!.text, /Received: from [^\n]*\r\n\tby postfix\.test \(Postfix\) with ESMTP id /)
    assert.include(msg!.text, "hello through postfix")
  })

describe.skipIf(Postfix.usable !== undefined)("Postfix delivering into Incoming over LMTP", () => {
  it.live("over TCP (lmtp:inet:127.0.0.1:PORT)", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(incoming({ listener: { mode: "lmtp" } }))
      const port = Context.get(ctx, Listeners).all[0]!.port
      yield* throughPostfix(`inet:127.0.0.1:${port}`, ctx)
    }).pipe(Effect.scoped), { timeout: 120_000 })

  it.live("over a Unix socket (lmtp:unix:PATH), the socket's group given to Postfix", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-lmtp-postfix-")
      const path = join(dir, "lmtp.sock")
      const ctx = yield* Layer.build(incoming({ listener: { mode: "lmtp", path, port: 0 } }))
      // The socket is 0660: Postfix's lmtp client (user postfix) gets in through the group, as an
      // operator would set it up.
      chownSync(path, 0, Number(execFileSync("id", ["-g", "postfix"], { encoding: "utf8" }).trim()))
      chmodSync(dir, 0o711)
      yield* throughPostfix(`unix:${path}`, ctx)
    }).pipe(Effect.scoped), { timeout: 120_000 })
})
