/**
 * The SQLite backend's `QueueAdmin`: listings and lookups read on the main-thread connection,
 * operator writes (retry, set priority, delete, purge) sent through the writer thread like every other write.
 *
 * Leases waiting in this process's ready list (`ReadyList.ts`) are an implementation detail
 * until a worker takes one: their recipients are shown as waiting, with the attempt the lease
 * counted in advance taken back out.
 */
import type { SQLOutputValue } from "node:sqlite"
import { Clock, Effect, Option } from "effect"
import type { Envelope } from "../../protocol/Envelope.ts"
import type { RecipientState } from "../MailQueue.ts"
import { MailQueueError } from "../MailQueueError.ts"
import {
  type ListFilter,
  type MessageInfo,
  type MessageState,
  messageState,
  priorityDepths,
  QueueAdmin,
  type QueueStats,
  type RecipientStatus
} from "../QueueAdmin.ts"
import * as BodyStream from "./bodyStream.ts"
import type { GroupCommit } from "./GroupCommit.ts"
import { type ReadyList, waitingAs } from "./ReadyList.ts"
import { bytes, decodeEnvelope, int, optionalInt, optionalText, text } from "./sqliteSchema.ts"
import { messageBody, read, type Statements } from "./sqliteStatements.ts"

type Row = Record<string, SQLOutputValue>

// Ranks follow `messageState`: the least-finished recipient decides the message's state.
const stateRank: Record<MessageState, number> = { inflight: 6, held: 5, queued: 4, retry: 3, dead: 2, delivered: 1 }

const isRecipientState = (s: string): s is RecipientState =>
  s === "queued" || s === "inflight" || s === "retry" || s === "delivered" || s === "dead"

const notFound = (id: string) => new MailQueueError({ reason: { _tag: "NotFound", id } })

/** The tokens of the ready list's leases, for queries that show their recipients as waiting. */
const handedOffTokens = (ready: ReadyList) =>
  ready.entries.length === 0 ? "[]" : JSON.stringify(ready.entries.map((e) => e.token))

export const make = (options: {
  readonly sql: Statements
  readonly writer: GroupCommit
  readonly ready: ReadyList
  readonly bodiesDir: string
  /** The pending count, refreshed when another connection wrote. */
  readonly depthNow: () => number
  /** Ageing of low priority, for the effective levels in `stats`. */
  readonly priorityMaxWaitMs: number
}): QueueAdmin["Service"] => {
  const { sql, writer, ready } = options

  /** A recipient row as the contract shows it; `handedOff` is the token of its message's lease in the ready list. */
  const recipientStatus = (row: Row, handedOff: string | undefined): RecipientStatus => {
    const stored = text(row.state)
    if (!isRecipientState(stored)) throw new TypeError(`queue database: unknown recipient state ${stored}`)
    // Until a worker takes it, a lease in the ready list is an implementation detail: its attempt
    // has not happened, and the recipient waits as it did before (see `waitingAs`).
    const waiting = stored === "inflight" && handedOff !== undefined && row.lease_token === handedOff
    const attempts = int(row.attempts) - (waiting ? 1 : 0)
    return {
      rcpt: text(row.rcpt),
      state: waiting ? waitingAs(attempts) : stored,
      attempts,
      nextAttemptAt: int(row.next_attempt_at),
      lastReply: optionalText(row.last_reply),
      expiresAt: optionalInt(row.expires_at)
    }
  }

  const messageInfo = (
    id: string,
    envelope: Envelope,
    receivedAt: number,
    size: number,
    handedOff: string | undefined
  ): MessageInfo => {
    const rows = sql.recipients.all(id)
    const recipients = rows.map((row) => recipientStatus(row, handedOff))
    const held = rows.some((row) => int(row.held) === 1)
    return { id, envelope, receivedAt, size, state: messageState(recipients.map((r) => r.state), held), held, recipients }
  }

  const get = Effect.fn("SqliteQueue.get")(function*(id: string) {
    return yield* read(`get ${id}`, () => {
      const row = sql.info.get(id)
      if (row === undefined) return Option.none<MessageInfo>()
      return Option.some(
        messageInfo(id, decodeEnvelope(text(row.envelope)), int(row.received_at), int(row.size), ready.byId(id)?.token)
      )
    })
  })

  const list = Effect.fn("SqliteQueue.list")(function*(filter: ListFilter = {}) {
    const rank = filter.state === undefined || filter.state === "all" ? 0 : stateRank[filter.state]
    const limit = filter.limit === undefined ? -1 : Math.max(0, Math.floor(filter.limit))
    return yield* read("list", () => {
      const handedOff = new Map(ready.entries.map((e) => [e.id, e.token]))
      return sql.list.all({ rank, limit, handedOff: handedOffTokens(ready) }).map((row) => {
        const id = text(row.id)
        return messageInfo(id, decodeEnvelope(text(row.envelope)), int(row.received_at), int(row.size), handedOff.get(id))
      })
    })
  })

  const readMessage = Effect.fn("SqliteQueue.readMessage")(function*(id: string) {
    const row = yield* read(`read ${id}`, () => sql.bodyRef.get(id))
    if (row === undefined) return yield* notFound(id)
    const trace = text(row.trace)
    const size = int(row.size)
    const file = optionalText(row.body_file)
    if (file !== undefined) return messageBody(sql, options.bodiesDir, id, trace, size, file)
    const body = bytes(row.body) ?? new Uint8Array(0)
    return { size: Buffer.byteLength(trace) + size, stream: () => BodyStream.fromParts(trace, [body]) }
  })

  const retryNow = Effect.fn("SqliteQueue.retryNow")(function*(id: string) {
    const now = Math.floor(yield* Clock.currentTimeMillis)
    const changed = yield* writer.submit<boolean>({ op: "retryNow", id, now })
    // Retrying recipients taken ahead into the ready list are shown as retry, and are due now already.
    const ahead = ready.byId(id)
    return changed || (ahead !== undefined && ahead.recipients.some((r) => r.attempt > 1))
  })

  const setPriority = Effect.fn("SqliteQueue.setPriority")(function*(id: string, priority: number) {
    // Before the write: from its commit on, claims must order by priority (see `ReadyList.prioritise`).
    ready.prioritise()
    const changed = yield* writer.submit<boolean>({ op: "setPriority", id, priority })
    // A lease waiting in the ready list hands out the envelope it holds: give it the new level too.
    const entry = ready.byId(id)
    if (entry !== undefined) {
      ready.drop(entry)
      ready.add({ ...entry, envelope: { ...entry.envelope, priority } })
    }
    return changed
  })

  const hold = Effect.fn("SqliteQueue.hold")(function*(id: string) {
    // A lease of it waiting in this process's ready list goes back untaken: no worker may start
    // delivering a message that is held from now on.
    const entry = ready.byId(id)
    if (entry !== undefined) ready.drop(entry)
    const held = yield* writer.submit<boolean>({ op: "hold", id })
    if (entry !== undefined) yield* Effect.ignore(writer.submit<void>({ op: "release", id, token: entry.token }, { durable: false }))
    return held
  })

  const unhold = Effect.fn("SqliteQueue.unhold")(function*(id: string) {
    return yield* writer.submit<boolean>({ op: "unhold", id })
  })

  const remove = Effect.fn("SqliteQueue.remove")(function*(id: string) {
    const removed = yield* writer.submit<boolean>({ op: "remove", id })
    // A handed-off lease of it is lost with it; no worker should take it.
    const entry = ready.byId(id)
    if (entry !== undefined) ready.drop(entry)
    return removed
  })

  const stats: Effect.Effect<QueueStats, MailQueueError> = Clock.currentTimeMillis.pipe(
    Effect.flatMap((now) =>
      read("stats", () => {
        const depth = options.depthNow()
        const recipients: Record<RecipientState, number> = { queued: 0, inflight: 0, retry: 0, delivered: 0, dead: 0 }
        for (const row of sql.countByState.all({ handedOff: handedOffTokens(ready) })) {
          const state = text(row.state)
          if (isRecipientState(state)) recipients[state] = int(row.n)
        }
        const agedBefore = options.priorityMaxWaitMs > 0 ? now - options.priorityMaxWaitMs : null
        const byPriority = priorityDepths(sql.countByPriority.all({ agedBefore }).map((row) => [int(row.priority), int(row.n)] as const))
        return { messages: int(sql.countMessages.get()?.n), depth, held: int(sql.countHeld.get()?.n), recipients, byPriority }
      })
    ),
    Effect.withSpan("SqliteQueue.stats")
  )

  return QueueAdmin.of({
    backend: "sqlite",
    list,
    get,
    readMessage,
    retryNow,
    setPriority,
    hold,
    unhold,
    remove,
    purgeDead: writer.submit<number>({ op: "purgeDead" }).pipe(Effect.withSpan("SqliteQueue.purgeDead")),
    stats
  })
}
