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
import { Context, Effect, Layer } from "effect"
import { DeliveryAdapter } from "./delivery/DeliveryAdapter.ts"
import * as Dispatcher from "./delivery/Dispatcher.ts"
import * as AuthHandler from "./auth/AuthHandler.ts"
import * as Control from "./Control.ts"
import * as DataDir from "./DataDir.ts"
import * as Policy from "./policy/Policy.ts"
import * as Relay from "./policy/Relay.ts"
import type { MailQueue } from "./queue/MailQueue.ts"
import type { MailQueueError } from "./queue/MailQueueError.ts"
import * as MemoryQueue from "./queue/MemoryQueue.ts"
import * as SqliteQueue from "./queue/SqliteQueue.ts"
import type { ListenError } from "./smtp/ListenError.ts"
import * as Listener from "./smtp/Listener.ts"
import type { ListenerInput } from "./smtp/ListenerOptions.ts"
import * as Spool from "./spool/Spool.ts"
import type { SpoolError } from "./spool/SpoolError.ts"
import * as Admin from "./telemetry/Admin.ts"
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
  | {
    readonly kind: "custom"
    readonly layer: Layer.Layer<MailQueue, MailQueueError>
    /**
     * The queue is shared by design with other servers (several nodes on one database): they may
     * then also share the data dir, whose lock is taken shared and whose spool is not swept at
     * start. Default false: the data dir is this server's alone and a second server refuses it.
     */
    readonly shared?: boolean | undefined
  }

export interface PolicyChoice {
  /** Rules in the order they run; built-ins live in `policy/rules/`. */
  readonly rules: ReadonlyArray<Policy.Rule>
  /** Deadline per rule hook (default 10 s); a timeout defers with 451 4.4.2. */
  readonly timeoutMs?: number | undefined
}

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
  /**
   * Recipient authority beyond `domains`: mailbox list or lookup, host-app domain check, trusted
   * networks. Whether relayed recipients can go anywhere is the delivery adapter's to say
   * (`DeliveryAdapter.deliversOffSite`).
   */
  readonly relay?: Omit<Relay.RelayOptions, "domains" | "relayRoute"> | undefined
  /** SMTP AUTH: the user store and failure limits. Required by `submission`/`submissions` listeners. */
  readonly auth?: AuthHandler.AuthHandlerOptions | undefined
  /** Policy rules run at connect, HELO (at MAIL), MAIL, RCPT and DATA. */
  readonly policies?: PolicyChoice | undefined
  /** The admin HTTP endpoint (/healthz, /readyz, /metrics); off when absent. */
  readonly admin?: Admin.AdminOptions | undefined
}

export type Services =
  | Control.Control
  | Policy.Policy
  | Policy.PolicySwap
  | Relay.RelaySwap
  | Relay.Relay
  | Listener.Listeners
  | MailQueue
  | Telemetry.Telemetry
  | Dispatcher.Dispatcher
  | Spool.Spool
  | Admin.Health

export const defaultDataDir = "./var/incoming"

const queueLayer = (input: QueueChoice | undefined, dataDir: string): Layer.Layer<MailQueue, MailQueueError> => {
  // The embedded default is durable: accepted mail must survive a restart.
  const choice: QueueChoice = input ?? { kind: "sqlite" }
  if (choice.kind === "memory") {
    return MemoryQueue.layer({
      ...(choice.maxDepth !== undefined ? { maxDepth: choice.maxDepth } : {}),
      ...(choice.deadLetterTtlMs !== undefined ? { deadLetterTtlMs: choice.deadLetterTtlMs } : {})
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

/** The rules as a swappable service; every evaluation is published as a `PolicyVerdict` event. */
const policyLayer = (choice: PolicyChoice | undefined): Layer.Layer<Policy.Policy | Policy.PolicySwap, never, Telemetry.Telemetry> =>
  Layer.effectContext(
    Telemetry.Telemetry.use((events) => {
      const { policy, swap } = Policy.makeSwappable({
        rules: choice?.rules ?? [],
        timeout: choice?.timeoutMs ?? Policy.defaultTimeout,
        observer: (e) =>
          events.publish({
            _tag: "PolicyVerdict",
            rule: e.rule,
            stage: e.stage,
            verdict: e.verdict._tag,
            mode: e.mode,
            sessionId: e.sessionId
          })
      })
      return Effect.succeed(Context.make(Policy.Policy, policy).pipe(Context.add(Policy.PolicySwap, swap)))
    })
  )

/**
 * The whole server as a layer. Provide a `DeliveryAdapter` (an Effect function, Maildir, ...);
 * the services it exposes let a host app watch events, inspect the queue and find bound ports.
 */
export type StartError = ListenError | MailQueueError | Relay.RelayConfigError | DataDir.DataDirError | SpoolError

export const layer = (options: IncomingOptions): Layer.Layer<Services, StartError, DeliveryAdapter> => {
  const dataDir = resolve(options.dataDir ?? defaultDataDir)
  const hostname = options.hostname ?? osHostname()
  const queue = queueLayer(options.queue, dataDir)
  const sharedQueue = options.queue?.kind === "custom" && options.queue.shared === true
  // Health and the admin endpoint sit below the listeners, so /readyz keeps answering (503)
  // while they drain; `Admin.attach` on top tells Health when they are bound and when the
  // shutdown starts.
  const health = Admin.layerHealth().pipe(Layer.provide(queue))
  const admin = options.admin === undefined ? Layer.empty : Admin.layer(options.admin).pipe(Layer.provide(health))
  const telemetry = Telemetry.layer()
  const base = Layer.mergeAll(
    telemetry,
    queue,
    // Only a server that holds the data dir alone sweeps the spool: other files there are live.
    Layer.unwrap(DataDir.DataDir.use((d) => Effect.succeed(Spool.layer({ dir: join(dataDir, "spool"), sweep: d.exclusive, ...options.spool })))),
    // Relayed recipients are accepted only when the delivery adapter can take them off-site.
    Layer.unwrap(DeliveryAdapter.use((adapter) =>
      Effect.succeed(Relay.layerSwappable({
        domains: options.domains,
        ...options.relay,
        relayRoute: (address) => adapter.deliversOffSite?.(address) === true
      }))
    )),
    policyLayer(options.policies).pipe(Layer.provide(telemetry)),
    health,
    admin
  )
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000
  // Each layer is built on the one below and closed before it: listeners drain first, then the
  // dispatcher stops (a memory queue's backlog is delivered first), then the queue closes.
  const listeners = Listener.layer({ listeners: options.listeners, hostname, drainTimeoutMs, auth: options.auth })
  const dispatcher = Dispatcher.layer({ drainTimeoutMs, ...options.dispatcher })
  // The data dir lock is taken before anything else is built (queue, spool, any socket) and
  // released after everything closed: a second server on the directory stops here, touching nothing.
  return Layer.mergeAll(Admin.attach, Control.layer).pipe(
    Layer.provideMerge(listeners),
    Layer.provideMerge(dispatcher),
    Layer.provideMerge(base),
    Layer.provide(DataDir.layer({ dir: dataDir, shared: sharedQueue }))
  )
}
