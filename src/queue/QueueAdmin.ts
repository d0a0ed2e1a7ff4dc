/**
 * The `QueueAdmin` contract: what operators do with the queue (`incoming queue ...`, the admin
 * endpoint's gauges, a host app's own tooling) — list, show, read, retry, set priority, delete,
 * purge, stats.
 *
 * It is the second half of a backend: the hot path (commit, claim, settle, release) is
 * `MailQueue.ts`, and a backend's `make` builds both over one store (`QueueBackend.ts`). Nothing
 * on the data path depends on this service, so a session or a worker never waits for an
 * operator's listing.
 *
 * Hold (Postfix's `postsuper -h`/`-H`): a held message keeps its recipients' states and times,
 * but no claim leases it until it is released (`unhold`); a delivery already under way when it
 * was held completes, and what it leaves pending stays held. Held messages still count as
 * pending (depth), and the hold is stored like the rest of the message (a durable backend keeps
 * it across restarts). A message can also be committed held (`NewMessage.held`: a milter's
 * quarantine), so no claim can take it in between.
 */
import { Context, type Effect, type Option } from "effect"
import type { Envelope } from "../protocol/Envelope.ts"
import type { MessageBody, RecipientState } from "./MailQueue.ts"
import type { MailQueueError } from "./MailQueueError.ts"

/**
 * Message state as shown to operators: the least-finished state of its recipients, except that
 * a held message with recipients waiting shows as `held`.
 */
export type MessageState = "queued" | "inflight" | "held" | "retry" | "delivered" | "dead"

export interface RecipientStatus {
  readonly rcpt: string
  readonly state: RecipientState
  readonly attempts: number
  /** Epoch ms when a `queued`/`retry` recipient becomes due. */
  readonly nextAttemptAt: number
  readonly lastReply?: string | undefined
  /** Epoch ms after which a dead recipient is purged. */
  readonly expiresAt?: number | undefined
}

export interface MessageInfo {
  readonly id: string
  readonly envelope: Envelope
  readonly receivedAt: number
  readonly size: number
  readonly state: MessageState
  /** On hold: no claim leases its recipients until it is released. */
  readonly held: boolean
  readonly recipients: ReadonlyArray<RecipientStatus>
}

export interface ListFilter {
  readonly state?: MessageState | "all" | undefined
  readonly limit?: number | undefined
}

export interface QueueStats {
  readonly messages: number
  readonly depth: number
  /** Pending messages on hold (counted in `depth` too). */
  readonly held: number
  readonly recipients: Readonly<Record<RecipientState, number>>
  /**
   * Pending messages (held ones included) by effective priority: the level a claim would order
   * them by now, after ageing (`Priority.effective`). Only levels with messages, highest first;
   * the counts add up to `depth`, give or take a commit or settle made while counting.
   */
  readonly byPriority: ReadonlyArray<PriorityDepth>
}

export interface PriorityDepth {
  /** -9..9 */
  readonly priority: number
  readonly messages: number
}

/** `byPriority` from (level, count) pairs in any order: levels merged, zeros dropped, highest first. */
export const priorityDepths = (pairs: Iterable<readonly [priority: number, messages: number]>): ReadonlyArray<PriorityDepth> => {
  const counts = new Map<number, number>()
  for (const [priority, messages] of pairs) counts.set(priority, (counts.get(priority) ?? 0) + messages)
  return [...counts].filter(([, messages]) => messages > 0).sort(([a], [b]) => b - a).map(([priority, messages]) => ({ priority, messages }))
}

export class QueueAdmin extends Context.Service<QueueAdmin, {
  /** Backend name for `queue stats` and readiness reasons. */
  readonly backend: string
  /** Messages oldest first, optionally only those in one state. */
  readonly list: (filter?: ListFilter) => Effect.Effect<ReadonlyArray<MessageInfo>, MailQueueError>
  readonly get: (id: string) => Effect.Effect<Option.Option<MessageInfo>, MailQueueError>
  /** The stored message (trace header(s) + body); `NotFound` for an unknown id. */
  readonly readMessage: (id: string) => Effect.Effect<MessageBody, MailQueueError>
  /** Makes retry-waiting and dead recipients of a message due now; false if there were none. */
  readonly retryNow: (id: string) => Effect.Effect<boolean, MailQueueError>
  /**
   * Sets a message's priority (-9..9; its envelope's `priority`), for its waiting and future
   * attempts; a lease already out is not affected. False for an unknown id.
   */
  readonly setPriority: (id: string, priority: number) => Effect.Effect<boolean, MailQueueError>
  /**
   * Puts a message on hold: none of its recipients is claimed until `unhold`. False for an
   * unknown id or one with nothing pending.
   */
  readonly hold: (id: string) => Effect.Effect<boolean, MailQueueError>
  /** Releases a held message: its recipients are claimable again at their times. False if it was not held. */
  readonly unhold: (id: string) => Effect.Effect<boolean, MailQueueError>
  /** Removes a message in any state; a lease on it is lost. False for an unknown id. */
  readonly remove: (id: string) => Effect.Effect<boolean, MailQueueError>
  /** Removes every dead recipient now (and messages left with nothing else). */
  readonly purgeDead: Effect.Effect<number, MailQueueError>
  readonly stats: Effect.Effect<QueueStats, MailQueueError>
}>()("incoming/QueueAdmin") {}

/** The message state derived from its recipients (the least-finished one wins) and its hold. */
export const messageState = (states: ReadonlyArray<RecipientState>, held = false): MessageState => {
  if (states.includes("inflight")) return "inflight"
  if (held && (states.includes("queued") || states.includes("retry"))) return "held"
  if (states.includes("queued")) return "queued"
  if (states.includes("retry")) return "retry"
  if (states.includes("dead")) return "dead"
  return "delivered"
}
