/**
 * The SQLite queue's settles as writer ops (`writerProtocol.ts`): what each settlement writes to
 * its recipient row, whether the whole lease was delivered (the writer then tries its
 * one-statement delete first), and the reports committed with it. Plain functions of their
 * inputs: the queue builds the common settle in one step, and one with reports once their bodies
 * are stored.
 */
import * as Priority from "../../protocol/Priority.ts"
import type { Lease, NewMessage, Settlement } from "../MailQueue.ts"
import { encodeEnvelope } from "./sqliteSchema.ts"
import type { Op, ReportRow, SettleRow } from "./writerProtocol.ts"

// STRICT integer columns refuse fractions, and one refused row would abort a whole batch.
export const ms = (n: number): number => Math.floor(n)

/** A report (bounce, delay notice) as the writer stores it, with where its body went. */
export const reportRow = (m: NewMessage, stored: { readonly inline: Uint8Array | null; readonly file: string | null }): ReportRow => ({
  id: m.id,
  envelope: encodeEnvelope(m.envelope),
  trace: m.trace,
  receivedAt: ms(m.receivedAt),
  size: m.body.size,
  inline: stored.inline,
  file: stored.file,
  rcpts: [...new Set(m.envelope.rcptTo)],
  priority: m.envelope.priority ?? Priority.normal
})

/** The settle of `lease`: a dead letter expires `deadLetterTtlMs` after `now`. */
export const settleOp = (
  lease: Lease,
  settlements: ReadonlyArray<Settlement>,
  options: {
    readonly now: number
    readonly deadLetterTtlMs: number
    readonly reports: ReadonlyArray<ReportRow>
    readonly delayNotified: number | undefined
  }
): Op => {
  const rows = settlements.map((s): SettleRow =>
    s._tag === "Delivered"
      ? { rcpt: s.rcpt, tag: "Delivered", reply: s.reply, at: 0 }
      : s._tag === "Retry"
      ? { rcpt: s.rcpt, tag: "Retry", reply: s.reply, at: ms(s.at) }
      : { rcpt: s.rcpt, tag: "Dead", reply: s.reply, at: ms(options.now + options.deadLetterTtlMs) }
  )
  const delivered = new Set(rows.filter((r) => r.tag === "Delivered").map((r) => r.rcpt))
  return {
    op: "settle",
    id: lease.id,
    token: lease.token,
    rows,
    allDelivered: lease.recipients.every((r) => delivered.has(r.rcpt)),
    reports: options.reports,
    delayNotified: options.delayNotified === undefined ? null : ms(options.delayNotified)
  }
}
