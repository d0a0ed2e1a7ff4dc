/**
 * The `MailQueue` contract: the hot path of the queue, where an accepted message lives from the
 * 250 until every recipient is delivered or dead-lettered.
 *
 * State is per recipient, so one recipient can be delivered while another waits for a retry.
 * Workers `claim` a message's due recipients under a lease; a lease that is neither settled nor
 * released before it expires (a crashed process) returns those recipients to the queue. What
 * operators do (list, show, retry, hold, delete, purge, stats) is the other contract,
 * `QueueAdmin.ts`; a backend's `make` builds both over one store (`QueueBackend.ts`), and every
 * backend passes the same conformance kit (`incoming-smtp/testing/queue-conformance`).
 *
 * Every operation is an effect that does its work when it runs, not when the method is called:
 * `commit(m)` stores nothing until it runs, so a caller may build it and hand it to a deadline or
 * a retry first. Each run is an operation of its own, decided at run time (the clock, the lease
 * token): running one `claim` effect twice claims twice, and a `commit` run again is a second
 * commit of its id, which is refused. Every backend keeps to this; the conformance kit checks it.
 */
import type { Readable } from "node:stream"
import { Context, type Effect, type Option } from "effect"
import type { Envelope } from "../protocol/Envelope.ts"
import type { SpooledBody } from "../spool/SpooledBody.ts"
import type { MailQueueError } from "./MailQueueError.ts"

/** The queue's typed failure, with its reason union, exported beside the contract it belongs to. */
export { MailQueueError, type MailQueueErrorReason } from "./MailQueueError.ts"

export type RecipientState = "queued" | "inflight" | "retry" | "delivered" | "dead"

export interface NewMessage {
  readonly id: string
  readonly envelope: Envelope
  /** Trace header(s) to prepend to the body when it is read back. */
  readonly trace: string
  readonly body: SpooledBody
  readonly receivedAt: number
  /**
   * Commit it on hold (`QueueAdmin.hold`), in the same write: never claimable until released,
   * not even for an instant (a milter's quarantine). Absent: claimable at once.
   */
  readonly held?: boolean | undefined
}

/** The stored message read back: trace header(s) followed by the body as received. */
export interface MessageBody {
  readonly size: number
  /** A fresh stream over the whole message; errors (missing spool file) surface as stream errors. */
  readonly stream: () => Readable
}

export interface Lease {
  readonly id: string
  readonly token: string
  readonly owner: string
  readonly expiresAt: number
  readonly envelope: Envelope
  readonly receivedAt: number
  /** The recipients this lease covers, with their attempt number for this delivery (1-based). */
  readonly recipients: ReadonlyArray<{ readonly rcpt: string; readonly attempt: number }>
  readonly body: MessageBody
}

export type Settlement =
  | { readonly _tag: "Delivered"; readonly rcpt: string; readonly reply: string }
  | { readonly _tag: "Retry"; readonly rcpt: string; readonly at: number; readonly reply: string }
  | { readonly _tag: "Dead"; readonly rcpt: string; readonly reply: string }

export const delivered = (rcpt: string, reply: string): Settlement => ({ _tag: "Delivered", rcpt, reply })
export const retryAt = (rcpt: string, at: number, reply: string): Settlement => ({ _tag: "Retry", rcpt, at, reply })
export const dead = (rcpt: string, reply: string): Settlement => ({ _tag: "Dead", rcpt, reply })

/**
 * What a settle records besides the recipients' outcomes, in the same transaction: reports to
 * the sender (a bounce, a delay notice) are committed with the settle — both are recorded or
 * neither — so a crash between the two cannot lose a report (RFC 5321 §6.1).
 */
export interface SettleExtras {
  /** New messages committed with the settle (not subject to `maxDepth`: they report on mail already accepted). */
  readonly reports?: ReadonlyArray<NewMessage> | undefined
  /** Marks the message's envelope `delayNotified` (epoch ms): its one delay notice went out. */
  readonly delayNotified?: number | undefined
}

export class MailQueue extends Context.Service<MailQueue, {
  /** Backend name for logs and `queue stats`. */
  readonly backend: string
  /** Whether a committed message survives a crash of the process. */
  readonly durable: boolean
  /** Pending messages above which commits fail with `Full`; sessions refuse new transactions earlier. */
  readonly maxDepth: number
  /** Makes the message durable (for durable backends) and visible to `claim`. */
  readonly commit: (message: NewMessage) => Effect.Effect<void, MailQueueError>
  /**
   * Leases the due recipients of the most urgent due message, if any: highest effective priority
   * (`Priority.effective`, with ageing), then due the longest, then arrival order. A message with
   * recipients out on a live lease is not claimable, nor is a held one (`QueueAdmin.hold`); an
   * expired lease's recipients are due again (the expired attempt stays counted).
   */
  readonly claim: (options: { readonly owner: string; readonly leaseMs: number }) => Effect.Effect<Option.Option<Lease>, MailQueueError>
  /**
   * Records the outcome for recipients of a lease; fails with `LeaseLost` if the lease expired and
   * was taken over. `extras` (reports to commit, a delay-notice mark) are recorded atomically
   * with it: a failed settle records none of them.
   */
  readonly settle: (lease: Lease, settlements: ReadonlyArray<Settlement>, extras?: SettleExtras) => Effect.Effect<void, MailQueueError>
  /** Gives a lease back untouched (graceful stop): the attempt is not counted. */
  readonly release: (lease: Lease) => Effect.Effect<void, MailQueueError>
  /** Messages with at least one recipient not yet delivered or dead. */
  readonly depth: Effect.Effect<number>
  /**
   * `depth` as this process knows it now, read without an effect: the session's backpressure
   * check at MAIL runs on every transaction and answers without a fiber when it can.
   */
  readonly depthUnsafe: () => number
  /**
   * Epoch ms of the earliest pending (not leased, not held) recipient or lease expiry, for workers deciding
   * how long to sleep. An implementation may answer earlier than that (never later): a worker
   * that wakes and finds nothing asks again.
   */
  readonly nextDueAt: Effect.Effect<Option.Option<number>, MailQueueError>
  /**
   * Completes when a commit or retry may have made work available, or after `timeoutMs`. Work
   * that arrived since the last wake-up (while nobody waited) completes the next call at once.
   */
  readonly awaitWork: (timeoutMs: number) => Effect.Effect<void>
  /** Removes dead recipients whose TTL passed (and messages left with nothing else): the dispatcher's housekeeping. */
  readonly purgeExpired: Effect.Effect<number, MailQueueError>
}>()("incoming/MailQueue") {}

export interface QueueOptions {
  /** Dead-lettered recipients are kept this long (ms) for inspection and replay. */
  readonly deadLetterTtlMs: number
  /** Commits fail with `Full` (452 4.3.1) when this many messages are pending. */
  readonly maxDepth: number
  /**
   * Ageing (`Priority.effective`): a message below normal priority that waited this long (ms)
   * since it arrived is claimed as normal, so low priority cannot starve. 0: no ageing.
   */
  readonly priorityMaxWaitMs: number
}

export const defaultQueueOptions: QueueOptions = {
  deadLetterTtlMs: 7 * 24 * 3600_000,
  maxDepth: 100_000,
  priorityMaxWaitMs: 3600_000
}
