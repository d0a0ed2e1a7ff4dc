/**
 * Bounces through the dispatcher and the memory queue: a dead-lettered recipient makes an RFC
 * 3464 report that is queued and delivered like any message (here to the local sender, through
 * the same adapter), parsed back with postal-mime. NOTIFY, RET, ENVID and ORCPT are honoured;
 * a bounce is never bounced; mail that failed DMARC or SPF, and a foreign sender with nothing
 * to deliver off-site, get none. With `delayNoticeMs`, one delay notice per message. A message
 * still undelivered `maxLifetimeMs` after it arrived is dead-lettered and reported.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Queue, Stream } from "effect"
import PostalMime from "postal-mime"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import { DeliveryAdapter } from "../../src/delivery/DeliveryAdapter.ts"
import * as DsnReport from "../../src/delivery/bounce/DsnReport.ts"
import * as Dispatcher from "../../src/delivery/Dispatcher.ts"
import type { Envelope } from "../../src/protocol/Envelope.ts"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { envelope, message } from "../support/fixtures.ts"

const original = "From: sender@us.test\r\nTo: gone@dest.test\r\nSubject: the original\r\nMessage-ID: <orig@us.test>\r\n\r\nthe original body\r\n"

interface Received {
  readonly envelope: Envelope
  readonly rcpt: string
  readonly text: string
}

/**
 * A dispatcher whose adapter delivers local (`us.test`) mail into `inbox`, rejects `gone…`
 * recipients with a 550 from mx.dest.test, retries `busy…` ones, and delivers the rest.
 */
const world = (
  offSite: boolean,
  options: { readonly maxAttempts?: number; readonly delayNoticeMs?: number; readonly maxLifetimeMs?: number } = {}
) =>
  Effect.gen(function*() {
    const inbox = yield* Queue.unbounded<Received>()
    const adapter = Layer.succeed(DeliveryAdapter, DeliveryAdapter.of({
      name: "test",
      deliversOffSite: () => offSite,
      deliver: (d) =>
        Effect.gen(function*() {
          const text = Buffer.from(yield* Effect.orDie(Stream.mkUint8Array(d.body))).toString("utf8")
          return yield* Effect.forEach(d.recipients, ({ rcpt }) =>
            Effect.gen(function*() {
              if (rcpt.startsWith("gone")) return { ...DA.reject(rcpt, "550 5.1.1 <gone@dest.test>: no such user"), remote: "mx.dest.test" }
              if (rcpt.startsWith("busy")) return DA.retry(rcpt, "451 4.4.1 no MX host of dest.test took a connection")
              if (rcpt.endsWith("@us.test")) yield* Queue.offer(inbox, { envelope: d.envelope, rcpt, text })
              return DA.ok(rcpt, "250 ok")
            }))
        })
    }))
    const ctx = yield* Layer.build(Dispatcher.layer({
      workers: 2,
      maxAttempts: options.maxAttempts ?? 2,
      backoff: { baseMs: 10, maxMs: 10, jitter: 0 },
      idlePollMs: 50,
      ...(options.maxLifetimeMs !== undefined ? { maxLifetimeMs: options.maxLifetimeMs } : {}),
      bounces: { reportingMta: "mx.us.test", localDomains: ["us.test"], delayNoticeMs: options.delayNoticeMs }
    }).pipe(Layer.provideMerge(Layer.mergeAll(MemoryQueue.layer(), Telemetry.layer(), adapter))))
    return { queue: Context.get(ctx, MailQueue), admin: Context.get(ctx, QueueAdmin), inbox }
  })

const commit = (queue: MailQueue["Service"], env: Envelope, text = original, receivedAt = Date.now()) =>
  queue.commit({ ...message(env.rcptTo, receivedAt, text), envelope: env })

const parse = (text: string) =>
  Effect.promise(() => PostalMime.parse(text)).pipe(Effect.map((m) => ({
    message: m,
    status: new TextDecoder().decode(m.attachments.find((a) => a.mimeType === "message/delivery-status")!.content as ArrayBuffer),
    returned: m.attachments.find((a) => a.mimeType === "text/rfc822-headers" || a.mimeType === "message/rfc822")
  })))

describe("bounces (RFC 3464)", () => {
  it.live("a recipient refused with 5xx: the sender gets a report with Final-Recipient, Action: failed and the 5.x.x Status", () =>
    Effect.gen(function*() {
      const { queue, inbox } = yield* world(true)
      yield* commit(queue, {
        ...envelope(["ok@dest.test", "gone@dest.test"], "sender@us.test"),
        dsn: { envid: "ENV-42" },
        recipientDsn: { "gone@dest.test": { notify: ["FAILURE"], orcpt: { type: "rfc822", address: "Gone@Dest.test" } } }
      })
      const bounce = yield* Queue.take(inbox).pipe(Effect.timeout("20 seconds"))
      assert.strictEqual(bounce.envelope.mailFrom, "", "MAIL FROM:<>")
      assert.strictEqual(bounce.rcpt, "sender@us.test")
      const { message: m, status, returned } = yield* parse(bounce.text)
      assert.match(m.headers.find((h) => h.key === "content-type")!.value, /^multipart\/report; report-type=delivery-status;/)
      assert.strictEqual(m.headers.find((h) => h.key === "auto-submitted")?.value, "auto-replied")
      assert.strictEqual(m.from?.address, "MAILER-DAEMON@mx.us.test")
      assert.include(m.text, "<gone@dest.test>: 550 5.1.1")
      assert.match(status, /^Reporting-MTA: dns; mx\.us\.test\r\nOriginal-Envelope-Id: ENV-42\r\nArrival-Date: /)
      assert.include(status, "Final-Recipient: rfc822; gone@dest.test\r\nOriginal-Recipient: rfc822; Gone@Dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\n")
      assert.include(status, "Remote-MTA: dns; mx.dest.test\r\nDiagnostic-Code: smtp; 550 5.1.1 <gone@dest.test>: no such user\r\nLast-Attempt-Date: ")
      assert.notInclude(status, "ok@dest.test", "delivered recipients are not reported")
      // RET not given: the original's header only.
      assert.strictEqual(returned?.mimeType, "text/rfc822-headers")
      const returnedText = new TextDecoder().decode(returned!.content as ArrayBuffer)
      assert.include(returnedText, "Subject: the original")
      assert.notInclude(returnedText, "the original body")
    }))

  it.live("RET=FULL returns the whole message; out of attempts (4xx) is reported as failed with the last status", () =>
    Effect.gen(function*() {
      const { queue, inbox } = yield* world(true)
      yield* commit(queue, { ...envelope(["busy@dest.test"], "sender@us.test"), dsn: { ret: "FULL" } })
      const bounce = yield* Queue.take(inbox).pipe(Effect.timeout("20 seconds"))
      const { status, returned } = yield* parse(bounce.text)
      assert.include(status, "Action: failed\r\nStatus: 4.4.1\r\n")
      assert.include(status, "gave up after 2 attempts")
      assert.strictEqual(returned?.mimeType, "message/rfc822")
    }))

  it.live("no report: NOTIFY=NEVER, a null sender, DMARC or SPF failure, a foreign sender with nothing off-site", () =>
    Effect.gen(function*() {
      const { queue, admin, inbox } = yield* world(true)
      yield* commit(queue, { ...envelope(["gone1@dest.test"], "sender@us.test"), recipientDsn: { "gone1@dest.test": { notify: ["NEVER"] } } })
      yield* commit(queue, { ...envelope(["gone2@dest.test"], "sender@us.test"), recipientDsn: { "gone2@dest.test": { notify: ["DELAY"] } } })
      yield* commit(queue, envelope(["gone3@dest.test"], ""))
      yield* commit(queue, {
        ...envelope(["gone4@dest.test"], "sender@us.test"),
        authentication: { authservId: "mx.us.test", results: [{ method: "dmarc", result: "fail", properties: {} }] }
      })
      // SPF failed (DMARC passed or was not checked): the sender is just as likely forged.
      yield* commit(queue, {
        ...envelope(["gone7@dest.test"], "sender@us.test"),
        authentication: {
          authservId: "mx.us.test",
          results: [{ method: "spf", result: "fail", properties: { "smtp.mailfrom": "sender@us.test" } }, { method: "dkim", result: "pass", properties: {} }]
        }
      })
      // A softfail is not a failure: that one is reported (checked below with the control).
      yield* commit(queue, {
        ...envelope(["gone8@dest.test"], "sender@us.test"),
        authentication: { authservId: "mx.us.test", results: [{ method: "spf", result: "softfail", properties: {} }] }
      })
      const local = yield* world(false)
      yield* commit(local.queue, envelope(["gone5@dest.test"], "someone@elsewhere.test"))
      // A control that is reported, committed last: once it arrives the others have been decided.
      yield* commit(queue, envelope(["gone6@dest.test"], "sender@us.test"))
      const bounces = yield* Effect.all([Queue.take(inbox), Queue.take(inbox)]).pipe(Effect.timeout("20 seconds"))
      const about = yield* Effect.forEach(bounces, (b) => Effect.map(parse(b.text), (p) => /Final-Recipient: rfc822; (\S+)/.exec(p.status)?.[1]))
      assert.deepStrictEqual(about.sort(), ["gone6@dest.test", "gone8@dest.test"])
      yield* Effect.sleep("300 millis")
      assert.strictEqual(yield* Queue.size(inbox), 0)
      assert.strictEqual(yield* Queue.size(local.inbox), 0)
      // Left in the queue: the dead originals, no report among them (the bounces were delivered).
      const left = yield* admin.list({ state: "all" })
      assert.deepStrictEqual(
        left.map((m) => m.envelope.rcptTo[0]).sort(),
        ["gone1@dest.test", "gone2@dest.test", "gone3@dest.test", "gone4@dest.test", "gone6@dest.test", "gone7@dest.test", "gone8@dest.test"]
      )
    }))

  it.live("delay notices: one per message (Action: delayed, 4.x.x, Will-Retry-Until), then the failure; none without NOTIFY=DELAY", () =>
    Effect.gen(function*() {
      const { queue, inbox } = yield* world(true, { maxAttempts: 4, delayNoticeMs: 1 })
      yield* commit(queue, envelope(["busy@dest.test"], "sender@us.test"))
      const first = yield* Queue.take(inbox).pipe(Effect.timeout("20 seconds"))
      const notice = yield* parse(first.text)
      assert.strictEqual(first.envelope.mailFrom, "")
      assert.strictEqual(notice.message.subject, "Delayed Mail (still being retried)")
      assert.include(notice.status, "Final-Recipient: rfc822; busy@dest.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n")
      assert.match(notice.status, /\r\nWill-Retry-Until: \w{3}, /)
      assert.include(notice.message.text, "It will be tried again")
      // Retried twice more without another notice, then out of attempts: the failure report.
      const second = yield* Queue.take(inbox).pipe(Effect.timeout("20 seconds"))
      const failure = yield* parse(second.text)
      assert.strictEqual(failure.message.subject, "Undelivered Mail Returned to Sender")
      assert.include(failure.status, "Action: failed\r\nStatus: 4.4.1\r\n")
      assert.include(failure.status, "gave up after 4 attempts")
      // NOTIFY=FAILURE asks for no delay notice: only the failure comes.
      yield* commit(queue, { ...envelope(["busy2@dest.test"], "sender@us.test"), recipientDsn: { "busy2@dest.test": { notify: ["FAILURE"] } } })
      const third = yield* Queue.take(inbox).pipe(Effect.timeout("20 seconds"))
      assert.strictEqual((yield* parse(third.text)).message.subject, "Undelivered Mail Returned to Sender")
      yield* Effect.sleep("200 millis")
      assert.strictEqual(yield* Queue.size(inbox), 0)
    }))

  it.live("past max_lifetime: a recipient still being retried is dead-lettered at its next failure and reported", () =>
    Effect.gen(function*() {
      // Plenty of attempts left: only the lifetime (1 h) can end it. The message arrived 2 h ago.
      const { queue, admin, inbox } = yield* world(true, { maxAttempts: 50, maxLifetimeMs: 3600_000 })
      const arrived = Date.now() - 2 * 3600_000
      yield* commit(queue, envelope(["busy@dest.test"], "sender@us.test"), original, arrived)
      const bounce = yield* Queue.take(inbox).pipe(Effect.timeout("20 seconds"))
      const { message: m, status } = yield* parse(bounce.text)
      assert.strictEqual(m.subject, "Undelivered Mail Returned to Sender")
      assert.include(status, "Final-Recipient: rfc822; busy@dest.test\r\nAction: failed\r\nStatus: 4.4.1\r\n")
      assert.include(status, "gave up: not delivered within 1 h of arrival")
      assert.include(status, `Arrival-Date: ${DsnReport.rfc5322Date(arrived)}`)
      // Dead after its first attempt, not retried.
      const dead = (yield* admin.list({ state: "all" })).find((x) => x.envelope.rcptTo[0] === "busy@dest.test")
      assert.strictEqual(dead?.state, "dead")
      assert.strictEqual(dead?.recipients[0]?.state, "dead")
      assert.strictEqual(dead?.recipients[0]?.attempts, 1)
    }))

  it("statusOf: the enhanced code in the reason, else the reply's class", () => {
    assert.strictEqual(DsnReport.statusOf("550 5.7.1 refused", "failed"), "5.7.1")
    assert.strictEqual(DsnReport.statusOf("554 no", "failed"), "5.0.0")
    assert.strictEqual(DsnReport.statusOf("connection refused", "failed"), "5.0.0")
    assert.strictEqual(DsnReport.statusOf("connection refused", "delayed"), "4.0.0")
  })
})
