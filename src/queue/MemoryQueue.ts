/**
 * The in-process queue backend (`MailQueue` and `QueueAdmin`): same contracts, no durability. For development, tests and
 * ephemeral use — a crash loses everything in it, and it says so when it starts.
 *
 * Small bodies stay in memory; bodies the spool already put in a file stay in that file (so a
 * 50 MiB message does not move into the heap) and the file is removed when the message is done.
 *
 * A claim takes the most urgent message (effective priority, then due the longest, then arrival).
 * Messages committed at normal priority and never claimed yet ("fresh": most of them) wait in a
 * heap by due time and arrival; a claim compares its top with a scan of the other entries only
 * (leased, retrying, held, dead, other priorities). Scanning every entry made each claim cost
 * O(queued messages): with 100 sessions outrunning delivery, ~78 µs per message (issue 20).
 */
import { Clock, Effect, Exit, type Layer, Option } from "effect"
import * as Priority from "../protocol/Priority.ts"
import type { SpooledBody } from "../spool/SpooledBody.ts"
import * as BodyStream from "./internal/bodyStream.ts"
import * as WorkSignal from "./internal/WorkSignal.ts"
import {
  defaultQueueOptions,
  type Lease,
  MailQueue,
  type MessageBody,
  type NewMessage,
  type QueueOptions,
  type RecipientState
} from "./MailQueue.ts"
import { MailQueueError } from "./MailQueueError.ts"
import { QueueAdmin, type MessageInfo, messageState, priorityDepths, type RecipientStatus } from "./QueueAdmin.ts"
import * as QueueBackend from "./QueueBackend.ts"

interface Rcpt {
  rcpt: string
  state: RecipientState
  attempts: number
  nextAttemptAt: number
  lastReply: string | undefined
  expiresAt: number | undefined
}

interface Entry {
  message: NewMessage
  readonly rcpts: Array<Rcpt>
  /** On hold (`QueueAdmin.hold`): never claimed until released. */
  held: boolean
  lease: { token: string; owner: string; expiresAt: number; rcpts: ReadonlyArray<string> } | undefined
  /** Arrival order, the last tie-break of a claim. */
  readonly seq: number
  /** In the fresh heap: normal priority, not held, every recipient queued and never claimed. */
  fresh: boolean
}

/** Claim order among fresh entries: due first (they are due when received), then arrival. */
const before = (a: Entry, b: Entry) =>
  a.message.receivedAt < b.message.receivedAt || (a.message.receivedAt === b.message.receivedAt && a.seq < b.seq)

/** A claim's candidate: the entry and the priority and due time it would be claimed at. */
interface Candidate {
  readonly e: Entry
  readonly priority: number
  readonly dueAt: number
}

/** Claim order: higher effective priority, then due the longest, then arrival. */
const outranks = (e: Entry, priority: number, dueAt: number, best: Candidate | undefined) =>
  best === undefined || priority > best.priority ||
  (priority === best.priority && (dueAt < best.dueAt || (dueAt === best.dueAt && e.seq < best.e.seq)))

/** `xs` without repeats, in order; a single value costs no `Set`. */
const unique = <A>(xs: ReadonlyArray<A>): ReadonlyArray<A> => (xs.length < 2 ? xs : [...new Set(xs)])

const isPending = (r: Rcpt) => r.state === "queued" || r.state === "retry" || r.state === "inflight"

export const make = Effect.fnUntraced(function*(options: Partial<QueueOptions> = {}) {
  const opts: QueueOptions = { ...defaultQueueOptions, ...options }
  const entries = new Map<string, Entry>()
  // Every entry that is not fresh, scanned by claims; fresh ones are in `heap` (a binary min-heap
  // by `before`), which may still hold entries that stopped being fresh: skipped when on top.
  const others = new Map<string, Entry>()
  const heap: Array<Entry> = []
  let seqs = 0
  let depth = 0
  // Lease tokens only need to differ from every other token of this queue, which lives and dies
  // with the process: a counter, where a UUID per claim was a string and a crypto call per message.
  let leases = 0
  const signal = WorkSignal.make()
  yield* Effect.logWarning("memory queue: accepted mail is NOT durable and is lost if the process stops")

  // `depth` is kept in step per changed entry: scanning the whole queue on every settle would
  // make each delivery cost O(queued messages).
  const pendingOf = (e: Entry) => entries.has(e.message.id) && e.rcpts.some(isPending)
  const adjust = (e: Entry, wasPending: boolean) => {
    const pending = pendingOf(e)
    if (pending !== wasPending) depth += pending ? 1 : -1
  }

  const bodyOf = (m: NewMessage): MessageBody => ({
    size: Buffer.byteLength(m.trace) + m.body.size,
    stream: () => bodyStream(m.trace, m.body)
  })

  const info = (e: Entry): MessageInfo => ({
    id: e.message.id,
    envelope: e.message.envelope,
    receivedAt: e.message.receivedAt,
    size: e.message.body.size,
    state: messageState(e.rcpts.map((r) => r.state), e.held),
    held: e.held,
    recipients: e.rcpts.map((r): RecipientStatus => ({
      rcpt: r.rcpt,
      state: r.state,
      attempts: r.attempts,
      nextAttemptAt: r.nextAttemptAt,
      lastReply: r.lastReply,
      expiresAt: r.expiresAt
    }))
  })

  const forget = (e: Entry) => {
    entries.delete(e.message.id)
    others.delete(e.message.id)
    e.fresh = false
  }
  /** Out of the heap's order (claimed, held, reprioritised): scanned by claims from now on. */
  const demote = (e: Entry) => {
    if (!e.fresh) return
    e.fresh = false
    others.set(e.message.id, e)
  }
  const push = (e: Entry) => {
    heap.push(e)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(heap[i]!, heap[parent]!)) break
      const t = heap[i]!
      heap[i] = heap[parent]!
      heap[parent] = t
      i = parent
    }
  }
  const pop = () => {
    const last = heap.pop()!
    if (heap.length === 0) return
    heap[0] = last
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < heap.length && before(heap[l]!, heap[m]!)) m = l
      if (r < heap.length && before(heap[r]!, heap[m]!)) m = r
      if (m === i) return
      const t = heap[i]!
      heap[i] = heap[m]!
      heap[m] = t
      i = m
    }
  }
  /** The fresh entry a claim would take first, if any (stale tops dropped on the way). */
  const freshTop = (): Entry | undefined => {
    for (;;) {
      const top = heap[0]
      if (top === undefined || top.fresh) return top
      pop()
    }
  }

  const drop = (e: Entry) =>
    Effect.suspend(() => {
      forget(e)
      return e.message.body.release
    })

  const leaseLost = (id: string) => new MailQueueError({ reason: { _tag: "LeaseLost", id } })
  const storageFailed = (detail: string) => new MailQueueError({ reason: { _tag: "StorageFailed", detail } })

  const liveLease = (e: Entry | undefined, lease: Lease) =>
    e !== undefined && e.lease !== undefined && e.lease.token === lease.token

  // Same refusals as the durable backends: a second commit must not replace a queued message,
  // and a message without recipients could never leave the queue.
  const refusal = (message: NewMessage): MailQueueError | undefined => {
    if (entries.has(message.id)) return storageFailed(`message ${message.id} already exists`)
    if (message.envelope.rcptTo.length === 0) return storageFailed(`message ${message.id} has no recipients`)
    return undefined
  }

  const insert = (message: NewMessage) => {
    const rcpts = unique(message.envelope.rcptTo)
    const held = message.held === true
    const e: Entry = {
      message,
      held,
      lease: undefined,
      rcpts: rcpts.map((rcpt) => ({
        rcpt,
        state: "queued",
        attempts: 0,
        nextAttemptAt: message.receivedAt,
        lastReply: undefined,
        expiresAt: undefined
      })),
      seq: ++seqs,
      fresh: !held && (message.envelope.priority ?? Priority.normal) === Priority.normal
    }
    entries.set(message.id, e)
    if (e.fresh) push(e)
    else others.set(message.id, e)
    depth++
    signal.notify()
  }

  const queue = MailQueue.of({
    backend: "memory",
    durable: false,
    maxDepth: opts.maxDepth,
    // commit, claim, settle and release run once per message: each is one step that answers with
    // an Exit, not a generator (they never suspend).
    commit: (message) =>
      Effect.suspend(() => {
        if (depth >= opts.maxDepth) {
          return Exit.fail(new MailQueueError({ reason: { _tag: "Full", depth, maxDepth: opts.maxDepth } }))
        }
        const refused = refusal(message)
        if (refused !== undefined) return Exit.fail(refused)
        insert(message)
        return Exit.void
      }),
    claim: ({ leaseMs, owner }) =>
      Effect.withFiber((fiber) => {
        const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
        // The most urgent message goes first (effective priority, then due the longest, then arrival
        // order), as in the durable backends.
        let best: Candidate | undefined
        for (const e of others.values()) {
          if (e.lease !== undefined) {
            if (e.lease.expiresAt > now) continue
            // An expired lease: its owner died or stalled. Its recipients are due again.
            for (const r of e.rcpts) if (r.state === "inflight") r.state = "queued"
            e.lease = undefined
          }
          if (e.held) continue
          const priority = Priority.effective(
            e.message.envelope.priority ?? Priority.normal,
            e.message.receivedAt,
            now,
            opts.priorityMaxWaitMs
          )
          if (best !== undefined && priority < best.priority) continue
          for (const r of e.rcpts) {
            if ((r.state === "queued" || r.state === "retry") && r.nextAttemptAt <= now) {
              if (outranks(e, priority, r.nextAttemptAt, best)) best = { e, priority, dueAt: r.nextAttemptAt }
            }
          }
        }
        // The fresh heap's top against the best of the rest (a fresh entry is at normal priority
        // and due since it was received).
        const top = freshTop()
        if (top !== undefined && top.message.receivedAt <= now && outranks(top, Priority.normal, top.message.receivedAt, best)) {
          best = { e: top, priority: Priority.normal, dueAt: top.message.receivedAt }
        }
        if (best === undefined) return Exit.succeed(Option.none<Lease>())
        const e = best.e
        demote(e)
        const due = e.rcpts.filter((r) => (r.state === "queued" || r.state === "retry") && r.nextAttemptAt <= now)
        const token = `lease-${++leases}`
        for (const r of due) {
          r.state = "inflight"
          r.attempts++
        }
        e.lease = { token, owner, expiresAt: now + leaseMs, rcpts: due.map((r) => r.rcpt) }
        return Exit.succeed(Option.some<Lease>({
          id: e.message.id,
          token,
          owner,
          expiresAt: now + leaseMs,
          envelope: e.message.envelope,
          receivedAt: e.message.receivedAt,
          recipients: due.map((r) => ({ rcpt: r.rcpt, attempt: r.attempts })),
          body: bodyOf(e.message)
        }))
      }),
    settle: (lease, settlements, extras) =>
      Effect.withFiber((fiber) => {
        const e = entries.get(lease.id)
        const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
        if (!liveLease(e, lease) || e === undefined) return Exit.fail(leaseLost(lease.id))
        // Reports are checked before anything changes: the settle and its reports, or nothing.
        const reports = extras?.reports ?? []
        for (const m of reports) {
          const refused = refusal(m)
          if (refused !== undefined) return Exit.fail(refused)
        }
        if (reports.length > 1 && unique(reports.map((m) => m.id)).length < reports.length) return Exit.fail(storageFailed("two reports with one id"))
        for (const m of reports) insert(m)
        if (extras?.delayNotified !== undefined) {
          e.message = { ...e.message, envelope: { ...e.message.envelope, delayNotified: extras.delayNotified } }
        }
        const wasPending = pendingOf(e)
        for (const r of e.rcpts) {
          if (r.state !== "inflight" || !e.lease!.rcpts.includes(r.rcpt)) continue
          // The last settlement for the recipient, as a map built from them would keep; a search,
          // not a map per settle: most messages have one recipient.
          const s = settlements.findLast((s) => s.rcpt === r.rcpt)
          if (s === undefined) {
            // Not settled: back to the queue without counting the attempt.
            r.state = "queued"
            r.attempts = Math.max(0, r.attempts - 1)
            continue
          }
          r.lastReply = s.reply
          switch (s._tag) {
            case "Delivered":
              r.state = "delivered"
              break
            case "Retry":
              r.state = "retry"
              r.nextAttemptAt = s.at
              break
            case "Dead":
              r.state = "dead"
              r.expiresAt = now + opts.deadLetterTtlMs
              break
          }
        }
        e.lease = undefined
        const done = e.rcpts.every((r) => r.state === "delivered")
        if (done) forget(e)
        adjust(e, wasPending)
        signal.notify()
        // The body goes once the entry is gone (an in-memory body's release is one counter).
        return done ? e.message.body.release : Exit.void
      }),
    release: (lease) =>
      Effect.suspend(() => {
        const e = entries.get(lease.id)
        if (!liveLease(e, lease) || e === undefined) return Exit.fail(leaseLost(lease.id))
        for (const r of e.rcpts) {
          if (r.state === "inflight") {
            r.state = "queued"
            r.attempts = Math.max(0, r.attempts - 1)
          }
        }
        e.lease = undefined
        signal.notify()
        return Exit.void
      }),
    depth: Effect.sync(() => depth),
    depthUnsafe: () => depth,
    nextDueAt: Effect.sync(() => {
      // A fresh entry is due when it was received: the heap's top is the earliest of them.
      let min: number | undefined = freshTop()?.message.receivedAt
      for (const e of others.values()) {
        // A held message's recipients are not claimable, whatever its lease does.
        if (e.held) continue
        if (e.lease !== undefined) {
          min = min === undefined ? e.lease.expiresAt : Math.min(min, e.lease.expiresAt)
          continue
        }
        for (const r of e.rcpts) {
          if (r.state === "queued" || r.state === "retry") {
            min = min === undefined ? r.nextAttemptAt : Math.min(min, r.nextAttemptAt)
          }
        }
      }
      return Option.fromNullishOr(min)
    }),
    awaitWork: signal.await,
    purgeExpired: Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      return yield* purge((r) => r.state === "dead" && r.expiresAt !== undefined && r.expiresAt <= now)
    })
  })

  const admin = QueueAdmin.of({
    backend: "memory",
    list: (filter = {}) =>
      Effect.sync(() => {
        // Oldest first, like the durable backends (the sort is stable: ties keep arrival order).
        const out = [...entries.values()]
          .map(info)
          .filter((i) => filter.state === undefined || filter.state === "all" || i.state === filter.state)
          .toSorted((a, b) => a.receivedAt - b.receivedAt)
        return filter.limit === undefined ? out : out.slice(0, Math.max(0, filter.limit))
      }),
    get: (id) => Effect.sync(() => Option.map(Option.fromNullishOr(entries.get(id)), info)),
    readMessage: (id) =>
      Effect.suspend(() => {
        const e = entries.get(id)
        return e === undefined
          ? Effect.fail(new MailQueueError({ reason: { _tag: "NotFound", id } }))
          : Effect.succeed(bodyOf(e.message))
      }),
    retryNow: (id) =>
      Effect.gen(function*() {
        const e = entries.get(id)
        if (e === undefined) return false
        const now = yield* Clock.currentTimeMillis
        const wasPending = pendingOf(e)
        let changed = false
        for (const r of e.rcpts) {
          if (r.state === "retry" || r.state === "dead") {
            r.state = "queued"
            r.nextAttemptAt = now
            r.expiresAt = undefined
            changed = true
          }
        }
        adjust(e, wasPending)
        if (changed) {
          // Never the case for a fresh entry (it has no retry or dead recipient); kept in step anyway.
          demote(e)
          signal.notify()
        }
        return changed
      }),
    setPriority: (id, priority) =>
      Effect.sync(() => {
        const e = entries.get(id)
        if (e === undefined) return false
        demote(e)
        e.message = { ...e.message, envelope: { ...e.message.envelope, priority } }
        signal.notify()
        return true
      }),
    hold: (id) =>
      Effect.sync(() => {
        const e = entries.get(id)
        if (e === undefined || !pendingOf(e)) return false
        demote(e)
        e.held = true
        return true
      }),
    unhold: (id) =>
      Effect.sync(() => {
        const e = entries.get(id)
        if (e === undefined || !e.held) return false
        e.held = false
        signal.notify()
        return true
      }),
    remove: (id) =>
      Effect.gen(function*() {
        const e = entries.get(id)
        if (e === undefined) return false
        const wasPending = pendingOf(e)
        yield* drop(e)
        adjust(e, wasPending)
        return true
      }),
    purgeDead: Effect.suspend(() => purge((r) => r.state === "dead")),
    stats: Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const recipients: Record<RecipientState, number> = { queued: 0, inflight: 0, retry: 0, delivered: 0, dead: 0 }
      let held = 0
      const levels: Array<readonly [number, number]> = []
      for (const e of entries.values()) {
        for (const r of e.rcpts) recipients[r.state]++
        if (!pendingOf(e)) continue
        if (e.held) held++
        const level = e.message.envelope.priority ?? Priority.normal
        levels.push([Priority.effective(level, e.message.receivedAt, now, opts.priorityMaxWaitMs), 1])
      }
      return { messages: entries.size, depth, held, recipients, byPriority: priorityDepths(levels) }
    })
  })

  return { queue, admin } satisfies QueueBackend.QueueBackend

  function purge(pred: (r: Rcpt) => boolean) {
    return Effect.gen(function*() {
      let n = 0
      for (const e of [...entries.values()]) {
        const before = e.rcpts.length
        const keep = e.rcpts.filter((r) => !pred(r))
        n += before - keep.length
        if (keep.length === before) continue
        const wasPending = pendingOf(e)
        e.rcpts.splice(0, e.rcpts.length, ...keep)
        if (e.rcpts.every((r) => r.state === "delivered")) yield* drop(e)
        adjust(e, wasPending)
      }
      return n
    })
  }
})

const bodyStream = (trace: string, body: SpooledBody) =>
  body._tag === "InMemory" ? BodyStream.fromParts(trace, body.chunks) : BodyStream.fromFile(trace, body.path)

export const layer = (options: Partial<QueueOptions> = {}): Layer.Layer<MailQueue | QueueAdmin> =>
  QueueBackend.layer(make(options))
