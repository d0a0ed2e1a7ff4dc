/**
 * A process that dies at the worst moment for a bounce (run by test/delivery/bounceCrash.test.ts):
 * a dispatcher over the SQLite queue in `argv[2]` delivers one queued message whose recipient
 * the adapter refuses with 550, and the process SIGKILLs itself the instant the queue's settle
 * returns — after the dead letter is recorded, before anything else runs. A bounce made after
 * the settle would be lost; one committed with it survives.
 */
import { Effect, Layer } from "effect"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as Dispatcher from "../../src/delivery/Dispatcher.ts"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import * as SqliteQueue from "../../src/queue/SqliteQueue.ts"
import * as Telemetry from "../../src/telemetry/Telemetry.ts"
import { envelope, message } from "./fixtures.ts"

const dataDir = process.argv[2]!

const refuseAll = Layer.succeed(DA.DeliveryAdapter, DA.DeliveryAdapter.of({
  name: "refuse",
  deliversOffSite: () => false,
  deliver: (d) => Effect.succeed(d.recipients.map((r) => ({ ...DA.reject(r.rcpt, "550 5.1.1 no such user"), remote: "mx.dest.test" })))
}))

/** The SQLite queue, its settle followed by SIGKILL. */
const dyingQueue = Layer.effect(
  MailQueue,
  Effect.gen(function*() {
    const queue = yield* MailQueue
    yield* queue.commit({ ...message(["gone@dest.test"], Date.now()), envelope: envelope(["gone@dest.test"], "sender@us.test") })
    return MailQueue.of({
      ...queue,
      settle: (lease, settlements, extras) =>
        Effect.andThen(queue.settle(lease, settlements, extras), Effect.sync(() => process.kill(process.pid, "SIGKILL")))
    })
  })
).pipe(Layer.provide(SqliteQueue.layer({ dataDir })))

Dispatcher.layer({ workers: 1, idlePollMs: 50, bounces: { reportingMta: "mx.us.test", localDomains: ["us.test"] } }).pipe(
  Layer.provide(Layer.mergeAll(dyingQueue, Telemetry.layer(), refuseAll)),
  Layer.launch,
  Effect.timeout("20 seconds"),
  NodeRuntime.runMain
)
