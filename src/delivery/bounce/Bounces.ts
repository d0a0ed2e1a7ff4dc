/**
 * Bounces: when recipients of a message are dead-lettered, its sender is told (RFC 5321 §6.1:
 * a server that accepted a message and cannot deliver it must say so); with `delayNoticeMs`, a
 * sender whose message is still not delivered that long after it arrived is told once that it
 * is being retried (`Action: delayed`). The report (`DsnReport.ts`) is made here as a message —
 * `MAIL FROM:<>`, to the original sender — and the dispatcher commits it in the same queue
 * transaction as the settle that caused it, so a crash cannot lose it; it is then routed like
 * any message (a local mailbox, or out by MX).
 *
 * Who is not told, on purpose: the null sender (a bounce is never bounced, RFC 3464 §2), a
 * recipient whose `NOTIFY` (RFC 3461) leaves out FAILURE (DELAY for a delay notice), and mail
 * that failed DMARC or SPF — its sender is probably forged, and a report would be backscatter
 * to an innocent party — and a foreign sender when nothing here delivers off-site.
 */
import { Effect, Stream } from "effect"
import type { Envelope } from "../../protocol/Envelope.ts"
import type { NewMessage } from "../../queue/MailQueue.ts"
import * as MessageId from "../../queue/MessageId.ts"
import * as DsnReport from "./DsnReport.ts"

export interface BounceOptions {
  /** Our host name: `Reporting-MTA`, and the domain of `MAILER-DAEMON@`. */
  readonly reportingMta: string
  /**
   * Our domains: a sender there gets its report in a local mailbox. A sender elsewhere gets one
   * only when delivery can hand mail off-site (an `mx` or `smtp` route); otherwise a report
   * would be filed locally under a foreign address, so none is made.
   */
  readonly localDomains: ReadonlyArray<string>
  /** Originals larger than this are returned as their header only, even under `RET=FULL`. */
  readonly maxReturnedBytes?: number
  /**
   * A recipient still being retried this long (ms) after the message arrived gets one delay
   * notice per message (`NOTIFY=DELAY`, or no NOTIFY); none when absent.
   */
  readonly delayNoticeMs?: number | undefined
}

export const defaults = { maxReturnedBytes: 1024 * 1024 } as const

/** A recipient to report: dead-lettered (`failed`), or still being retried (`delayed`). */
export interface Dead {
  readonly rcpt: string
  readonly reason: string
  readonly remoteMta?: string | undefined
  /** Default `failed`. */
  readonly action?: "failed" | "delayed" | undefined
  /** A delayed recipient: when we give up (RFC 3464 `Will-Retry-Until`). */
  readonly willRetryUntil?: number | undefined
}

export interface Original {
  readonly id: string
  readonly envelope: Envelope
  readonly receivedAt: number
  readonly size: number
  /** The stored message, read only when a report is sent (and then only its header, unless `RET=FULL`). */
  readonly body: Stream.Stream<Uint8Array, unknown>
}

/** The whole message, or its header block: reading stops at the first empty line. */
const read = (body: Stream.Stream<Uint8Array, unknown>, full: boolean): Effect.Effect<Uint8Array, unknown> => {
  if (full) return Stream.mkUint8Array(body)
  return Effect.suspend(() => {
    const chunks: Array<Uint8Array> = []
    return Stream.runForEachWhile(body, (chunk) =>
      Effect.sync(() => {
        chunks.push(chunk)
        // Looked for in the last chunks only: the end of the header may straddle two.
        const recent = Buffer.concat(chunks.slice(-2))
        return recent.indexOf("\r\n\r\n") < 0 && recent.indexOf("\n\n") < 0
      })).pipe(Effect.map(() => DsnReport.headerBlock(Buffer.concat(chunks))))
  })
}

/** Whether `address` is at one of `domains` (case-insensitive). */
export const isLocal = (address: string, domains: ReadonlyArray<string>): boolean => {
  const domain = address.slice(address.lastIndexOf("@") + 1).toLowerCase()
  return domains.some((d) => d.toLowerCase() === domain)
}

/**
 * Why no report goes out for `rcpt`, if none should. `offSite` says whether delivery can reach
 * the sender's address when it is not at a local domain.
 */
export const suppressed = (
  envelope: Envelope,
  rcpt: string | undefined,
  reach: { readonly localDomains: ReadonlyArray<string>; readonly offSite: (address: string) => boolean },
  action: "failed" | "delayed" = "failed"
): string | undefined => {
  if (envelope.mailFrom === "") return "the sender is the null sender (never bounce a bounce)"
  if (!isLocal(envelope.mailFrom, reach.localDomains) && !reach.offSite(envelope.mailFrom)) {
    return `nothing here delivers to <${envelope.mailFrom}> (no route off-site)`
  }
  const failedAuth = envelope.authentication?.results.find((r) => (r.method === "dmarc" || r.method === "spf") && r.result === "fail")
  if (failedAuth !== undefined) return `the message failed ${failedAuth.method.toUpperCase()} (no backscatter to a forged sender)`
  const notify = rcpt === undefined ? undefined : envelope.recipientDsn?.[rcpt]?.notify
  const wanted = action === "failed" ? "FAILURE" : "DELAY"
  if (notify !== undefined && !notify.includes(wanted)) return `NOTIFY=${notify.join(",")}`
  return undefined
}

/**
 * One report for the recipients of `original` in `dead` that are to be reported, as a message
 * to queue (`undefined` when nobody is). Reading the original may fail: the caller decides.
 */
export const report = (
  options: BounceOptions,
  offSite: (address: string) => boolean,
  original: Original,
  dead: ReadonlyArray<Dead>,
  now: number
): Effect.Effect<NewMessage | undefined, unknown> =>
  Effect.gen(function*() {
    const envelope = original.envelope
    const reach = { localDomains: options.localDomains, offSite }
    const reported = dead.filter((d) => suppressed(envelope, d.rcpt, reach, d.action) === undefined)
    if (reported.length === 0) return undefined
    const full = envelope.dsn?.ret === "FULL" && original.size <= (options.maxReturnedBytes ?? defaults.maxReturnedBytes)
    const message = yield* read(original.body, full)
    const report = DsnReport.render({
      reportingMta: options.reportingMta,
      to: envelope.mailFrom,
      arrivalAt: original.receivedAt,
      envid: envelope.dsn?.envid,
      recipients: reported.map((d) => ({
        rcpt: d.rcpt,
        original: envelope.recipientDsn?.[d.rcpt]?.orcpt,
        action: d.action ?? "failed",
        reason: d.reason,
        remoteMta: d.remoteMta,
        lastAttemptAt: now,
        willRetryUntil: d.willRetryUntil
      })),
      original: message,
      full,
      now
    })
    return {
      id: MessageId.make(now),
      envelope: {
        mailFrom: "",
        rcptTo: [envelope.mailFrom],
        helo: options.reportingMta,
        clientAddress: "127.0.0.1",
        secure: false,
        listener: "bounce",
        // A UTF-8 sender address can only be reached over SMTPUTF8.
        ...(/[^\x00-\x7f]/.test(envelope.mailFrom) ? { smtpUtf8: true } : {})
      },
      trace: "",
      body: { _tag: "InMemory", size: report.length, chunks: [report], release: Effect.void },
      receivedAt: now
    } satisfies NewMessage
  })
