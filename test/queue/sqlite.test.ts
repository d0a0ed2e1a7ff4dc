/**
 * The SQLite queue: the shared conformance kit on a fresh directory per test, then what only a
 * durable backend promises — data and attempts survive a restart, leases of a crashed process
 * come back, commits are grouped, large bodies live in fsync'd files, start-up repairs what a
 * crash left behind, and a full disk fails commits cleanly and recoverably.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, type Scope } from "effect"
import { TestClock } from "effect/testing"
import {
  conformance,
  fileBody,
  memoryBody,
  message,
  readAll,
  T0
} from "../../src/testing/QueueConformance.ts"
import { delivered, MailQueue, retryAt } from "../../src/queue/MailQueue.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import * as SqliteQueue from "../../src/queue/SqliteQueue.ts"

type Queue = MailQueue["Service"]
type Admin = QueueAdmin["Service"]

const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "incoming-sqlite-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

conformance("sqlite", (options) =>
  Layer.unwrap(Effect.map(tempDir, (dataDir) => SqliteQueue.layer({ ...options, dataDir }))))

/** Opens the queue in `dataDir`, runs `f`, and closes it again (a process lifetime). */
const withQueue = <A, E>(
  options: SqliteQueue.SqliteQueueOptions,
  f: (q: Queue, a: Admin) => Effect.Effect<A, E, Scope.Scope>
) =>
  Effect.scoped(
    Effect.gen(function*() {
      return yield* f(yield* MailQueue, yield* QueueAdmin)
    }).pipe(Effect.provide(SqliteQueue.layer(options)))
  )

const claimOne = (q: Queue, owner = "worker-1", leaseMs = 60_000) =>
  Effect.gen(function*() {
    const claimed = yield* q.claim({ owner, leaseMs })
    if (Option.isNone(claimed)) return assert.fail("expected a message to claim")
    return claimed.value
  })

/** A second connection, as another process would see the database. */
const peek = <A>(dataDir: string, f: (db: DatabaseSync) => A): A => {
  const db = new DatabaseSync(join(dataDir, "queue.db"), { readOnly: true })
  try {
    return f(db)
  } finally {
    db.close()
  }
}

// A tmpfs on another device than tmpdir() makes renaming a spool file fail with EXDEV.
const otherDevice = existsSync("/dev/shm") && statSync("/dev/shm").dev !== statSync(tmpdir()).dev ? "/dev/shm" : undefined

const bodyFiles = (dataDir: string) => readdirSync(join(dataDir, "bodies")).toSorted()

describe("SqliteQueue", () => {
  it.effect("an envelope's authentication results, quarantine mark and annotations survive a restart", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const base = message({ receivedAt: T0 - 1 })
      const marked = {
        ...base,
        envelope: {
          ...base.envelope,
          authentication: {
            authservId: "mx.test",
            results: [
              { method: "spf", result: "pass", properties: { "smtp.mailfrom": "a@example.org" } },
              { method: "dkim", result: "fail", reason: "body hash did not verify", properties: { "header.d": "example.org" } }
            ]
          },
          quarantine: { rule: "dmarc", reason: "p=quarantine" },
          annotations: { score: 1.5, tags: ["a", null], nested: { ok: true } }
        }
      } as const
      yield* withQueue({ dataDir }, (q) => q.commit(marked))
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          assert.deepStrictEqual((yield* claimOne(q)).envelope, marked.envelope)
          assert.deepStrictEqual(Option.getOrUndefined(yield* a.get(marked.id))?.envelope, marked.envelope)
        }))
    }))

  it.effect("a hold survives closing and reopening; a handed-off lease of the held message is not delivered", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const held = message({ receivedAt: T0 - 2 })
      const handedOff = message({ receivedAt: T0 - 1 })
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          yield* q.commit(held)
          assert.isTrue(yield* a.hold(held.id))
          // A worker has claimed: the next commit is handed off into the ready list, then held.
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "w", leaseMs: 60_000 })))
          yield* q.commit(handedOff)
          assert.isTrue(yield* a.hold(handedOff.id))
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "w", leaseMs: 60_000 })), "nothing held is handed to a worker")
        }))
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          assert.deepStrictEqual((yield* a.list({ state: "held" })).map((m) => m.id), [held.id, handedOff.id])
          assert.strictEqual((yield* a.stats).held, 2)
          assert.deepStrictEqual(Option.getOrUndefined(yield* a.get(handedOff.id))?.recipients.map((r) => r.attempts), [0])
          yield* TestClock.adjust(3_600_000)
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "w", leaseMs: 60_000 })))
          assert.isTrue(yield* a.unhold(handedOff.id))
          assert.strictEqual((yield* claimOne(q)).id, handedOff.id)
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "w", leaseMs: 60_000 })))
        }))
    }))

  it.effect("messages, states and attempts survive closing and reopening", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const big = Buffer.alloc(300 * 1024, "x")
      const m1 = message({ rcpts: ["a@example.com", "b@example.com"], receivedAt: T0 - 2 })
      const m2 = message({ receivedAt: T0 - 1, body: memoryBody([big]).body })
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          yield* q.commit(m1)
          yield* q.commit(m2)
          const lease = yield* claimOne(q)
          assert.strictEqual(lease.id, m1.id)
          yield* q.settle(lease, [delivered("a@example.com", "250 ok"), retryAt("b@example.com", T0 + 10_000, "451 busy")])
        }))
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          assert.strictEqual(yield* q.depth, 2)
          const info = Option.getOrUndefined(yield* a.get(m1.id))
          assert.deepStrictEqual(info?.recipients.map((r) => [r.rcpt, r.state, r.attempts, r.nextAttemptAt, r.lastReply]), [
            ["a@example.com", "delivered", 1, T0 - 2, "250 ok"],
            ["b@example.com", "retry", 1, T0 + 10_000, "451 busy"]
          ])
          const stored = yield* readAll(yield* a.readMessage(m2.id))
          assert.isTrue(stored.equals(Buffer.concat([Buffer.from(m2.trace), big])))
          assert.strictEqual((yield* claimOne(q)).id, m2.id)
          yield* TestClock.adjust(10_000)
          const again = yield* claimOne(q)
          assert.deepStrictEqual(again.recipients, [{ rcpt: "b@example.com", attempt: 2 }])
        }))
    }))

  it.effect("a lease held by a crashed process comes back at restart, its attempt counted", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const m = message({ receivedAt: T0 - 1 })
      // The "crash": the scope closes with the lease neither settled nor released.
      yield* withQueue({ dataDir }, (q) => Effect.andThen(q.commit(m), claimOne(q, "old-worker", 3_600_000)))
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          const lease = yield* claimOne(q, "new-worker")
          assert.strictEqual(lease.id, m.id)
          assert.deepStrictEqual(lease.recipients, [{ rcpt: "rcpt@example.com", attempt: 2 }])
        }))
    }))

  it.effect("a second process on the same directory respects live leases and sees the owner's commits", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const m = message({ receivedAt: T0 - 1 })
      yield* withQueue({ dataDir }, (owner) =>
        Effect.gen(function*() {
          yield* owner.commit(m)
          const lease = yield* claimOne(owner, "server-worker", 10_000)
          // Like `incoming queue ...` while the server runs: no start-up recovery may touch the lease.
          yield* withQueue({ dataDir }, (cli, cliAdmin) =>
            Effect.gen(function*() {
              assert.strictEqual(yield* cli.depth, 1)
              assert.isTrue(Option.isNone(yield* cli.claim({ owner: "cli", leaseMs: 10_000 })))
              yield* owner.commit(message({ receivedAt: T0 }))
              assert.strictEqual(yield* cli.depth, 2, "the other process's commit is counted")
              yield* owner.settle(lease, [delivered("rcpt@example.com", "250 ok")])
              assert.strictEqual(yield* cli.depth, 1)
              assert.strictEqual((yield* cliAdmin.stats).messages, 1)
            }))
        }))
    }))

  it.effect("the owner's count follows another process's changes even while the owner is idle", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))
      const [m1, m2] = [message({ receivedAt: T0 - 2 }), message({ receivedAt: T0 - 1 })]
      yield* withQueue({ dataDir }, (owner) =>
        Effect.gen(function*() {
          yield* owner.commit(m1)
          yield* owner.commit(m2)
          assert.strictEqual(yield* owner.depth, 2)
          yield* withQueue({ dataDir }, (_, cliAdmin) => Effect.asVoid(cliAdmin.remove(m1.id)))
          let seen = 2
          for (let i = 0; i < 50 && seen !== 1; i++) {
            yield* sleep(20)
            seen = yield* owner.depth
          }
          assert.strictEqual(seen, 1)
        }))
    }))

  it.effect("concurrent commits share one transaction, and each is durable when it returns", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const batches: Array<SqliteQueue.BatchInfo> = []
      yield* withQueue({ dataDir, onBatch: (info) => batches.push(info) }, (q) =>
        Effect.gen(function*() {
          const messages = Array.from({ length: 50 }, (_, i) => message({ receivedAt: T0 - 100 + i }))
          const visibleOnReturn = yield* Effect.forEach(
            messages,
            (m) =>
              Effect.andThen(
                q.commit(m),
                Effect.sync(() => peek(dataDir, (db) => db.prepare("SELECT 1 FROM messages WHERE id = ?").get(m.id) !== undefined))
              ),
            { concurrency: "unbounded" }
          )
          assert.isTrue(visibleOnReturn.every(Boolean), "a commit returned before its row was committed")
          assert.strictEqual(yield* q.depth, 50)
        }))
      const committed = batches.filter((b) => b.committed)
      // Jobs are the 50 commits, plus at most one depth recount per batch: the owner asks for one
      // at most every 100 ms of real time, so on a slow machine one can ride along.
      const jobs = committed.reduce((n, b) => n + b.jobs, 0)
      assert.isAtLeast(jobs, 50)
      assert.isAtMost(jobs, 50 + committed.length)
      // Grouped: a batch takes every commit that arrived while the last one was in flight. Usually
      // 2 or 3; a loaded machine may hand the writer a few more, smaller batches.
      assert.isAtMost(committed.length, 10, `50 concurrent commits took ${committed.length} transactions`)
    }))

  it.effect("a claim with nothing due takes no write transaction; one with work does", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const batches: Array<SqliteQueue.BatchInfo> = []
      yield* withQueue({ dataDir, onBatch: (info) => batches.push(info) }, (q) =>
        Effect.gen(function*() {
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "w", leaseMs: 1000 })))
          assert.strictEqual(batches.length, 0, "an idle worker's claim went to the writer")
          yield* q.commit(message({ receivedAt: T0 + 5_000 }))
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "w", leaseMs: 1000 })), "not due yet")
          assert.strictEqual(batches.length, 1)
          yield* TestClock.adjust(5_000)
          const lease = yield* claimOne(q, "w", 1000)
          assert.strictEqual(batches.length, 2)
          // An expired lease is work too: its recipients are due again.
          yield* TestClock.adjust(1_000)
          const again = yield* claimOne(q, "w2", 1000)
          assert.strictEqual(again.id, lease.id)
          assert.deepStrictEqual(again.recipients.map((r) => r.attempt), [2])
        }))
    }))

  it.effect("a large body is a file before commit returns and is removed after delivery", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const content = Buffer.alloc(4096, "b")
      const spooled = yield* fileBody(content)
      const inMemory = message({ receivedAt: T0 - 3, body: memoryBody([content.subarray(0, 1000), content.subarray(1000)]).body })
      const fromSpool = message({ receivedAt: T0 - 2, body: spooled.body })
      const small = message({ receivedAt: T0 - 1, body: memoryBody(["tiny\r\n"]).body })
      yield* withQueue({ dataDir, inlineThreshold: 1024 }, (q) =>
        Effect.gen(function*() {
          yield* q.commit(inMemory)
          assert.strictEqual(statSync(join(dataDir, "bodies", inMemory.id)).size, 4096)
          yield* q.commit(fromSpool)
          assert.strictEqual(statSync(join(dataDir, "bodies", fromSpool.id)).size, 4096)
          assert.isFalse(existsSync(spooled.body._tag === "File" ? spooled.body.path : ""), "the spool file was adopted")
          assert.strictEqual(spooled.released(), 1)
          yield* q.commit(small)
          assert.deepStrictEqual(bodyFiles(dataDir), [inMemory.id, fromSpool.id].toSorted(), "small bodies stay inline, no temp files")
          assert.strictEqual(
            peek(dataDir, (db) => db.prepare("SELECT body_file FROM messages WHERE id = ?").get(inMemory.id)?.body_file),
            inMemory.id
          )
          for (const m of [inMemory, fromSpool, small]) {
            const lease = yield* claimOne(q)
            assert.strictEqual(lease.id, m.id)
            const expected = Buffer.concat([Buffer.from(m.trace), m === small ? Buffer.from("tiny\r\n") : content])
            assert.isTrue((yield* readAll(lease.body)).equals(expected))
            yield* q.settle(lease, [delivered(lease.recipients[0]!.rcpt, "250 ok")])
          }
          assert.deepStrictEqual(bodyFiles(dataDir), [])
        }))
    }))

  it.effect.skipIf(otherDevice === undefined)("a spool file on another file system is copied, then released", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const content = Buffer.alloc(8192, "c")
      const spooled = yield* fileBody(content, otherDevice)
      const m = message({ receivedAt: T0 - 1, body: spooled.body })
      yield* withQueue({ dataDir, inlineThreshold: 1024 }, (q, a) =>
        Effect.gen(function*() {
          yield* q.commit(m)
          assert.deepStrictEqual(bodyFiles(dataDir), [m.id], "copied without leaving a temp file")
          assert.strictEqual(spooled.released(), 1, "the spool copy is released once the queue holds its own")
          assert.isTrue((yield* readAll(yield* a.readMessage(m.id))).equals(Buffer.concat([Buffer.from(m.trace), content])))
        }))
    }))

  it.effect("start-up removes orphan body files and temp files, and keeps referenced ones", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const m = message({ receivedAt: T0 - 1, body: memoryBody([Buffer.alloc(2048, "k")]).body })
      yield* withQueue({ dataDir, inlineThreshold: 1024 }, (q) => q.commit(m))
      // What a crash can leave: a body whose commit never happened, a half-written copy.
      writeFileSync(join(dataDir, "bodies", "ORPHANED00000000"), "never committed")
      writeFileSync(join(dataDir, "bodies", `${m.id}.tmp`), "half")
      yield* withQueue({ dataDir, inlineThreshold: 1024 }, (q, a) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(bodyFiles(dataDir), [m.id])
          assert.strictEqual((yield* readAll(yield* a.readMessage(m.id))).length, m.trace.length + 2048)
        }))
    }))

  it.effect("start-up dead-letters messages whose body file is missing or truncated, with the reason", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const missing = message({ receivedAt: T0 - 3, body: memoryBody([Buffer.alloc(2048, "m")]).body })
      const truncated = message({ receivedAt: T0 - 2, body: memoryBody([Buffer.alloc(2048, "t")]).body })
      const fine = message({ receivedAt: T0 - 1, body: memoryBody([Buffer.alloc(2048, "f")]).body })
      yield* withQueue({ dataDir, inlineThreshold: 1024 }, (q) =>
        Effect.forEach([missing, truncated, fine], (m) => q.commit(m), { discard: true }))
      rmSync(join(dataDir, "bodies", missing.id))
      truncateSync(join(dataDir, "bodies", truncated.id), 100)
      yield* withQueue({ dataDir, inlineThreshold: 1024, deadLetterTtlMs: 60_000 }, (q, a) =>
        Effect.gen(function*() {
          const lost = Option.getOrUndefined(yield* a.get(missing.id))
          assert.strictEqual(lost?.state, "dead")
          assert.match(lost?.recipients[0]?.lastReply ?? "", /missing/)
          assert.strictEqual(lost?.recipients[0]?.expiresAt, T0 + 60_000)
          const damaged = Option.getOrUndefined(yield* a.get(truncated.id))
          assert.strictEqual(damaged?.state, "dead")
          assert.match(damaged?.recipients[0]?.lastReply ?? "", /100 bytes, expected 2048/)
          assert.strictEqual(yield* q.depth, 1)
          assert.deepStrictEqual((yield* a.list({ state: "dead" })).map((i) => i.id), [missing.id, truncated.id])
          assert.strictEqual((yield* claimOne(q)).id, fine.id)
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "w", leaseMs: 1000 })))
        }))
    }))

  it.effect("a full database fails commits with StorageFull, leaves nothing behind, and recovers", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const options = { dataDir, maxPageCount: 64 }
      const body = () => memoryBody([Buffer.alloc(20 * 1024, "z")]).body
      yield* withQueue(options, (q, a) =>
        Effect.gen(function*() {
          const stored: Array<string> = []
          let reason: string | undefined
          for (let i = 0; i < 100 && reason === undefined; i++) {
            const m = message({ receivedAt: T0 - 1000 + i, body: body() })
            const result = yield* Effect.result(q.commit(m))
            if (result._tag === "Success") stored.push(m.id)
            else {
              reason = result.failure.reason._tag
              assert.isTrue(Option.isNone(yield* a.get(m.id)), "a failed commit left its message behind")
            }
          }
          assert.strictEqual(reason, "StorageFull")
          assert.isAbove(stored.length, 0)
          // A batch that fails fails whole: none of several concurrent commits is stored.
          const batch = Array.from({ length: 4 }, (_, i) => message({ receivedAt: T0 - 100 + i, body: body() }))
          const results = yield* Effect.forEach(batch, (m) => Effect.result(q.commit(m)), { concurrency: "unbounded" })
          assert.deepStrictEqual(results.map((r) => (r._tag === "Failure" ? r.failure.reason._tag : "stored")), [
            "StorageFull",
            "StorageFull",
            "StorageFull",
            "StorageFull"
          ])
          const stats = yield* a.stats
          assert.strictEqual(stats.messages, stored.length)
          assert.strictEqual(stats.recipients.queued, stored.length)
          assert.strictEqual(yield* q.depth, stored.length)
          // Space comes back when mail leaves the queue.
          assert.isTrue(yield* a.remove(stored[0]!))
          assert.isTrue(yield* a.remove(stored[1]!))
          yield* q.commit(message({ receivedAt: T0, body: body() }))
          assert.strictEqual((yield* a.stats).messages, stored.length - 1)
        }))
      // ... or when the operator grows the limit.
      yield* withQueue({ ...options, maxPageCount: 1000 }, (q) =>
        Effect.forEach(
          Array.from({ length: 5 }, (_, i) => message({ receivedAt: T0 + i, body: body() })),
          (m) => q.commit(m),
          { discard: true }
        ))
    }))

  it.effect("a failed batch removes the body files adopted for it", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      yield* withQueue({ dataDir, maxPageCount: 16, inlineThreshold: 0 }, (q) =>
        Effect.gen(function*() {
          const stored: Array<string> = []
          let failed = 0
          for (let round = 0; round < 40 && failed === 0; round++) {
            const group = Array.from({ length: 10 }, (_, i) => message({ receivedAt: T0 - 1000 + round * 10 + i }))
            const results = yield* Effect.forEach(group, (m) => Effect.result(q.commit(m)), { concurrency: "unbounded" })
            for (const [i, r] of results.entries()) {
              if (r._tag === "Success") stored.push(group[i]!.id)
              else {
                assert.strictEqual(r.failure.reason._tag, "StorageFull")
                failed++
              }
            }
          }
          assert.isAbove(failed, 0, "the database never filled up")
          assert.deepStrictEqual(bodyFiles(dataDir), stored.toSorted(), "only committed messages have body files")
        }))
    }))

  it.effect("a commit of an id already stored is refused and changes nothing; the rest of its batch commits", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const first = message({ receivedAt: T0 - 10, rcpts: ["first@example.test"] })
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          yield* q.commit(first)
          const again = message({ receivedAt: T0 - 5, rcpts: ["second@example.test"], id: first.id })
          const other = message({ receivedAt: T0 - 5 })
          // Both in one batch: the refusal must not abort the other commit with it.
          const [refused, committed] = yield* Effect.all([Effect.result(q.commit(again)), Effect.result(q.commit(other))], {
            concurrency: "unbounded"
          })
          assert.isTrue(refused._tag === "Failure" && refused.failure.reason._tag === "StorageFailed", `duplicate: ${String(refused)}`)
          assert.match(refused._tag === "Failure" ? refused.failure.message : "", /already exists/)
          assert.strictEqual(committed._tag, "Success")
          assert.strictEqual(yield* q.depth, 2)
        }))
      const rows = peek(dataDir, (db) =>
        db.prepare("SELECT rcpt FROM recipients WHERE message_id = ?").all(first.id).map((r) => r.rcpt))
      assert.deepStrictEqual(rows, ["first@example.test"])
    }))

  it.effect("a database written by a newer version is refused", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      const db = new DatabaseSync(join(dataDir, "queue.db"))
      db.exec("PRAGMA user_version = 99")
      db.close()
      const error = yield* Effect.flip(withQueue({ dataDir }, () => Effect.void))
      assert.strictEqual(error.reason._tag, "StorageFailed")
      assert.match(error.message, /schema version 99/)
    }))
})

/**
 * Handoff: once a worker has claimed, a commit leases its message to this process at once and
 * keeps the lease in memory, so the next claim takes it without a write. None of it may show:
 * attempts, order, visible states and crash recovery stay what the contract says.
 */
describe("SqliteQueue handoff", () => {
  /** What a dispatcher's idle worker does first: claim, find nothing. Commits hand off from then on. */
  const idleClaim = (q: Queue, leaseMs = 60_000) =>
    Effect.gen(function*() {
      assert.isTrue(Option.isNone(yield* q.claim({ owner: "idle", leaseMs })))
    })

  const rowsOf = (dataDir: string, id: string) =>
    peek(dataDir, (db) =>
      db.prepare("SELECT state, attempts, lease_owner, lease_expires_at FROM recipients WHERE message_id = ? ORDER BY rowid")
        .all(id)
        .map((r) => [r.state, r.attempts, r.lease_owner, r.lease_expires_at]))

  it.effect("a claim after a commit takes the handed-off lease without a write; until then it shows as queued", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const batches: Array<SqliteQueue.BatchInfo> = []
      const m = message({ rcpts: ["a@example.com", "b@example.com"], receivedAt: T0 - 5 })
      yield* withQueue({ dataDir, onBatch: (info) => batches.push(info) }, (q, a) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(m)
          assert.strictEqual(batches.length, 1)
          // Leased in the database (so a crash cannot lose it) ...
          assert.deepStrictEqual(rowsOf(dataDir, m.id).map((r) => [r[0], r[1]]), [["inflight", 1], ["inflight", 1]])
          // ... but to the contract it is queued until a worker takes it.
          const info = Option.getOrUndefined(yield* a.get(m.id))
          assert.strictEqual(info?.state, "queued")
          assert.deepStrictEqual(info?.recipients.map((r) => [r.state, r.attempts]), [["queued", 0], ["queued", 0]])
          assert.deepStrictEqual((yield* a.list({ state: "queued" })).map((i) => i.id), [m.id])
          assert.deepStrictEqual(yield* a.list({ state: "inflight" }), [])
          const stats = yield* a.stats
          assert.deepStrictEqual([stats.recipients.queued, stats.recipients.inflight, stats.depth], [2, 0, 1])
          assert.deepStrictEqual(yield* q.nextDueAt, Option.some(m.receivedAt))

          const lease = yield* claimOne(q, "worker-1", 30_000)
          assert.strictEqual(batches.length, 1, "the claim went to the writer")
          assert.strictEqual(lease.id, m.id)
          assert.strictEqual(lease.owner, "worker-1")
          assert.strictEqual(lease.expiresAt, T0 + 60_000, "the lease made at commit, long enough for this claim")
          assert.strictEqual(lease.receivedAt, m.receivedAt)
          assert.deepStrictEqual(lease.envelope, m.envelope)
          assert.deepStrictEqual(lease.recipients, [{ rcpt: "a@example.com", attempt: 1 }, { rcpt: "b@example.com", attempt: 1 }])
          assert.isTrue((yield* readAll(lease.body)).equals(yield* readAll(yield* a.readMessage(m.id))))
          const taken = Option.getOrUndefined(yield* a.get(m.id))
          assert.deepStrictEqual(taken?.recipients.map((r) => [r.state, r.attempts]), [["inflight", 1], ["inflight", 1]])

          yield* q.settle(lease, [delivered("a@example.com", "250 ok"), delivered("b@example.com", "250 ok")])
          assert.strictEqual(batches.length, 2)
          assert.isTrue(Option.isNone(yield* a.get(m.id)))
          assert.strictEqual(yield* q.depth, 0)
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "worker-1", leaseMs: 30_000 })))
        }))
    }))

  it.effect("a large inline body arriving in chunks is stored and handed off whole (the copy sent to the writer is moved, not cloned)", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      // 100 KiB in three chunks, past the size from which the writer's copy is transferred.
      const chunks = [Buffer.alloc(40_000, "a"), Buffer.alloc(40_000, "b"), Buffer.alloc(22_400, "c")]
      const expected = Buffer.concat([Buffer.from("Received: big\r\n"), ...chunks])
      const m = message({ receivedAt: T0 - 5, trace: "Received: big\r\n", body: memoryBody(chunks).body })
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(m)
          const lease = yield* claimOne(q)
          assert.strictEqual(lease.id, m.id)
          assert.isTrue((yield* readAll(lease.body)).equals(expected), "the handed-off body")
          assert.isTrue((yield* readAll(yield* a.readMessage(m.id))).equals(expected), "the stored row")
          assert.deepStrictEqual(chunks.map((c) => c.byteLength), [40_000, 40_000, 22_400], "the received chunks are untouched")
        }))
    }))

  it.effect("attempts count as with a database claim: a retried handed-off message comes back at attempt 2", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const m = message({ rcpts: ["ok@example.com", "later@example.com"], receivedAt: T0 - 1 })
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(m)
          const first = yield* claimOne(q)
          assert.deepStrictEqual(first.recipients.map((r) => r.attempt), [1, 1])
          yield* q.settle(first, [delivered("ok@example.com", "250 ok"), retryAt("later@example.com", T0 + 10_000, "451 later")])
          assert.deepStrictEqual(
            Option.getOrUndefined(yield* a.get(m.id))?.recipients.map((r) => [r.state, r.attempts]),
            [["delivered", 1], ["retry", 1]]
          )
          yield* TestClock.adjust(10_000)
          const again = yield* claimOne(q)
          assert.deepStrictEqual(again.recipients, [{ rcpt: "later@example.com", attempt: 2 }])
          yield* q.settle(again, [delivered("later@example.com", "250 ok")])
          assert.isTrue(Option.isNone(yield* a.get(m.id)))
          assert.strictEqual(yield* q.depth, 0)
        }))
    }))

  it.effect("a handed-off lease taken late is extended first; one taken over meanwhile is dropped", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const batches: Array<SqliteQueue.BatchInfo> = []
      const late = message({ receivedAt: T0 - 2 })
      const lost = message({ receivedAt: T0 - 1 })
      yield* withQueue({ dataDir, onBatch: (info) => batches.push(info) }, (q) =>
        Effect.gen(function*() {
          yield* idleClaim(q, 10_000)
          yield* q.commit(late)
          yield* TestClock.adjust(6_000)
          const before = batches.length
          const lease = yield* claimOne(q, "worker-1", 10_000)
          assert.strictEqual(lease.id, late.id)
          assert.strictEqual(batches.length, before + 1, "4 s left of a 10 s lease: extended by the writer")
          assert.strictEqual(lease.expiresAt, T0 + 16_000)
          assert.deepStrictEqual(rowsOf(dataDir, late.id), [["inflight", 1, "worker-1", T0 + 16_000]])
          yield* q.settle(lease, [delivered(lease.recipients[0]!.rcpt, "250 ok")])

          yield* q.commit(lost)
          yield* TestClock.adjust(10_000)
          // The handed-off lease expired; another process (not the owner) takes the message over.
          yield* withQueue({ dataDir }, (cli) =>
            Effect.gen(function*() {
              const taken = yield* claimOne(cli, "cli", 10_000)
              assert.strictEqual(taken.id, lost.id)
              assert.deepStrictEqual(taken.recipients.map((r) => r.attempt), [2])
            }))
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "worker-1", leaseMs: 10_000 })), "a lost lease was handed out")
        }))
    }))

  it.effect("claims keep their order across handed-off and released messages", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const [m1, m2, m3] = [message({ receivedAt: T0 - 3 }), message({ receivedAt: T0 - 2 }), message({ receivedAt: T0 - 1 })]
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(m1)
          yield* q.commit(m2)
          const first = yield* claimOne(q)
          assert.strictEqual(first.id, m1.id)
          // Given back: due longer than m2, which is still handed off.
          yield* q.release(first)
          yield* q.commit(m3)
          const again = yield* claimOne(q)
          assert.strictEqual(again.id, m1.id)
          assert.deepStrictEqual(again.recipients.map((r) => r.attempt), [1])
          const [l2, l3] = [yield* claimOne(q), yield* claimOne(q)]
          assert.deepStrictEqual([l2.id, l3.id], [m2.id, m3.id])
          yield* q.settle(l2, [retryAt(l2.recipients[0]!.rcpt, T0 + 10_000, "451 later")])
          yield* idleClaim(q)
          // Due with time alone, nothing tells the queue: the commit itself sees m2 is due first.
          yield* TestClock.adjust(10_000)
          const m4 = message({ receivedAt: T0 + 10_000 })
          yield* q.commit(m4)
          assert.deepStrictEqual([(yield* claimOne(q)).id, (yield* claimOne(q)).id], [m2.id, m4.id])
          yield* idleClaim(q)
        }))
    }))

  it.effect("a low-priority commit does not overtake normal messages already handed off", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const [n1, n2] = [message({ receivedAt: T0 - 3 }), message({ receivedAt: T0 - 2 })]
      const low = message({ receivedAt: T0 - 1, priority: -5 })
      const high = message({ receivedAt: T0, priority: 5 })
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(n1)
          yield* q.commit(n2)
          // The database's only waiting row is below normal; the ready list holds n1 and n2.
          yield* q.commit(low)
          assert.strictEqual((yield* claimOne(q)).id, n1.id)
          // Above normal still goes first.
          yield* q.commit(high)
          assert.deepStrictEqual([(yield* claimOne(q)).id, (yield* claimOne(q)).id, (yield* claimOne(q)).id], [high.id, n2.id, low.id])
          yield* idleClaim(q)
        }))
    }))

  it.effect(`at most ${SqliteQueue.maxHandedOff} leases are handed off; later commits are queued and claimed in order`, () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const messages = Array.from({ length: SqliteQueue.maxHandedOff + 3 }, (_, i) => message({ receivedAt: T0 - 1000 + i }))
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          for (const m of messages) yield* q.commit(m)
          const states = peek(dataDir, (db) =>
            db.prepare("SELECT state, COUNT(*) AS n FROM recipients GROUP BY state ORDER BY state").all().map((r) => [r.state, r.n]))
          assert.deepStrictEqual(states, [["inflight", SqliteQueue.maxHandedOff], ["queued", 3]])
          assert.strictEqual((yield* a.stats).recipients.queued, messages.length)
          const claimed: Array<string> = []
          for (const _ of messages) claimed.push((yield* claimOne(q)).id)
          assert.deepStrictEqual(claimed, messages.map((m) => m.id))
          yield* idleClaim(q)
        }))
    }))

  it.effect("a removed handed-off message is not handed to a worker", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const m = message({ receivedAt: T0 - 1 })
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(m)
          assert.isTrue(yield* a.remove(m.id))
          yield* idleClaim(q)
          assert.strictEqual(yield* q.depth, 0)
        }))
    }))

  it.effect("a handed-off body kept as a file is read from it and removed after delivery", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const content = Buffer.alloc(4096, "h")
      const m = message({ receivedAt: T0 - 1, body: memoryBody([content]).body })
      yield* withQueue({ dataDir, inlineThreshold: 1024 }, (q) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(m)
          const lease = yield* claimOne(q)
          assert.isTrue((yield* readAll(lease.body)).equals(Buffer.concat([Buffer.from(m.trace), content])))
          yield* q.settle(lease, [delivered(lease.recipients[0]!.rcpt, "250 ok")])
          assert.deepStrictEqual(bodyFiles(dataDir), [])
        }))
    }))

  it.effect("closing the queue gives handed-off leases back untouched", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const m = message({ receivedAt: T0 - 1 })
      yield* withQueue({ dataDir }, (q) => Effect.andThen(idleClaim(q), q.commit(m)))
      assert.deepStrictEqual(rowsOf(dataDir, m.id), [["queued", 0, null, null]])
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          const lease = yield* claimOne(q)
          assert.strictEqual(lease.id, m.id)
          assert.deepStrictEqual(lease.recipients.map((r) => r.attempt), [1])
        }))
    }))

  it.effect("after a crash, a handed-off lease no worker took comes back with no attempt counted", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      const afterCrash = yield* tempDir
      yield* TestClock.setTime(T0)
      const [taken, waiting] = [message({ receivedAt: T0 - 2 }), message({ receivedAt: T0 - 1 })]
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          yield* idleClaim(q)
          yield* q.commit(taken)
          yield* q.commit(waiting)
          assert.strictEqual((yield* claimOne(q)).id, taken.id)
          // The "crash": the files as they are on disk now, before anything is settled or released.
          for (const file of ["queue.db", "queue.db-wal"]) copyFileSync(join(dataDir, file), join(afterCrash, file))
          mkdirSync(join(afterCrash, "bodies"))
        }))
      yield* withQueue({ dataDir: afterCrash }, (q) =>
        Effect.gen(function*() {
          assert.strictEqual(yield* q.depth, 2)
          const first = yield* claimOne(q)
          const second = yield* claimOne(q)
          assert.deepStrictEqual([first.id, second.id], [taken.id, waiting.id])
          // The waiting one was never tried: its first claim after the restart is attempt 1. The one a
          // worker took without extending its lease looks the same on disk, so it is not counted
          // either (an attempt cut by a crash is retried as the same attempt).
          assert.deepStrictEqual([...first.recipients, ...second.recipients].map((r) => r.attempt), [1, 1])
        }))
    }))
})

describe("SqliteQueue claims ahead", () => {
  it.effect("another process's retry-now sees a retrying message taken ahead as due, not in flight", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const [r1, r2] = [message({ receivedAt: T0 - 2 }), message({ receivedAt: T0 - 1 })]
      yield* withQueue({ dataDir }, (q) =>
        Effect.gen(function*() {
          yield* q.commit(r1)
          yield* q.commit(r2)
          for (const _ of [r1, r2]) {
            const lease = yield* claimOne(q)
            yield* q.settle(lease, [retryAt(lease.recipients[0]!.rcpt, T0 + 1000, "451 later")])
          }
          yield* TestClock.adjust(2000)
          // One claim to the database: r1 for the worker, r2 leased ahead into the ready list.
          assert.strictEqual((yield* claimOne(q)).id, r1.id)
          yield* withQueue({ dataDir }, (_, cli) =>
            Effect.gen(function*() {
              assert.isTrue(yield* cli.retryNow(r2.id), "a retrying message waiting to be taken is due now, not in flight")
            }))
          const next = yield* claimOne(q)
          assert.deepStrictEqual([next.id, next.recipients[0]!.attempt], [r2.id, 2])
        }))
    }))

  it.effect(`a claim that goes to the database also leases up to ${SqliteQueue.claimAhead} more due messages for the next claims`, () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const batches: Array<SqliteQueue.BatchInfo> = []
      const messages = Array.from({ length: SqliteQueue.claimAhead + 3 }, (_, i) => message({ receivedAt: T0 - 100 + i }))
      yield* withQueue({ dataDir, onBatch: (info) => batches.push(info) }, (q, a) =>
        Effect.gen(function*() {
          for (const m of messages) yield* q.commit(m)
          const before = batches.length
          const claimed = [yield* claimOne(q)]
          assert.strictEqual(batches.length, before + 1)
          const inflight = peek(dataDir, (db) => db.prepare("SELECT COUNT(*) AS n FROM recipients WHERE state = 'inflight'").get()?.n)
          assert.strictEqual(inflight, SqliteQueue.claimAhead + 1)
          // Leased ahead, they still show as what they were until a worker takes them.
          const waiting = Option.getOrUndefined(yield* a.get(messages[1]!.id))
          assert.deepStrictEqual(waiting?.recipients.map((r) => [r.state, r.attempts]), [["queued", 0]])
          const stats = yield* a.stats
          assert.deepStrictEqual([stats.recipients.inflight, stats.recipients.queued], [1, messages.length - 1])
          assert.deepStrictEqual(yield* q.nextDueAt, Option.some(messages[1]!.receivedAt))
          for (let i = 0; i < SqliteQueue.claimAhead; i++) claimed.push(yield* claimOne(q))
          assert.strictEqual(batches.length, before + 1, "a claim of a message leased ahead took a writer trip")
          assert.deepStrictEqual(claimed.map((l) => l.id), messages.slice(0, SqliteQueue.claimAhead + 1).map((m) => m.id))
          assert.deepStrictEqual(claimed.map((l) => l.recipients[0]!.attempt), claimed.map(() => 1))
          assert.deepStrictEqual(claimed.map((l) => l.expiresAt), claimed.map(() => T0 + 60_000))
          // The next one goes to the database again, and takes the last one ahead.
          assert.strictEqual((yield* claimOne(q)).id, messages[SqliteQueue.claimAhead + 1]!.id)
          assert.strictEqual(batches.length, before + 2)
        }))
      // Closing gives the untaken one back with its attempt uncounted; the taken ones stay leased.
      const left = peek(dataDir, (db) =>
        db.prepare("SELECT state, attempts, COUNT(*) AS n FROM recipients GROUP BY state, attempts ORDER BY state, attempts").all()
          .map((r) => [r.state, r.attempts, r.n]))
      assert.deepStrictEqual(left, [["inflight", 1, SqliteQueue.claimAhead + 2], ["queued", 0, 1]])
    }))

  it.effect("leases taken ahead in the same millisecond go by row, without a writer trip; a later commit waits its turn", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const batches: Array<SqliteQueue.BatchInfo> = []
      const messages = Array.from({ length: SqliteQueue.claimAhead + 3 }, () => message({ receivedAt: T0 - 100 }))
      yield* withQueue({ dataDir, onBatch: (info) => batches.push(info) }, (q) =>
        Effect.gen(function*() {
          for (const m of messages) yield* q.commit(m)
          const before = batches.length
          const claimed = [yield* claimOne(q)]
          for (let i = 0; i < SqliteQueue.claimAhead; i++) claimed.push(yield* claimOne(q))
          assert.strictEqual(batches.length, before + 1, "only the first claim wrote")
          // Workers now claim, so a commit could be handed off, but two rows are still waiting before it.
          const late = message({ receivedAt: T0 - 100 })
          yield* q.commit(late)
          for (let i = 0; i < 3; i++) claimed.push(yield* claimOne(q))
          assert.deepStrictEqual(claimed.map((l) => l.id), [...messages, late].map((m) => m.id))
          assert.isTrue(Option.isNone(yield* q.claim({ owner: "worker-1", leaseMs: 60_000 })))
        }))
    }))

  it.effect("a retrying recipient leased ahead still shows as retry", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      yield* TestClock.setTime(T0)
      const [m1, m2] = [message({ receivedAt: T0 - 2 }), message({ receivedAt: T0 - 1 })]
      yield* withQueue({ dataDir }, (q, a) =>
        Effect.gen(function*() {
          yield* q.commit(m1)
          yield* q.commit(m2)
          const l1 = yield* claimOne(q)
          const l2 = yield* claimOne(q)
          yield* q.settle(l1, [retryAt(l1.recipients[0]!.rcpt, T0 + 1_000, "451 later")])
          yield* q.settle(l2, [retryAt(l2.recipients[0]!.rcpt, T0 + 1_000, "451 later")])
          yield* TestClock.adjust(1_000)
          assert.strictEqual((yield* claimOne(q)).id, m1.id)
          const info = Option.getOrUndefined(yield* a.get(m2.id))
          assert.deepStrictEqual(info?.recipients.map((r) => [r.state, r.attempts]), [["retry", 1]])
          assert.deepStrictEqual((yield* a.list({ state: "retry" })).map((i) => i.id), [m2.id])
          assert.deepStrictEqual((yield* a.stats).recipients, { queued: 0, inflight: 1, retry: 1, delivered: 0, dead: 0 })
          assert.isTrue(yield* a.retryNow(m2.id), "shown as retry, so retryNow has something to do")
          const l2again = yield* claimOne(q)
          assert.strictEqual(l2again.id, m2.id)
          assert.deepStrictEqual(l2again.recipients.map((r) => r.attempt), [2])
        }))
    }))
})
