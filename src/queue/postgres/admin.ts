/**
 * The operator's view of the PostgreSQL queue: listings, one message, counts, and the leases
 * each node holds. Read-only queries, answered from the shared database, so `incoming queue ...`
 * on any node sees every node's messages.
 */
import { Clock, Effect, Option } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { decode as decodeEnvelope } from "../../protocol/Envelope.ts"
import type { RecipientState } from "../MailQueue.ts"
import { type ListFilter, type MessageInfo, messageState, priorityDepths, type QueueStats, type RecipientStatus } from "../QueueAdmin.ts"

interface InfoRow {
  readonly id: string
  readonly envelope: string
  readonly received_at: bigint
  readonly size: bigint
  readonly held: boolean
  readonly rcpts: ReadonlyArray<string>
  readonly states: ReadonlyArray<RecipientState>
  readonly attempts: ReadonlyArray<number>
  readonly next_at: ReadonlyArray<bigint | string>
  readonly replies: ReadonlyArray<string | null>
  readonly expires: ReadonlyArray<bigint | string | null>
}

/** Leases one node holds now, for `queue stats`. */
export interface NodeLeases {
  readonly node: string
  readonly leases: number
  /** Epoch ms of the soonest expiry among them. */
  readonly nextExpiry: number
}

// Array elements of bigint columns may come back as strings, depending on the driver's parser.
const num = (v: bigint | string | number): number => Number(v)

const toInfo = (row: InfoRow): MessageInfo => {
  const recipients = row.rcpts.map((rcpt, i): RecipientStatus => {
    const reply = row.replies[i]
    const expires = row.expires[i]
    return {
      rcpt,
      state: row.states[i]!,
      attempts: row.attempts[i]!,
      nextAttemptAt: num(row.next_at[i]!),
      lastReply: reply === null || reply === undefined ? undefined : reply,
      expiresAt: expires === null || expires === undefined ? undefined : num(expires)
    }
  })
  return {
    id: row.id,
    envelope: decodeEnvelope(row.envelope),
    receivedAt: num(row.received_at),
    size: num(row.size),
    state: messageState(recipients.map((r) => r.state), row.held),
    held: row.held,
    recipients
  }
}

// A message's state in SQL, the same rule as `messageState`: the least-finished recipient wins,
// and a held message with recipients waiting is `held`.
const stateSql = `CASE
  WHEN bool_or(r.state = 'inflight') THEN 'inflight'
  WHEN m.held AND bool_or(r.state IN ('queued', 'retry')) THEN 'held'
  WHEN bool_or(r.state = 'queued') THEN 'queued'
  WHEN bool_or(r.state = 'retry') THEN 'retry'
  WHEN bool_or(r.state = 'dead') THEN 'dead'
  ELSE 'delivered' END`

const infoColumns = `m.id, m.envelope, m.received_at, m.size, m.held,
  array_agg(r.rcpt ORDER BY r.ord) AS rcpts,
  array_agg(r.state ORDER BY r.ord) AS states,
  array_agg(r.attempts ORDER BY r.ord) AS attempts,
  array_agg(r.next_attempt_at ORDER BY r.ord) AS next_at,
  array_agg(r.last_reply ORDER BY r.ord) AS replies,
  array_agg(r.expires_at ORDER BY r.ord) AS expires`

export const make = (sql: SqlClient.SqlClient, priorityMaxWaitMs: number) => {
  const list = (filter: ListFilter = {}): Effect.Effect<ReadonlyArray<MessageInfo>, SqlError.SqlError> => {
    const state = filter.state === undefined || filter.state === "all" ? null : filter.state
    const limit = filter.limit === undefined ? null : Math.max(0, filter.limit)
    return sql<InfoRow>`
      SELECT ${sql.literal(infoColumns)}
      FROM messages m JOIN recipients r ON r.message_id = m.id
      GROUP BY m.id
      HAVING ${state}::text IS NULL OR ${sql.literal(stateSql)} = ${state}::text
      ORDER BY m.received_at, m.seq
      LIMIT ${limit}::integer`.pipe(Effect.map((rows) => rows.map(toInfo)))
  }

  const get = (id: string): Effect.Effect<Option.Option<MessageInfo>, SqlError.SqlError> =>
    sql<InfoRow>`
      SELECT ${sql.literal(infoColumns)}
      FROM messages m JOIN recipients r ON r.message_id = m.id
      WHERE m.id = ${id}
      GROUP BY m.id`.pipe(Effect.map((rows) => Option.map(Option.fromNullishOr(rows[0]), toInfo)))

  const depth: Effect.Effect<number, SqlError.SqlError> = sql<{ n: bigint }>`SELECT count(*) AS n FROM messages WHERE due_at IS NOT NULL`.pipe(
    Effect.map((rows) => Number(rows[0]?.n ?? 0))
  )

  const stats: Effect.Effect<QueueStats, SqlError.SqlError> = Effect.gen(function*() {
    const rows = yield* sql<{ state: RecipientState; n: bigint }>`SELECT state, count(*) AS n FROM recipients GROUP BY state`
    const totals = yield* sql<{ messages: bigint; depth: bigint; held: bigint }>`
      SELECT count(*) AS messages, count(*) FILTER (WHERE due_at IS NOT NULL) AS depth,
        count(*) FILTER (WHERE held AND due_at IS NOT NULL) AS held
      FROM messages`
    // By effective priority (`Priority.effective`): the claim ages rows as it passes, and this
    // counts a message below normal that arrived at or before the cut-off as normal even before then.
    const now = yield* Clock.currentTimeMillis
    const agedBefore = priorityMaxWaitMs > 0 ? BigInt(now - priorityMaxWaitMs) : null
    const levels = yield* sql<{ priority: number; n: bigint }>`
      SELECT CASE WHEN priority < 0 AND received_at <= ${agedBefore}::bigint THEN 0 ELSE priority END AS priority, count(*) AS n
      FROM messages WHERE due_at IS NOT NULL GROUP BY 1`
    const recipients: Record<RecipientState, number> = { queued: 0, inflight: 0, retry: 0, delivered: 0, dead: 0 }
    for (const r of rows) recipients[r.state] = Number(r.n)
    return {
      messages: Number(totals[0]?.messages ?? 0),
      depth: Number(totals[0]?.depth ?? 0),
      held: Number(totals[0]?.held ?? 0),
      recipients,
      byPriority: priorityDepths(levels.map((l) => [Number(l.priority), Number(l.n)] as const))
    }
  })

  const leasesByNode: Effect.Effect<ReadonlyArray<NodeLeases>, SqlError.SqlError> = sql<{ node: string; n: bigint; next: bigint }>`
    SELECT lease_node AS node, count(*) AS n, min(lease_expires_at) AS next
    FROM messages WHERE lease_token IS NOT NULL GROUP BY lease_node ORDER BY lease_node`.pipe(
    Effect.map((rows) => rows.map((r) => ({ node: r.node, leases: Number(r.n), nextExpiry: Number(r.next) })))
  )

  return { list, get, depth, stats, leasesByNode }
}
