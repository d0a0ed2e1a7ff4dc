/**
 * Every queue backend keeps the whole envelope: SMTPUTF8, the RFC 3461 parameters and UTF-8
 * addresses come back from `get` and `claim` as they were committed — from the SQLite queue also
 * after the process's queue is closed and opened again (the stored JSON decoded through the
 * envelope's Schema, protocol/Envelope.ts), and from the PostgreSQL queue (skipped, saying so,
 * where no PostgreSQL answers). A backend added later belongs in the list below, or in the
 * conformance kit once it carries this case.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import type { Envelope } from "../../src/protocol/Envelope.ts"
import * as EnvelopeCodec from "../../src/protocol/Envelope.ts"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import * as SqliteQueue from "../../src/queue/SqliteQueue.ts"
import { message, T0 } from "../../src/testing/QueueConformance.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import * as Pg from "../support/postgres.ts"

const full: Envelope = {
  mailFrom: "jörg@xn--bcher-kva.example",
  rcptTo: ["用户@example.test", '"john smith"@example.test'],
  helo: "client.example",
  clientAddress: "192.0.2.10",
  secure: true,
  authenticatedUser: "alice",
  listener: "mx",
  smtpUtf8: true,
  dsn: { ret: "HDRS", envid: "QQ314159+x" },
  recipientDsn: {
    "用户@example.test": { notify: ["SUCCESS", "FAILURE"], orcpt: { type: "utf-8", address: "用户@example.test" } },
    '"john smith"@example.test': { notify: ["NEVER"] }
  }
}

const roundTrip = (q: MailQueue["Service"], admin: QueueAdmin["Service"]) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(T0)
    const m = { ...message({ rcpts: full.rcptTo }), envelope: full }
    yield* q.commit(m)
    const stored = yield* admin.get(m.id)
    assert.deepStrictEqual(Option.getOrThrow(stored).envelope, full)
    const lease = yield* q.claim({ owner: "w", leaseMs: 60_000 })
    assert.deepStrictEqual(Option.getOrThrow(lease).envelope, full)
    return m.id
  })

describe("the envelope in every queue backend", () => {
  it.effect("memory", () => Effect.flatMap(Effect.all([MailQueue, QueueAdmin]), ([q, a]) => roundTrip(q, a)).pipe(Effect.provide(MemoryQueue.layer())))

  it.effect("sqlite, also after it is closed and opened again", () =>
    Effect.gen(function*() {
      const dataDir = mkdtempSync(join(tmpdir(), "incoming-envelope-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dataDir, { recursive: true, force: true })))
      const layer = () => SqliteQueue.layer({ dataDir })
      // Each `provide` is one lifetime of the queue: opened, used, closed.
      const id = yield* Effect.flatMap(Effect.all([MailQueue, QueueAdmin]), ([q, a]) => roundTrip(q, a)).pipe(Effect.provide(layer()))
      const reopened = yield* Effect.flatMap(QueueAdmin, (q) => q.get(id)).pipe(Effect.provide(layer()))
      assert.deepStrictEqual(Option.getOrThrow(reopened).envelope, full)
    }))

  it.effect.skipIf(!Pg.available)("postgres", () =>
    Effect.flatMap(Effect.all([MailQueue, QueueAdmin]), ([q, a]) => roundTrip(q, a)).pipe(
      Effect.provide(Pg.queueLayer({ heartbeat: false, maintenanceIntervalMs: 0 }))
    ), { timeout: 60_000 })

  it("a row written before the new fields decodes, and unknown values are refused", () => {
    const old = { mailFrom: "a@b.test", rcptTo: ["u@example.test"], helo: "h", clientAddress: "192.0.2.1", secure: false, listener: "mx" }
    assert.deepStrictEqual(EnvelopeCodec.decode(JSON.stringify(old)), old)
    assert.deepStrictEqual(EnvelopeCodec.decode(EnvelopeCodec.encode(full)), full)
    assert.throws(() => EnvelopeCodec.decode(JSON.stringify({ ...old, dsn: { ret: "ALL" } })))
    assert.throws(() => EnvelopeCodec.decode(JSON.stringify({ ...old, recipientDsn: { "u@example.test": { notify: ["SOMETIMES"] } } })))
  })
})
