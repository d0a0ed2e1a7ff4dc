/**
 * Composition: one call turns options into the running server — listeners, spool, queue,
 * dispatcher, telemetry — as a layer that needs only a `DeliveryAdapter` from the host app.
 *
 * Finalization order is the drain order: listeners on top of the dispatcher on top of the queue,
 * so closing the layer first drains the listeners (in-flight DATA commits finish), then stops
 * the workers (their leases go back), and only then closes the queue.
 */
import { hostname as osHostname } from "node:os"
import { join, resolve } from "node:path"
import { Layer } from "effect"
import type { DeliveryAdapter } from "./delivery/DeliveryAdapter.ts"
import * as Dispatcher from "./delivery/Dispatcher.ts"
import * as Relay from "./policy/Relay.ts"
import type { MailQueue } from "./queue/MailQueue.ts"
import type { MailQueueError } from "./queue/MailQueueError.ts"
import * as MemoryQueue from "./queue/MemoryQueue.ts"
import * as SqliteQueue from "./queue/SqliteQueue.ts"
import type { ListenError } from "./smtp/ListenError.ts"
import * as Listener from "./smtp/Listener.ts"
import type { ListenerInput } from "./smtp/ListenerOptions.ts"
import * as Spool from "./spool/Spool.ts"
import * as Telemetry from "./telemetry/Telemetry.ts"

export type QueueChoice =
  | { readonly kind: "memory"; readonly maxDepth?: number; readonly deadLetterTtlMs?: number }
  | {
    readonly kind: "sqlite"
    readonly maxDepth?: number
    readonly deadLetterTtlMs?: number
    /** Bodies up to this size are stored in the database row; larger ones in fsync'd files. */
    readonly inlineThreshold?: number
  }
  | { readonly kind: "custom"; readonly layer: Layer.Layer<MailQueue, MailQueueError> }

export interface IncomingOptions {
  /** Our host name (greeting, `Received: by`); defaults to the machine's. */
  readonly hostname?: string | undefined
  /** Domains we accept mail for; the first is the primary. */
  readonly domains: ReadonlyArray<string>
  readonly listeners: ReadonlyArray<ListenerInput>
  /** Root of everything Incoming writes (spool, durable queue); default `./var/incoming`. */
  readonly dataDir?: string | undefined
  readonly queue?: QueueChoice | undefined
  readonly spool?: { readonly inMemoryThreshold?: number; readonly memoryBudget?: number } | undefined
  readonly dispatcher?: Partial<Dispatcher.DispatcherOptions> | undefined
  /** How long a drain waits for DATA transactions in flight before interrupting them. */
  readonly drainTimeoutMs?: number | undefined
}

export type Services = Listener.Listeners | MailQueue | Telemetry.Telemetry | Dispatcher.Dispatcher | Spool.Spool

export const defaultDataDir = "./var/incoming"

const queueLayer = (choice: QueueChoice | undefined, dataDir: string): Layer.Layer<MailQueue, MailQueueError> => {
  if (choice === undefined || choice.kind === "memory") {
    return MemoryQueue.layer({
      ...(choice?.maxDepth !== undefined ? { maxDepth: choice.maxDepth } : {}),
      ...(choice?.deadLetterTtlMs !== undefined ? { deadLetterTtlMs: choice.deadLetterTtlMs } : {})
    })
  }
  if (choice.kind === "sqlite") {
    return SqliteQueue.layer({
      dataDir,
      ...(choice.maxDepth !== undefined ? { maxDepth: choice.maxDepth } : {}),
      ...(choice.deadLetterTtlMs !== undefined ? { deadLetterTtlMs: choice.deadLetterTtlMs } : {}),
      ...(choice.inlineThreshold !== undefined ? { inlineThreshold: choice.inlineThreshold } : {})
    })
  }
  return choice.layer
}

/**
 * The whole server as a layer. Provide a `DeliveryAdapter` (an Effect function, Maildir, ...);
 * the services it exposes let a host app watch events, inspect the queue and find bound ports.
 */
export const layer = (options: IncomingOptions): Layer.Layer<Services, ListenError | MailQueueError, DeliveryAdapter> => {
  const dataDir = resolve(options.dataDir ?? defaultDataDir)
  const hostname = options.hostname ?? osHostname()
  const base = Layer.mergeAll(
    Telemetry.layer(),
    queueLayer(options.queue, dataDir),
    Spool.layer({ dir: join(dataDir, "spool"), ...options.spool }),
    Relay.layer({ domains: options.domains })
  )
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000
  // Each layer is built on the one below and closed before it: listeners drain first, then the
  // dispatcher stops (a memory queue's backlog is delivered first), then the queue closes.
  const listeners = Listener.layer({ listeners: options.listeners, hostname, drainTimeoutMs })
  const dispatcher = Dispatcher.layer({ drainTimeoutMs, ...options.dispatcher })
  return listeners.pipe(Layer.provideMerge(dispatcher), Layer.provideMerge(base))
}
