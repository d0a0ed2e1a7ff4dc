/**
 * The in-process queue against the shared `MailQueue` conformance kit.
 */
import { conformance } from "../../src/testing/QueueConformance.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"

conformance("memory", (options) => MemoryQueue.layer(options))
