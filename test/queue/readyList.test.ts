/**
 * The SQLite queue's ready list and handoff heuristics on their own, with no database: claim
 * order, the handoff bound and budget, when a claim must look at the database first, and the
 * quiet period that lets idle claims skip looking.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ReadyList from "../../src/queue/internal/ReadyList.ts"

const entry = (id: string, dueAt: number, rowid: number, keptBytes = 0): ReadyList.Ready => ({
  id,
  token: `token-${id}`,
  expiresAt: dueAt + 60_000,
  envelope: { mailFrom: "a@example.net", rcptTo: ["b@example.com"], helo: "h", clientAddress: "192.0.2.1", secure: false, listener: "mx" },
  receivedAt: dueAt,
  recipients: [{ rcpt: "b@example.com", attempt: 1 }],
  trace: "",
  size: keptBytes,
  file: null,
  kept: keptBytes > 0 ? [new Uint8Array(keptBytes)] : null,
  keptBytes,
  dueAt,
  rowid
})

/** A database that answers from fixed values and counts how often it was asked. */
const probe = (state: { next?: number; expired?: boolean; first?: { at: number; rowid: number }; prioritised?: boolean }) => {
  const asked = { nextClaimable: 0, anyExpired: 0, firstDue: 0 }
  const p: ReadyList.Probe = {
    nextClaimable: () => (asked.nextClaimable++, state.next ?? Number.POSITIVE_INFINITY),
    anyExpired: () => (asked.anyExpired++, state.expired ?? false),
    firstDue: () => (asked.firstDue++, state.first),
    anyPrioritised: () => state.prioritised ?? false
  }
  return { p, asked }
}

describe("ReadyList", () => {
  it("keeps entries in claim order: due longest first, ties by row", () => {
    const r = ReadyList.make({ enabled: true })
    r.add(entry("c", 30, 3))
    r.add(entry("a", 10, 5))
    r.add(entry("b", 10, 7))
    r.add(entry("z", 10, 1))
    assert.deepStrictEqual(r.entries.map((e) => e.id), ["z", "a", "b", "c"])
    r.drop(r.byId("a")!)
    assert.deepStrictEqual(r.entries.map((e) => e.id), ["z", "b", "c"])
    assert.isUndefined(r.byId("a"))
  })

  it("hands off only once a worker claimed, only due messages, within the bound, and not after close", () => {
    const r = ReadyList.make({ enabled: true, maxEntries: 2 })
    assert.isUndefined(r.handoffExpiry(1000, 1000), "no worker has claimed yet")
    r.workersLease(30_000)
    assert.strictEqual(r.handoffExpiry(1000, 1000), 31_000)
    assert.isUndefined(r.handoffExpiry(1000, 1001), "a message stamped in the future is not claimable yet")
    r.reserve(1)
    r.add(entry("a", 1000, 1))
    assert.isUndefined(r.handoffExpiry(1000, 1000), "one in the list and one being written reach the bound of 2")
    r.unreserve(1)
    assert.strictEqual(r.handoffExpiry(1000, 1000), 31_000)
    r.close()
    assert.isUndefined(r.handoffExpiry(1000, 1000))
    assert.strictEqual(r.aheadRoom(), 0)
  })

  it("a process that does not own the directory never hands off or claims ahead", () => {
    const r = ReadyList.make({ enabled: false })
    r.workersLease(30_000)
    assert.isUndefined(r.handoffExpiry(1000, 1000))
    assert.strictEqual(r.aheadRoom(), 0)
  })

  it("claims ahead at most claimAhead, and never past the bound", () => {
    const r = ReadyList.make({ enabled: true, maxEntries: 10 })
    assert.strictEqual(r.aheadRoom(), ReadyList.claimAhead)
    r.reserve(5)
    assert.strictEqual(r.aheadRoom(), 5)
    assert.strictEqual(r.inFlight(), 5)
  })

  it("keeps body bytes in memory only within the budget", () => {
    const r = ReadyList.make({ enabled: true, maxBytes: 100 })
    assert.isTrue(r.canKeep(100))
    r.add(entry("a", 1, 1, 60))
    assert.isTrue(r.canKeep(40))
    assert.isFalse(r.canKeep(41))
    r.drop(r.entries[0]!)
    assert.isTrue(r.canKeep(100))
  })

  it("with an empty list, a claim looks at the database once, then stays quiet until something is due", () => {
    const r = ReadyList.make({ enabled: true, recheckMs: 100 })
    const { asked, p } = probe({ next: 5000 })
    assert.isFalse(r.databaseFirst(1000, p))
    assert.strictEqual(asked.nextClaimable, 1)
    assert.isFalse(r.databaseFirst(1050, p), "quiet: nothing can be due before 5000, and the last look is recent")
    assert.strictEqual(asked.nextClaimable, 1)
    assert.strictEqual(r.quietNextDue(1050), 5000)
    assert.isFalse(r.databaseFirst(1100, p), "the recheck period passed: it looks again")
    assert.strictEqual(asked.nextClaimable, 2)
  })

  it("a lease made while quiet shortens the quiet period to its expiry", () => {
    const r = ReadyList.make({ enabled: true, recheckMs: 10_000 })
    const { asked, p } = probe({ next: Number.POSITIVE_INFINITY })
    r.databaseFirst(1000, p)
    assert.strictEqual(r.quietNextDue(1000), Number.POSITIVE_INFINITY, "quiet, with nothing due at all")
    r.leased(2000)
    assert.strictEqual(r.quietNextDue(1500), 2000)
    assert.isUndefined(r.quietNextDue(2000), "a lease may have expired: no longer quiet")
    assert.strictEqual(asked.nextClaimable, 1)
  })

  it("a batch that made rows claimable, or another process's write, ends the quiet", () => {
    const r = ReadyList.make({ enabled: true, recheckMs: 10_000 })
    const { asked, p } = probe({ next: 9000 })
    r.databaseFirst(1000, p)
    r.committed({ recounted: false, dueFrom: Number.POSITIVE_INFINITY })
    assert.isFalse(r.databaseFirst(1001, p))
    assert.strictEqual(asked.nextClaimable, 1, "a batch that changed nothing claimable keeps the quiet")
    r.committed({ recounted: false, dueFrom: 500 })
    assert.isTrue(r.databaseFirst(1002, p), "a row made claimable at 500 is due: the claim goes to the database")
    assert.strictEqual(asked.nextClaimable, 1, "known to be due: no look needed")
    r.committed({ recounted: true, dueFrom: Number.POSITIVE_INFINITY })
    r.databaseFirst(1003, p)
    assert.strictEqual(asked.nextClaimable, 2, "another process wrote: nothing is known, it looks")
  })

  it("with something due in the database, an empty list sends the claim there", () => {
    const r = ReadyList.make({ enabled: true })
    assert.isTrue(r.databaseFirst(1000, probe({ next: 1000 }).p))
  })

  it("the head is taken without a look while nothing in the database is known to be due before it", () => {
    const r = ReadyList.make({ enabled: true })
    r.add(entry("a", 1000, 10))
    const first = probe({ first: { at: 2000, rowid: 1 } })
    assert.isFalse(r.databaseFirst(3000, first.p), "the database's first due (2000) claims after the head (1000)")
    assert.strictEqual(first.asked.firstDue, 1)
    assert.isFalse(r.databaseFirst(3000, first.p))
    assert.strictEqual(first.asked.firstDue, 1, "the floor (2000) is above the head: no second look")
    // A release made a recipient due at 500 claimable: it claims before the head.
    r.committed({ recounted: false, dueFrom: 500 })
    const earlier = probe({ first: { at: 500, rowid: 99 } })
    assert.isTrue(r.databaseFirst(3000, earlier.p))
  })

  it("ties between the database and the head go by row", () => {
    const r = ReadyList.make({ enabled: true })
    r.add(entry("a", 1000, 10))
    assert.isTrue(r.databaseFirst(3000, probe({ first: { at: 1000, rowid: 9 } }).p))
    r.committed({ recounted: true, dueFrom: Number.POSITIVE_INFINITY })
    assert.isFalse(r.databaseFirst(3000, probe({ first: { at: 1000, rowid: 11 } }).p))
  })

  it("rows ahead of the floor in the same millisecond are taken by row, without a look", () => {
    const r = ReadyList.make({ enabled: true })
    r.add(entry("a", 1000, 10))
    r.add(entry("b", 1000, 11))
    const first = probe({ first: { at: 1000, rowid: 12 } })
    assert.isFalse(r.databaseFirst(3000, first.p))
    r.drop(r.byId("a")!)
    assert.isFalse(r.databaseFirst(3000, first.p), "b (row 11) claims before the database's first (row 12)")
    assert.strictEqual(first.asked.firstDue, 1, "one look for both")
  })

  it("a batch that claimed says what the database holds first: no look for the leases it took ahead", () => {
    const r = ReadyList.make({ enabled: true })
    r.add(entry("a", 1000, 10))
    r.add(entry("b", 1000, 11))
    r.committed({ recounted: false, dueFrom: Number.NEGATIVE_INFINITY, firstDue: { at: 1000, rowid: 12 } })
    const none = probe({ first: { at: 0, rowid: 0 } })
    assert.isFalse(r.databaseFirst(3000, none.p))
    assert.strictEqual(none.asked.firstDue + none.asked.anyExpired, 0, "the batch's answer stands in for the look")
    // Nothing due left in the database: the list goes first until a batch makes something claimable.
    r.committed({ recounted: false, dueFrom: Number.POSITIVE_INFINITY, firstDue: null })
    r.add(entry("c", 5000, 20))
    r.drop(r.byId("a")!)
    r.drop(r.byId("b")!)
    assert.isFalse(r.databaseFirst(6000, none.p))
    assert.strictEqual(none.asked.firstDue, 0)
    // A release of a row at the floor's time may be of any row: the list looks again.
    r.committed({ recounted: false, dueFrom: 5000, firstDue: undefined })
    assert.isTrue(r.databaseFirst(6000, probe({ first: { at: 5000, rowid: 3 } }).p))
    // Another process wrote: nothing the last batch said holds.
    r.committed({ recounted: true, dueFrom: Number.POSITIVE_INFINITY, firstDue: null })
    const looked = probe({ first: { at: 9000, rowid: 1 } })
    assert.isFalse(r.databaseFirst(6000, looked.p))
    assert.strictEqual(looked.asked.firstDue, 1)
  })

  it("an empty list claims from the database without a look when a row is known due there", () => {
    const r = ReadyList.make({ enabled: true })
    const nothing = probe({})
    r.committed({ recounted: false, dueFrom: Number.POSITIVE_INFINITY, firstDue: { at: 1000, rowid: 12 } })
    assert.isTrue(r.databaseFirst(3000, nothing.p))
    assert.strictEqual(nothing.asked.nextClaimable, 0)
    // Due only later (a retry), or nothing known: it looks.
    r.committed({ recounted: false, dueFrom: Number.POSITIVE_INFINITY, firstDue: { at: 5000, rowid: 12 } })
    assert.isFalse(r.databaseFirst(3000, nothing.p))
    assert.strictEqual(nothing.asked.nextClaimable, 1)
    r.committed({ recounted: true, dueFrom: Number.POSITIVE_INFINITY, firstDue: undefined })
    assert.isTrue(r.databaseFirst(3000, probe({ next: 2000 }).p))
    assert.isFalse(r.databaseFirst(3000, probe({}).p), "unknown floor: the look says nothing is claimable")
  })

  it("an expired lease in the database always goes first (a claim takes it over)", () => {
    const r = ReadyList.make({ enabled: true })
    r.add(entry("a", 1000, 10))
    assert.isTrue(r.databaseFirst(3000, probe({ expired: true }).p))
  })

  it("waiting leases show as queued on a first attempt and as retry after earlier ones", () => {
    assert.strictEqual(ReadyList.waitingAs(0), "queued")
    assert.strictEqual(ReadyList.waitingAs(2), "retry")
  })
})
