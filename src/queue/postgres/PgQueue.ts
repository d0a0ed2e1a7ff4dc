/**
 * The shared `MailQueue` on PostgreSQL: several Incoming nodes on one database, any of them able
 * to deliver any message, a dead node's messages taken over by the others once its leases expire.
 *
 * - Durability: each commit is part of a group-commit statement (`GroupCommit.ts`) on a
 *   connection with `synchronous_commit = on`; the session's 250 follows the COMMIT. Bodies live
 *   in the database (`bodies.ts`), so no node's disk holds anything another node needs.
 * - Claims: one statement, `FOR UPDATE SKIP LOCKED` (the `claim_many` function in `schema.ts`), so
 *   concurrent workers of every node never wait for, nor take, each other's rows; the workers of
 *   this node that wait at once share a statement (`Claims.ts`), and so do the settles that are
 *   ready together (`Settles.ts`).
 * - Leases: owner node, expiry and a fencing token from a sequence. Settle and release act only
 *   when the row still carries the caller's token (`LeaseLost` otherwise). A heartbeat renews
 *   the leases this node holds every third of their length, so leases can be short (a dead
 *   node's mail moves within `[delivery] lease`) while a slow delivery keeps its lease; every
 *   node also runs the idempotent reaper that returns expired leases to the queue.
 * - Wake-ups: a NOTIFY inside the committing transaction wakes the other nodes' idle workers;
 *   a node's own commits wake its workers directly. Notifications are lost while the LISTEN
 *   connection reconnects (each reconnect wakes the workers once to catch up), and the
 *   dispatcher polls anyway (`idlePollMs`), so a lost one delays delivery, never loses it.
 * - Outages: any database error becomes `StorageFailed` (451 4.3.0 for a session) and the pool
 *   reconnects by itself when the database is back.
 *
 * Time comes from Effect's `Clock`, like the other backends (see `schema.ts` on clocks).
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Effect, Layer, Option, Queue, Schedule } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import type { Scope } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { decode as decodeEnvelope } from "../../protocol/Envelope.ts"
import * as Outage from "../internal/Outage.ts"
import * as WorkSignal from "../internal/WorkSignal.ts"
import { defaultQueueOptions, type Lease, MailQueue, type QueueOptions } from "../MailQueue.ts"
import { QueueAdmin } from "../QueueAdmin.ts"
import * as QueueBackend from "../QueueBackend.ts"
import { fromStorageException, MailQueueError } from "../MailQueueError.ts"
import * as Admin from "./admin.ts"
import * as Bodies from "./bodies.ts"
import * as Claims from "./Claims.ts"
import * as GroupCommit from "./GroupCommit.ts"
import * as Settles from "./Settles.ts"
import { defaultNodeId, defaults, isSchemaName, type PgQueueOptions } from "./PgQueueOptions.ts"
import * as Schema from "./schema.ts"

export { defaultNodeId, defaults, type PgQueueOptions, redactUrl } from "./PgQueueOptions.ts"

/** The connection pool, with the settings the queue's guarantees rely on. */
export const connect = (options: PgQueueOptions, nodeId: string): Effect.Effect<PgClient.PgClient & SqlClient.SqlClient, SqlError.SqlError, Scope.Scope> =>
  PgClient.make({
    url: options.url,
    maxConnections: (options.poolSize ?? defaults.poolSize) + 1,
    minConnections: 1,
    connectTimeout: options.connectTimeoutMs ?? defaults.connectTimeoutMs,
    applicationName: `incoming ${nodeId}`.slice(0, 63),
    startupParameters: {
      search_path: options.schema ?? defaults.schema,
      // The 250 is sent after COMMIT returns: it must mean "flushed", whatever the server default.
      synchronous_commit: "on"
    }
  }).pipe(
    Effect.provide(Reactivity.layer),
    // Connection lifetimes (idle timeout, connect timeout) are wall-clock matters: the pool keeps
    // real time even where the queue's own times come from a TestClock.
    Effect.provideService(Clock.Clock, Clock.Clock.defaultValue())
  )

const failed = (what: string) => (cause: unknown) =>
  cause instanceof MailQueueError ? cause : fromStorageException(cause, what)

export const make = Effect.fnUntraced(function*(options: PgQueueOptions) {
  const opts: QueueOptions = { ...defaultQueueOptions, ...options }
  const schema = options.schema ?? defaults.schema
  if (!isSchemaName(schema)) {
    return yield* new MailQueueError({ reason: { _tag: "StorageFailed", detail: `bad schema name ${JSON.stringify(schema)}: lower-case letters, digits and _` } })
  }
  const nodeId = options.nodeId ?? defaultNodeId()
  const sql = yield* connect(options, nodeId).pipe(Effect.mapError(failed("connecting to PostgreSQL")))
  yield* Schema.migrate(sql, schema).pipe(Effect.mapError(failed("migrating the queue schema")))
  const admin = Admin.make(sql, opts.priorityMaxWaitMs)
  const signal = WorkSignal.make()
  const wake = (n: number) => {
    for (let i = 0; i < n; i++) signal.notify()
  }

  // Pending messages as this node knows them: kept in step with its own commits and settles,
  // recounted from the database by the maintenance loop (other nodes change it too).
  let depth = yield* admin.depth.pipe(Effect.mapError(failed("counting the queue")))
  const writer = yield* GroupCommit.make({ sql, nodeId, writers: options.writers ?? defaults.writers })

  // Leases this node holds, by token: the heartbeat renews them.
  const held = new Map<bigint, { readonly id: string; readonly leaseMs: number }>()
  const claims = yield* Claims.make({
    sql,
    nodeId,
    priorityMaxWaitMs: opts.priorityMaxWaitMs,
    // A lease whose worker was interrupted before it got it: back to the queue (or to its expiry).
    release: (row) => Effect.ignore(sql`SELECT release(${row.id}, ${row.token})`)
  })
  const settles = yield* Settles.make({ sql, deadLetterTtlMs: opts.deadLetterTtlMs })

  const leaseLost = (id: string) => new MailQueueError({ reason: { _tag: "LeaseLost", id } })

  const toLease = (row: Claims.ClaimRow, owner: string): Lease => ({
    id: row.id,
    token: String(row.token),
    owner,
    expiresAt: Number(row.expires_at),
    envelope: decodeEnvelope(row.envelope),
    receivedAt: Number(row.received_at),
    recipients: row.rcpts.map((rcpt, i) => ({ rcpt, attempt: row.attempts[i]! })),
    body: {
      size: Buffer.byteLength(row.trace) + Number(row.size),
      stream: () => Bodies.stream(sql, row.id, row.trace)
    }
  })

  const tokenOf = (lease: Lease): bigint | undefined => {
    try {
      return BigInt(lease.token)
    } catch {
      return undefined
    }
  }

  // --- background fibers, owned by the layer's scope -----------------------------------------

  if (options.heartbeat !== false) {
    const beat = Effect.gen(function*() {
      const leases = [...held.entries()]
      if (leases.length === 0) return
      const now = yield* Clock.currentTimeMillis
      const byLength = new Map<number, Array<readonly [bigint, { readonly id: string; readonly leaseMs: number }]>>()
      for (const entry of leases) byLength.set(entry[1].leaseMs, [...(byLength.get(entry[1].leaseMs) ?? []), entry])
      for (const [leaseMs, group] of byLength) {
        const renewed = yield* sql<{ extend: bigint }>`SELECT extend FROM extend(${group.map(([t]) => t)}::bigint[], ${BigInt(now + leaseMs)})`
        const alive = new Set(renewed.map((r) => r.extend))
        for (const [token, l] of group) {
          // Gone: settled meanwhile, or fenced off (expired and taken over). Either way not ours.
          if (!alive.has(token) && held.get(token) === l) held.delete(token)
        }
      }
    })
    // A third of the shortest lease held; with none held, look again soon (a claim may come any time).
    const interval = Effect.sync(() => (held.size === 0 ? 250 : Math.max(100, Math.min(...[...held.values()].map((l) => l.leaseMs)) / 3)))
    const beating = Outage.make("lease heartbeat", "retrying")
    yield* Effect.forkScoped(Effect.forever(
      Effect.flatMap(interval, (ms) => Effect.sleep(ms)).pipe(
        Effect.andThen(beat),
        Effect.andThen(beating.ok),
        Effect.catchCause(beating.failed)
      )
    ))
  }

  const maintenanceMs = options.maintenanceIntervalMs ?? defaults.maintenanceIntervalMs
  if (maintenanceMs > 0) {
    const maintain = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const reaped = yield* sql<{ reap: number }>`SELECT reap(${BigInt(now)})`
      const n = reaped[0]?.reap ?? 0
      if (n > 0) yield* Effect.logInfo(`returned ${n} expired lease(s) to the queue`)
      depth = yield* admin.depth
    })
    const maintaining = Outage.make("queue maintenance", "retrying")
    yield* Effect.forkScoped(Effect.forever(
      Effect.sleep(maintenanceMs).pipe(
        Effect.andThen(maintain),
        Effect.andThen(maintaining.ok),
        Effect.catchCause(maintaining.failed)
      )
    ))
  }

  // LISTEN on a connection of its own; re-subscribed after a connection loss, and every
  // re-subscription wakes the workers once, for whatever was notified while it was down.
  let subscriptions = 0
  const listening = Outage.make("LISTEN connection", "polling until it is back")
  const listen = Effect.gen(function*() {
    const notifications = yield* sql.listen(Schema.channel)
    yield* listening.ok
    if (subscriptions++ > 0) wake(1)
    while (true) {
      const n = yield* Queue.take(notifications)
      const [from, count] = n.payload.split(" ")
      if (from !== nodeId) wake(Math.max(1, Math.min(64, Number(count) || 1)))
    }
  }).pipe(Effect.scoped)
  yield* Effect.forkScoped(listen.pipe(
    Effect.catchCause(listening.failed),
    Effect.repeat(Schedule.spaced(1_000))
  ))

  yield* Effect.logInfo(`postgres queue: schema ${schema}, node ${nodeId}, ${depth} pending`)

  const queue = MailQueue.of({
    backend: "postgres",
    durable: true,
    maxDepth: opts.maxDepth,
    commit: (message) =>
      Effect.gen(function*() {
        // Across nodes this is a soft bound: each node checks the count it knows (recounted by
        // the maintenance loop), so several nodes together may overshoot by their batches.
        if (depth >= opts.maxDepth) return yield* new MailQueueError({ reason: { _tag: "Full", depth, maxDepth: opts.maxDepth } })
        if (message.envelope.rcptTo.length === 0) {
          return yield* new MailQueueError({ reason: { _tag: "StorageFailed", detail: `message ${message.id} has no recipients` } })
        }
        yield* writer.commit(message)
        depth++
        signal.notify()
        // The database holds its own copy now: give back the spool's memory budget or file.
        yield* message.body.release
      }),
    claim: ({ leaseMs, owner }) =>
      Effect.map(claims.claim(owner, leaseMs), Option.map((row) => {
        held.set(row.token, { id: row.id, leaseMs })
        return toLease(row, owner)
      })),
    settle: (lease, settlements, extras) =>
      Effect.gen(function*() {
        const token = tokenOf(lease)
        if (token === undefined) return yield* leaseLost(lease.id)
        held.delete(token)
        const now = yield* Clock.currentTimeMillis
        const reports = extras?.reports ?? []
        const delayNotified = extras?.delayNotified
        // Most settles carry nothing else: they share a statement with the settles ready with them.
        const alone = Effect.gen(function*() {
          const rows = yield* sql<{ settle: string }>`SELECT settle(
            ${lease.id}, ${token},
            ${settlements.map((s) => s.rcpt)}::text[],
            ${settlements.map((s) => (s._tag === "Delivered" ? "delivered" : s._tag === "Retry" ? "retry" : "dead"))}::text[],
            ${settlements.map((s) => BigInt(s._tag === "Retry" ? s.at : 0))}::bigint[],
            ${settlements.map((s) => s.reply)}::text[],
            ${BigInt(now)}, ${BigInt(opts.deadLetterTtlMs)})`
          const outcome = rows[0]?.settle
          // A lost lease fails the transaction: its reports are not stored either.
          if (outcome === "lost") return yield* leaseLost(lease.id)
          if (delayNotified !== undefined) {
            yield* sql`UPDATE messages SET envelope = jsonb_set(envelope::jsonb, '{delayNotified}', to_jsonb(${BigInt(Math.floor(delayNotified))}::bigint))::text
              WHERE id = ${lease.id}`
          }
          for (const m of reports) {
            if (m.envelope.rcptTo.length === 0) return yield* new MailQueueError({ reason: { _tag: "StorageFailed", detail: `message ${m.id} has no recipients` } })
            if (!(yield* GroupCommit.storeInTransaction(sql, nodeId, m))) {
              return yield* new MailQueueError({ reason: { _tag: "StorageFailed", detail: `message ${m.id} already exists` } })
            }
          }
          return outcome
        })
        // The settle and its reports in one transaction: both or neither.
        const outcome = reports.length > 0 || delayNotified !== undefined
          ? yield* sql.withTransaction(alone)
          : yield* settles.settle({ id: lease.id, token, settlements, now })
        if (outcome === "lost") return yield* leaseLost(lease.id)
        if (outcome === "done" || outcome === "idle") depth = Math.max(0, depth - 1)
        depth += reports.length
        yield* Effect.forEach(reports, (m) => m.body.release, { discard: true })
        signal.notify()
      }).pipe(Effect.mapError(failed("settling"))),
    release: (lease) =>
      Effect.gen(function*() {
        const token = tokenOf(lease)
        if (token === undefined) return yield* leaseLost(lease.id)
        held.delete(token)
        const rows = yield* sql<{ release: boolean }>`SELECT release(${lease.id}, ${token})`
        if (rows[0]?.release !== true) return yield* leaseLost(lease.id)
        signal.notify()
      }).pipe(Effect.mapError(failed("releasing"))),
    depth: admin.depth.pipe(
      Effect.tap((n) => Effect.sync(() => (depth = n))),
      // The contract's depth cannot fail: while the database is away, the last count known.
      Effect.orElseSucceed(() => depth)
    ),
    depthUnsafe: () => depth,
    nextDueAt: Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql<{ at: bigint | null }>`
        SELECT least(
          (SELECT min(due_at) FROM messages WHERE due_at IS NOT NULL AND NOT held AND (lease_token IS NULL OR lease_expires_at <= ${BigInt(now)})),
          -- Leases are only taken on due messages: this reads the leased and held ones, not the backlog.
          (SELECT min(lease_expires_at) FROM messages WHERE due_at <= ${BigInt(now)} AND lease_token IS NOT NULL)
        ) AS at`
      const at = rows[0]?.at
      return at === null || at === undefined ? Option.none() : Option.some(Number(at))
    }).pipe(Effect.mapError(failed("reading the next due time"))),
    awaitWork: signal.await,
    purgeExpired: Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql<{ purge_dead: number }>`SELECT purge_dead(${BigInt(now)})`
      return rows[0]?.purge_dead ?? 0
    }).pipe(Effect.mapError(failed("purging")))
  })
  const adminService = QueueAdmin.of({
    backend: "postgres",
    list: (filter) => admin.list(filter).pipe(Effect.mapError(failed("listing"))),
    get: (id) => admin.get(id).pipe(Effect.mapError(failed("reading"))),
    readMessage: (id) =>
      Effect.gen(function*() {
        const rows = yield* sql<{ trace: string; size: bigint }>`SELECT trace, size FROM messages WHERE id = ${id}`
        const row = rows[0]
        if (row === undefined) return yield* new MailQueueError({ reason: { _tag: "NotFound", id } })
        return { size: Buffer.byteLength(row.trace) + Number(row.size), stream: () => Bodies.stream(sql, id, row.trace) }
      }).pipe(Effect.mapError(failed("reading"))),
    retryNow: (id) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const rows = yield* sql<{ retry_now: boolean | null }>`SELECT retry_now(${id}, ${BigInt(now)})`
        const wasPending = rows[0]?.retry_now
        if (wasPending === null || wasPending === undefined) return false
        if (!wasPending) depth++
        signal.notify()
        return true
      }).pipe(Effect.mapError(failed("retrying"))),
    setPriority: (id, priority) =>
      Effect.gen(function*() {
        const rows = yield* sql<{ id: string }>`
          UPDATE messages SET priority = ${priority},
            envelope = jsonb_set(envelope::jsonb, '{priority}', to_jsonb(${priority}::integer))::text
          WHERE id = ${id} RETURNING id`
        if (rows.length === 0) return false
        // Claim order changed: idle workers here and on other nodes look again.
        yield* sql`SELECT pg_notify(${Schema.channel}, '')`
        signal.notify()
        return true
      }).pipe(Effect.mapError(failed("setting the priority of"))),
    // A flag on the message row, which every node's claim skips. This queue leases one message
    // per claim and keeps no claimed-ahead leases, so there is nothing to give back here; a
    // delivery already under way finishes and what it leaves pending stays held.
    hold: (id) =>
      sql<{ id: string }>`UPDATE messages SET held = true WHERE id = ${id} AND due_at IS NOT NULL RETURNING id`.pipe(
        Effect.map((rows) => rows.length > 0),
        Effect.mapError(failed("holding"))
      ),
    unhold: (id) =>
      Effect.gen(function*() {
        const rows = yield* sql<{ id: string }>`UPDATE messages SET held = false WHERE id = ${id} AND held RETURNING id`
        if (rows.length === 0) return false
        // Claimable again: idle workers here and on other nodes look again.
        yield* sql`SELECT pg_notify(${Schema.channel}, '')`
        signal.notify()
        return true
      }).pipe(Effect.mapError(failed("releasing the hold of"))),
    remove: (id) =>
      Effect.gen(function*() {
        const rows = yield* sql<{ pending: boolean }>`DELETE FROM messages WHERE id = ${id} RETURNING due_at IS NOT NULL AS pending`
        if (rows.length === 0) return false
        if (rows[0]!.pending) depth = Math.max(0, depth - 1)
        return true
      }).pipe(Effect.mapError(failed("removing"))),
    purgeDead: sql<{ purge_dead: number }>`SELECT purge_dead(NULL)`.pipe(
      Effect.map((rows) => rows[0]?.purge_dead ?? 0),
      Effect.mapError(failed("purging"))
    ),
    stats: admin.stats.pipe(Effect.mapError(failed("counting")))
  })
  return {
    queue,
    admin: adminService,
    /** Leases per node now, for `queue stats` (not part of the contracts: a shared queue's view). */
    leasesByNode: admin.leasesByNode.pipe(Effect.mapError(failed("counting leases"))),
    nodeId
  } satisfies QueueBackend.QueueBackend & Record<string, unknown>
})

export type PgQueue = Effect.Success<ReturnType<typeof make>>

/** The queue as a layer; its pool, LISTEN connection and background fibers close with it. */
export const layer = (options: PgQueueOptions): Layer.Layer<MailQueue | QueueAdmin, MailQueueError> =>
  QueueBackend.layer(make(options))

