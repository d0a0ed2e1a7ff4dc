/**
 * Messages between the SQLite queue (main thread) and its writer thread (`writerThread.ts`).
 *
 * Every write of the queue is an `Op`: plain data, so it can cross to the writer thread, which
 * owns the only write connection. Times and tokens are decided on the main thread (Effect's
 * `Clock`, `randomUUID`) and travel inside the op, so the writer never reads a clock.
 */
import type { MailQueueErrorReason } from "../MailQueueError.ts"

export interface WriterConfig {
  readonly path: string
  readonly busyTimeoutMs: number
  readonly maxPageCount: number | undefined
}

export interface SettleRow {
  readonly rcpt: string
  readonly tag: "Delivered" | "Retry" | "Dead"
  readonly reply: string
  /** Retry: next attempt (epoch ms); Dead: expiry of the dead letter. */
  readonly at: number
}

/**
 * A commit that may be handed straight to the in-process dispatcher: if nothing in the database
 * is due before it (and no lease expired), its recipients are inserted already leased under this
 * token, as a claim at commit time would have leased them. Otherwise it is stored queued.
 */
export interface Handoff {
  readonly owner: string
  readonly token: string
  readonly expiresAt: number
  /** Epoch ms now, for the expired-lease check. */
  readonly now: number
}

/** A message as the writer stores it: a commit's, or a report committed along with a settle (stored queued). */
export interface ReportRow {
  readonly id: string
  readonly envelope: string
  readonly trace: string
  readonly receivedAt: number
  readonly size: number
  /** The body stored in the row; a large one that owns its buffer is moved to the writer, not copied. */
  readonly inline: Uint8Array | null
  readonly file: string | null
  readonly rcpts: ReadonlyArray<string>
  /** The envelope's priority, stored on each recipient row (a handed-off commit is always normal). */
  readonly priority: number
}

/** What a commit did: `rowid` (its first recipient row, the claim order's tie-break) when handed off. */
export type CommitResult = { readonly handedOff: false } | { readonly handedOff: true; readonly rowid: number }

export type Op =
  | ReportRow & {
    readonly op: "commit"
    readonly maxDepth: number
    /** Stored on hold (never handed off). */
    readonly held: boolean
    readonly handoff: Handoff | null
  }
  | {
    readonly op: "claim"
    readonly owner: string
    readonly token: string
    readonly expiresAt: number
    readonly now: number
    /** Up to this many more due messages are leased too (tokens `<token>.1`, `.2`...), for the claims that follow. */
    readonly ahead: number
    /** Ageing (`Priority.effective`): rows below normal whose message arrived this long ago become normal; 0: none. */
    readonly maxWaitMs: number
    /**
     * Whether rows below normal priority may be leased: not while the ready list holds normal
     * leases, which claim before them.
     */
    readonly belowNormal: boolean
    /** The owner those leases carry until a worker takes one (the ready list's, like handoffs). */
    readonly aheadOwner: string
  }
  | {
    readonly op: "settle"
    readonly id: string
    readonly token: string
    readonly rows: ReadonlyArray<SettleRow>
    /** Every recipient of the lease is delivered: try deleting the message in one statement first. */
    readonly allDelivered: boolean
    /** Messages committed in the same transaction (bounces, delay notices), stored queued. */
    readonly reports: ReadonlyArray<ReportRow>
    /** Sets the stored envelope's `delayNotified` (epoch ms). */
    readonly delayNotified: number | null
  }
  /** Moves a live lease's expiry (a handed-off lease popped late); the value says whether the token still held. */
  | { readonly op: "extend"; readonly id: string; readonly token: string; readonly owner: string; readonly expiresAt: number }
  | { readonly op: "release"; readonly id: string; readonly token: string }
  | { readonly op: "retryNow"; readonly id: string; readonly now: number }
  | { readonly op: "remove"; readonly id: string }
  /** Sets the message's priority (envelope and rows); the value says whether the message exists. */
  | { readonly op: "setPriority"; readonly id: string; readonly priority: number }
  /** Puts a pending message on hold (false: unknown or nothing pending); `unhold` releases it (false: not held). */
  | { readonly op: "hold"; readonly id: string }
  | { readonly op: "unhold"; readonly id: string }
  | { readonly op: "purgeExpired"; readonly now: number }
  | { readonly op: "purgeDead" }
  /** Nothing to write: the batch it rides in recounts the pending messages if another connection wrote. */
  | { readonly op: "recount" }

/** One message a claim leased; a claim's value is the list of them, oldest first (empty: nothing due). */
export interface Claimed {
  readonly id: string
  readonly token: string
  /** When its first leased recipient became due, and that recipient's row: its place in claim order. */
  readonly dueAt: number
  readonly rowid: number
  readonly recipients: ReadonlyArray<{ readonly rcpt: string; readonly attempt: number }>
  readonly envelope: string
  readonly trace: string
  readonly receivedAt: number
  readonly size: number
  readonly file: string | null
}

export type Outcome =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly reason: MailQueueErrorReason }

export interface BatchRequest {
  readonly type: "batch"
  /** Whether the batch must be flushed (`synchronous=FULL`) before its outcome is reported. */
  readonly durable: boolean
  /** The pending count as the main thread knows it, for the depth check of commits. */
  readonly depth: number
  readonly ops: ReadonlyArray<Op>
}

export type Request = BatchRequest | { readonly type: "close" }

export type Reply =
  | { readonly type: "ready" }
  | { readonly type: "openFailed"; readonly message: string; readonly code: string | undefined }
  | {
    readonly type: "committed"
    readonly outcomes: ReadonlyArray<Outcome>
    /** Set when another connection changed the database: the pending count before this batch. */
    readonly recount: number | undefined
    readonly depthDelta: number
    /**
     * The earliest due time among recipients the batch made claimable from the database (a
     * queued commit, a retry, a release...; -Infinity when not known), or Infinity if none: then
     * there is no worker to wake. Handed-off commits do not count; the queue wakes a worker for each.
     */
    readonly dueFrom: number
    /**
     * Set when the batch claimed: the first waiting normal-priority recipient in claim order as
     * the batch commits, due now or later (null: none), so the ready list knows what its leases
     * taken ahead claim before without asking (see `ReadyList.BatchChange`).
     */
    readonly firstDue: { readonly at: number; readonly rowid: number } | null | undefined
    readonly removeFiles: ReadonlyArray<string>
  }
  | { readonly type: "failed"; readonly message: string; readonly code: string | undefined }
