/**
 * The in-process queue against the shared `MailQueue` conformance kit.
 */
import { conformance } from "../../src/queue/conformance.ts"
import * as MemoryQueue from "../../src/queue/MemoryQueue.ts"

conformance("memory", (options) => MemoryQueue.layer(options))
