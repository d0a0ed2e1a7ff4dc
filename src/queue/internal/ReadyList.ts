/**
 * The SQLite queue's ready list and handoff heuristics, as pure state with no database: which
 * leases wait in memory for a worker's claim, when a commit may be handed straight to a worker,
 * when a claim must look at the database first, and when an idle claim may skip looking at all.
 *
 * A lease enters the list when a commit hands its message off (nothing in the database was due
 * before it) or when a claim that went to the database leased a few more due messages ahead.
 * Claims take the list's head unless the database holds something that claims before it. The
 * database is asked through `Probe`, so every rule here is unit-tested without SQLite
 * (`test/queue/readyList.test.ts`); `SqliteQueue.ts` wires it to its statements and its writer.
 */
import type { Envelope } from "../../protocol/Envelope.ts"

/**
 * Leases waiting in memory for a worker's claim, at most this many, counting those still being
 * written. Each holds its message leased and maybe its body bytes; a healthy dispatcher takes
 * them within a batch or two, so the bound only matters when it falls behind or stalls: commits
 * past it are stored queued, as without handoff, and claimed from the database.
 */
export const maxHandedOff = 256

/**
 * How many more due messages a claim that goes to the database leases at once, into the ready
 * list: with a backlog, workers then take most messages without a writer trip of their own. Kept
 * small because they wait leased.
 */
export const claimAhead = 8

/**
 * Body bytes the handed-off leases may keep in memory (so a worker reads them without a trip to
 * the database); a lease over this budget reads its body from the row as a claimed one does.
 */
export const maxHandedOffBytes = 8 * 1024 * 1024

/**
 * How long (clock ms) an idle claim's "nothing claimable before" holds at most when no batch
 * changed what is claimable: how late another process's write (`incoming queue retry`) can be
 * noticed by a worker that is not woken for it.
 */
export const idleRecheckMs = 100

/** A lease made by a commit or ahead of a claim, not yet taken by a worker's claim. */
export interface Ready {
  readonly id: string
  readonly token: string
  readonly expiresAt: number
  readonly envelope: Envelope
  readonly receivedAt: number
  readonly recipients: ReadonlyArray<{ readonly rcpt: string; readonly attempt: number }>
  readonly trace: string
  readonly size: number
  readonly file: string | null
  /**
   * The inline body as received (the spool's chunks), when the memory budget allowed keeping it:
   * the copy that was committed went to the writer thread.
   */
  readonly kept: ReadonlyArray<Uint8Array> | null
  readonly keptBytes: number
  /** Since when it is due, and the row of its first due recipient (ties go by row): its place in claim order. */
  readonly dueAt: number
  readonly rowid: number
}

/** A place in claim order: due since, then row. */
export interface Place {
  readonly dueAt: number
  readonly rowid: number
}

/**
 * The order claims follow among leases in the list: due longest first, ties by row (arrival).
 * Every lease in the list is at normal priority: a commit at another priority is never handed
 * off, and while any waiting row has another priority nothing is taken ahead (see `prioritise`).
 */
export const claimsBefore = (at: number, rowid: number, b: Place): boolean =>
  at < b.dueAt || (at === b.dueAt && rowid < b.rowid)

/**
 * The state a recipient leased into the ready list is shown in: the row no longer says what it
 * was, so one with earlier attempts shows as `retry`, which is what it was unless an operator's
 * retry-now or a restart had queued it again.
 */
export const waitingAs = (attemptsBefore: number): "queued" | "retry" => (attemptsBefore > 0 ? "retry" : "queued")

/** What the ready list asks of the database, read on the main thread. */
export interface Probe {
  /** The earliest time a claim could find anything there (a due recipient, a lease expiry); Infinity if none. */
  readonly nextClaimable: () => number
  readonly anyExpired: (now: number) => boolean
  /** The first recipient a database claim would lease now (its due time and row), if any. */
  readonly firstDue: (now: number) => { readonly at: number; readonly rowid: number } | undefined
  /** Whether any waiting row has a priority other than normal. */
  readonly anyPrioritised: () => boolean
}

/** What a committed writer batch changed for claims (see `writerProtocol.ts`'s `committed`). */
export interface BatchChange {
  /** Another connection wrote: nothing known about the database holds any more. */
  readonly recounted: boolean
  /** The earliest due time among recipients the batch made claimable; Infinity if none. */
  readonly dueFrom: number
  /**
   * When the batch claimed: the first waiting recipient in claim order once it committed, due now
   * or later (null: none), read in its transaction, so exact whatever the batch's other ops did.
   */
  readonly firstDue?: { readonly at: number; readonly rowid: number } | null | undefined
}

export interface ReadyList {
  /** The leases in claim order (oldest due first). */
  readonly entries: ReadonlyArray<Ready>
  readonly add: (entry: Ready) => void
  readonly drop: (entry: Ready) => void
  /** At most `maxHandedOff` entries, looked up by id only by admin operations. */
  readonly byId: (id: string) => Ready | undefined
  /** Whether `bytes` more body bytes may be kept in memory. */
  readonly canKeep: (bytes: number) => boolean
  /**
   * Whether a commit due at `receivedAt` may be handed off now, and the lease's expiry if so:
   * only once a worker claimed (so its lease length is known), not after `close`, within the
   * bound, and only for a message already due. The caller counts it with `reserve`.
   */
  readonly handoffExpiry: (now: number, receivedAt: number) => number | undefined
  /** How many leases a claim going to the database may take ahead now. */
  readonly aheadRoom: () => number
  /** Counts leases asked of the writer whose outcome is not back yet; `unreserve` when it is. */
  readonly reserve: (n: number) => void
  readonly unreserve: (n: number) => void
  readonly inFlight: () => number
  /** A worker claimed with this lease length: from now on commits may be handed off. */
  readonly workersLease: (leaseMs: number) => void
  /** No more handoffs (the queue is closing). */
  readonly close: () => void
  /** A lease expiring at `expiresAt` was made: an idle claim must look again by then. */
  readonly leased: (expiresAt: number) => void
  /** Whether a claim at `now` must go to the database before taking the list's head. */
  readonly databaseFirst: (now: number, probe: Probe) => boolean
  /** While quiet, a lower bound of the next due time without asking the database; undefined when not quiet. */
  readonly quietNextDue: (now: number) => number | undefined
  readonly committed: (change: BatchChange) => void
  /**
   * Rows at a priority other than normal may be waiting (a commit, an operator's change, a
   * restart): until an idle look finds none, every claim goes to the database (which orders by
   * priority) and nothing is handed off or taken ahead. Traffic at equal priority keeps the shortcuts.
   */
  readonly prioritise: () => void
  readonly prioritised: () => boolean
}

export const make = (options: {
  /** Only the directory's owner hands off: its start-up recovery returns what a crash leaves leased. */
  readonly enabled: boolean
  readonly maxEntries?: number
  readonly maxBytes?: number
  readonly recheckMs?: number
}): ReadyList => {
  const maxEntries = options.maxEntries ?? maxHandedOff
  const maxBytes = options.maxBytes ?? maxHandedOffBytes
  const recheckMs = options.recheckMs ?? idleRecheckMs
  const entries: Array<Ready> = []
  let bytes = 0
  let inFlight = 0
  // The lease length workers ask for; undefined until one claimed (no dispatcher, no handoff).
  let leaseMs: number | undefined
  let closed = false
  let prioritised = false
  // No recipient claimable from the database (outside the ready list) claims before this floor,
  // as far as this process knows: a claim whose ready head claims earlier takes it without
  // looking at the database. Batches lower it when they make recipients claimable (a release, a
  // retry, a queued commit; another process's writes make it unknown); a claim that looks, and a
  // batch that claimed (its `firstDue`, read in its transaction), set it to what the database
  // holds first. Leases expiring and retries coming due with time do not lower it: a commit is
  // handed off only when nothing in the database is due before it, so the ready list then drains
  // and claims go to the database.
  // The floor is a place in claim order (due time, then row), not a time alone: after a claim
  // that leased ahead, the list holds the rows just before the database's first, often in the
  // same millisecond, and each of their claims looked again (two reads on the main thread,
  // 13–25 µs, for one claim in four at 100 sessions; docs/benchmark.md, issue 20).
  const unknown: Place = { dueAt: Number.NEGATIVE_INFINITY, rowid: Number.NEGATIVE_INFINITY }
  const nothing: Place = { dueAt: Number.POSITIVE_INFINITY, rowid: Number.POSITIVE_INFINITY }
  let floor = unknown
  // When the workers keep up, every delivered message ends in an idle claim, which asks the
  // database whether anything is claimable (a read on the main thread, several µs). `quietAt` is
  // what the last look found: the earliest due time or lease expiry (a lower bound: it ignores
  // that a message with a recipient out on a lease is not claimable), lowered by the leases made
  // since. Until then, and for at most `recheckMs` after the look, nothing is claimable; a batch
  // that makes rows claimable, or another process's write (a recount), ends the quiet.
  let quietAt = Number.POSITIVE_INFINITY
  let lookedAt = Number.NEGATIVE_INFINITY
  const isQuiet = (now: number) => now < Math.min(quietAt, lookedAt + recheckMs)
  const leased = (expiresAt: number) => {
    if (expiresAt < quietAt) quietAt = expiresAt
  }

  return {
    entries,
    add: (entry) => {
      let i = entries.length
      while (i > 0 && claimsBefore(entry.dueAt, entry.rowid, entries[i - 1]!)) i--
      entries.splice(i, 0, entry)
      bytes += entry.keptBytes
    },
    drop: (entry) => {
      const i = entries.indexOf(entry)
      if (i < 0) return
      entries.splice(i, 1)
      bytes -= entry.keptBytes
    },
    byId: (id) => entries.find((e) => e.id === id),
    canKeep: (n) => bytes + n <= maxBytes,
    handoffExpiry: (now, receivedAt) => {
      if (!options.enabled || closed || prioritised || leaseMs === undefined || receivedAt > now) return undefined
      if (entries.length + inFlight >= maxEntries) return undefined
      // STRICT integer columns refuse fractions.
      const expiresAt = Math.floor(now + leaseMs)
      leased(expiresAt)
      return expiresAt
    },
    aheadRoom: () => options.enabled && !closed && !prioritised ? Math.max(0, Math.min(claimAhead, maxEntries - entries.length - inFlight)) : 0,
    reserve: (n) => void (inFlight += n),
    unreserve: (n) => void (inFlight -= n),
    inFlight: () => inFlight,
    workersLease: (ms) => void (leaseMs = ms),
    close: () => void (closed = true),
    leased,
    databaseFirst: (now, probe) => {
      const head = entries[0]
      if (head === undefined) {
        if (isQuiet(now)) return false
        if (prioritised) prioritised = probe.anyPrioritised()
        // A finite floor is a row known claimable from then (found by a look or a claim, or
        // made claimable by a batch): due now, the claim goes there without a look. A row gone
        // meanwhile (an operator's delete) costs one claim that finds nothing and resets it.
        if (!prioritised && floor.dueAt > Number.NEGATIVE_INFINITY && floor.dueAt <= now) return true
        const at = probe.nextClaimable()
        if (at <= now) return true
        floor = nothing
        quietAt = at
        lookedAt = now
        return false
      }
      if (prioritised) return true
      if (claimsBefore(head.dueAt, head.rowid, floor)) return false
      if (probe.anyExpired(now)) return true
      const first = probe.firstDue(now)
      if (first === undefined) {
        floor = nothing
        return false
      }
      floor = { dueAt: first.at, rowid: first.rowid }
      return claimsBefore(first.at, first.rowid, head)
    },
    quietNextDue: (now) => {
      if (!isQuiet(now)) return undefined
      return Math.min(entries[0]?.dueAt ?? Number.POSITIVE_INFINITY, quietAt)
    },
    committed: (change) => {
      const first = change.firstDue
      if (change.recounted) floor = unknown
      else if (first !== undefined) floor = first === null ? nothing : { dueAt: first.at, rowid: first.rowid }
      // A row made claimable again (a release, a retry) may be of any row: all of its time goes first.
      else if (change.dueFrom <= floor.dueAt) floor = { dueAt: change.dueFrom, rowid: Number.NEGATIVE_INFINITY }
      if (change.recounted || change.dueFrom !== Number.POSITIVE_INFINITY) lookedAt = Number.NEGATIVE_INFINITY
    },
    prioritise: () => void (prioritised = true),
    prioritised: () => prioritised
  }
}
