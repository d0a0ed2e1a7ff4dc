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
import * as SyncAck from "./delivery/SyncAck.ts"
import * as Control from "./Control.ts"
import * as DataDir from "./DataDir.ts"
import { defaultDataDir, type IncomingOptions, type PolicyChoice, type QueueChoice } from "./IncomingOptions.ts"
import * as Policy from "./policy/Policy.ts"
import * as Priorities from "./policy/Priorities.ts"
import * as Relay from "./policy/Relay.ts"
import * as Verdict from "./policy/Verdict.ts"
import type { MailQueue } from "./queue/MailQueue.ts"
import type { MailQueueError } from "./queue/MailQueueError.ts"
import type { QueueAdmin } from "./queue/QueueAdmin.ts"
import * as MemoryQueue from "./queue/MemoryQueue.ts"
import * as PgQueue from "./queue/postgres/PgQueue.ts"
import * as SqliteQueue from "./queue/SqliteQueue.ts"
import type { ListenError } from "./smtp/ListenError.ts"
import * as Listener from "./smtp/Listener.ts"
import * as Spool from "./spool/Spool.ts"
import type { SpoolError } from "./spool/SpoolError.ts"
import * as Admin from "./admin/Admin.ts"
import * as CertManager from "./acme/CertManager.ts"
import * as AcmeFiles from "./acme/ListenerFiles.ts"
import * as Telemetry from "./telemetry/Telemetry.ts"

export type Services =
  | Control.Control
  | Policy.Policy
  | Policy.PolicySwap
  | Relay.RelaySwap
  | Relay.Relay
  | Listener.Listeners
  | MailQueue
  | QueueAdmin
  | Telemetry.Telemetry
  | Dispatcher.Dispatcher
  | Spool.Spool
  | Admin.Health
  | CertManager.CertManager

// Re-exported: host apps name the options as `Incoming.IncomingOptions`.
export type { IncomingOptions, PolicyChoice, QueueChoice } from "./IncomingOptions.ts"
export { defaultDataDir } from "./IncomingOptions.ts"

const queueLayer = (input: QueueChoice | undefined, dataDir: string): Layer.Layer<MailQueue | QueueAdmin, MailQueueError> => {
  // The embedded default is durable: accepted mail must survive a restart.
  const choice: QueueChoice = input ?? { kind: "sqlite" }
  if (choice.kind === "memory") {
    return MemoryQueue.layer({
      ...(choice.maxDepth !== undefined ? { maxDepth: choice.maxDepth } : {}),
      ...(choice.deadLetterTtlMs !== undefined ? { deadLetterTtlMs: choice.deadLetterTtlMs } : {}),
      ...(choice.priorityMaxWaitMs !== undefined ? { priorityMaxWaitMs: choice.priorityMaxWaitMs } : {})
    })
  }
  if (choice.kind === "sqlite") {
    return SqliteQueue.layer({
      dataDir,
      ...(choice.maxDepth !== undefined ? { maxDepth: choice.maxDepth } : {}),
      ...(choice.deadLetterTtlMs !== undefined ? { deadLetterTtlMs: choice.deadLetterTtlMs } : {}),
      ...(choice.priorityMaxWaitMs !== undefined ? { priorityMaxWaitMs: choice.priorityMaxWaitMs } : {}),
      ...(choice.inlineThreshold !== undefined ? { inlineThreshold: choice.inlineThreshold } : {})
    })
  }
  if (choice.kind === "postgres") {
    const { kind: _kind, ...options } = choice
    return PgQueue.layer(options)
  }
  return choice.layer
}

/** What a DATA-stage verdict carries that a host app watching events wants typed. */
const verdictDetails = (verdict: Verdict.Verdict) => {
  const edits = Verdict.editsOf(verdict)
  if (edits.length === 0) return {}
  const results = edits.flatMap((e) => e._tag === "AuthResults" ? e.results : [])
  const quarantine = edits.find((e) => e._tag === "Quarantine")
  return {
    ...(results.length > 0 ? { results } : {}),
    ...(quarantine !== undefined ? { quarantine: quarantine.reason } : {})
  }
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
            sessionId: e.sessionId,
            ...verdictDetails(e.verdict)
          })
      })
      return Effect.succeed(Context.make(Policy.Policy, policy).pipe(Context.add(Policy.PolicySwap, swap)))
    })
  )

/**
 * The whole server as a layer. Provide a `DeliveryAdapter` (an Effect function, Maildir, ...);
 * the services it exposes let a host app watch events, inspect the queue and find bound ports.
 */
export type StartError =
  | ListenError
  | MailQueueError
  | Relay.RelayConfigError
  | DataDir.DataDirError
  | SpoolError
  | Priorities.PrioritiesError

export const layer = (options: IncomingOptions): Layer.Layer<Services, StartError, DeliveryAdapter> => {
  const dataDir = resolve(options.dataDir ?? defaultDataDir)
  const hostname = options.hostname ?? osHostname()
  const queue = queueLayer(options.queue, dataDir)
  const sharedQueue = options.queue?.kind === "postgres" || (options.queue?.kind === "custom" && options.queue.shared === true)
  // Health and the admin endpoint sit below the listeners, so /readyz keeps answering (503)
  // while they drain; `Admin.attach` on top tells Health when they are bound and when the
  // shutdown starts.
  const health = Admin.layerHealth().pipe(Layer.provide(queue))
  const admin = options.admin === undefined ? Layer.empty : Admin.layer(options.admin).pipe(Layer.provide(health))
  const telemetry = Telemetry.layer()
  // Managed certificates: a listener with `tls.acme` reads the manager's files, which exist
  // (issued now if they did not) before any listener starts.
  const acme = AcmeFiles.resolve(options.listeners, options.acme, dataDir, hostname)
  const certificates = CertManager.layer(options.acme === undefined ? undefined : { ...options.acme, domains: acme.names }, dataDir)
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
    options.priorities === undefined ? Layer.empty : Priorities.layer(options.priorities),
    // Sessions ask it whether a recipient is acknowledged before the reply (a Router's sync routes).
    SyncAck.layer.pipe(Layer.provide(telemetry)),
    health,
    admin,
    certificates
  )
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000
  // Each layer is built on the one below and closed before it: listeners drain first, then the
  // dispatcher stops (a memory queue's backlog is delivered first), then the queue closes.
  const listeners = Listener.layer({ listeners: acme.listeners, hostname, drainTimeoutMs, auth: options.auth })
  const dispatcher = Dispatcher.layer({ drainTimeoutMs, ...options.dispatcher })
  // The data dir lock is taken before anything else is built (queue, spool, any socket) and
  // released after everything closed: a second server on the directory stops here, touching nothing.
  return Layer.mergeAll(Admin.attach, CertManager.attach, Control.layer).pipe(
    Layer.provideMerge(listeners),
    Layer.provideMerge(dispatcher),
    Layer.provideMerge(base),
    Layer.provide(DataDir.layer({ dir: dataDir, shared: sharedQueue, queue: options.queue?.kind ?? "sqlite" }))
  )
}
