/**
 * The queue conformance kit (`incoming-smtp/testing/queue-conformance`): one set of tests every
 * backend must pass, so the memory, SQLite and PostgreSQL queues keep exactly the same semantics
 * (claim order and priority, leases, partial delivery, retries, dead letters, reports committed
 * with a settle, depth, wake-ups, the operator's view).
 *
 * A backend's test file calls `conformance(name, makeLayer)`; `makeLayer` must return a fresh,
 * empty backend providing both contracts (`MailQueue` and `QueueAdmin`) on every call (a new
 * temp directory, schema...). Tests run under `TestClock`, so the backend must take time from
 * Effect's `Clock`. The tests themselves live by concern in `queueConformance/`.
 */
import { describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { MailQueue } from "../queue/MailQueue.ts"
import { QueueAdmin } from "../queue/QueueAdmin.ts"
import { admin } from "./queueConformance/admin.ts"
import { hold } from "./queueConformance/hold.ts"
import { hotPath } from "./queueConformance/hotPath.ts"
import { priority } from "./queueConformance/priority.ts"
import { reports } from "./queueConformance/reports.ts"
import { type ConformanceTest, type MakeQueueLayer, T0 } from "./queueConformance/support.ts"

export {
  type BodyProbe,
  envelope,
  fileBody,
  type MakeQueueLayer,
  memoryBody,
  message,
  readAll,
  T0
} from "./queueConformance/support.ts"

/** Parts of the kit a backend does not implement yet; each skip shows in the test report. */
export interface ConformanceOptions {
  readonly skip?: ReadonlyArray<"hold"> | undefined
}

export const conformance = <E>(name: string, makeLayer: MakeQueueLayer<E>, options: ConformanceOptions = {}): void => {
  const test: ConformanceTest = (title, body, options = {}) =>
    it.effect(title, () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(T0)
        return yield* body(yield* MailQueue, yield* QueueAdmin)
      }).pipe(Effect.provide(makeLayer(options))))

  describe(`queue conformance: ${name}`, () => {
    describe("hot path (MailQueue)", () => hotPath(test))
    describe("priority", () => priority(test))
    describe("operator (QueueAdmin)", () => admin(test))
    describe("reports committed with a settle", () => reports(test))
    describe.skipIf(options.skip?.includes("hold") === true)("hold and release (QueueAdmin)", () => hold(test))
  })
}
