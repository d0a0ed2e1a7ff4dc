/**
 * A memory queue backend with some of its operations replaced: tests use it to make the queue
 * fail, hang or die at one chosen point while everything else behaves.
 */
import { Effect, type Layer } from "effect"
import { MailQueue } from "../../src/queue/MailQueue.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"
import { QueueAdmin } from "../../src/queue/QueueAdmin.ts"
import * as QueueBackend from "../../src/queue/QueueBackend.ts"

export const memoryWith = (
  queue: (q: MailQueue["Service"]) => Partial<MailQueue["Service"]>,
  admin: (a: QueueAdmin["Service"]) => Partial<QueueAdmin["Service"]> = () => ({})
): Layer.Layer<MailQueue | QueueAdmin> =>
  QueueBackend.layer(Effect.map(MemoryQueue.make(), (b) => ({
    queue: MailQueue.of({ ...b.queue, ...queue(b.queue) }),
    admin: QueueAdmin.of({ ...b.admin, ...admin(b.admin) })
  })))
