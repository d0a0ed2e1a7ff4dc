/**
 * The PostgreSQL queue against the shared `MailQueue` conformance kit, each test on a database
 * of its own.
 *
 * The kit plays a crashed owner by a worker that stays silent past its lease. A live node's
 * heartbeat exists precisely to keep its leases from expiring, so the kit runs with the
 * heartbeat and the maintenance loop off (`test/queue/postgres-leases.test.ts` covers both,
 * with two nodes and real time).
 */
import { describe, it } from "@effect/vitest"
import { conformance } from "../../src/testing/QueueConformance.ts"
import * as Pg from "../support/postgres.ts"

if (Pg.available) {
  conformance("postgres", (options) => Pg.queueLayer({ ...options, heartbeat: false, maintenanceIntervalMs: 0 }))
} else {
  describe("MailQueue conformance: postgres", () => {
    it.skip(Pg.skipMessage, () => {})
  })
}
