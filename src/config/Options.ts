/**
 * From a decoded `IncomingConfig` to what the runner builds: the `IncomingOptions` of
 * `Incoming.layer` (the same options a host app passes), plus the parts only the standalone
 * runner has — which delivery adapter to use and how to log.
 */
import type { LogLevel } from "effect"
import type { IncomingOptions } from "../Incoming.ts"
import type { ListenerInput } from "../smtp/ListenerOptions.ts"
import type { IncomingConfig, LogLevelName } from "./IncomingConfig.ts"

export type DeliveryChoice =
  | { readonly adapter: "maildir"; readonly root: string }
  | { readonly adapter: "discard" }

export interface Runner {
  readonly options: IncomingOptions
  readonly delivery: DeliveryChoice
  readonly logging: { readonly format: "auto" | "json" | "pretty"; readonly level: LogLevel.LogLevel }
}

const logLevels: Record<LogLevelName, LogLevel.LogLevel> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error",
  fatal: "Fatal",
  none: "None"
}

export const toIncomingOptions = (c: IncomingConfig): IncomingOptions => ({
  hostname: c.hostname,
  domains: c.domains,
  dataDir: c.data_dir,
  drainTimeoutMs: c.drain_timeout,
  listeners: c.listeners.map((l): ListenerInput => ({
    ...(l.name !== undefined ? { name: l.name } : {}),
    ...(l.hostname !== undefined ? { hostname: l.hostname } : {}),
    host: l.host,
    port: l.port,
    tls: {
      mode: l.tls.mode,
      ...(l.tls.cert !== undefined ? { cert: l.tls.cert } : {}),
      ...(l.tls.key !== undefined ? { key: l.tls.key } : {})
    },
    maxSize: l.max_size,
    maxRecipients: l.max_recipients,
    maxCommands: l.max_commands,
    maxErrors: l.max_errors,
    idleTimeoutMs: l.idle_timeout,
    commandTimeoutMs: l.command_timeout,
    dataTimeoutMs: l.data_timeout,
    maxConnectionTimeMs: l.max_connection_time,
    maxConnections: l.max_connections,
    maxConnectionsPerIp: l.max_connections_per_ip,
    greetingDelayMs: l.greeting_delay,
    lineEndings: l.line_endings,
    hookTimeoutMs: l.hook_timeout
  })),
  queue: c.queue.backend === "sqlite"
    ? { kind: "sqlite", maxDepth: c.queue.max_depth, deadLetterTtlMs: c.queue.dead_letter_ttl, inlineThreshold: c.queue.inline_threshold }
    : { kind: "memory", maxDepth: c.queue.max_depth, deadLetterTtlMs: c.queue.dead_letter_ttl },
  spool: { inMemoryThreshold: c.spool.memory_threshold, memoryBudget: c.spool.memory_budget },
  dispatcher: {
    workers: c.delivery.workers,
    maxAttempts: c.delivery.max_attempts,
    leaseMs: c.delivery.lease,
    deliveryTimeoutMs: c.delivery.timeout,
    backoff: { baseMs: c.delivery.backoff.base, maxMs: c.delivery.backoff.max, jitter: c.delivery.backoff.jitter }
  },
  ...(c.admin !== undefined
    ? {
      admin: {
        host: c.admin.listen.host,
        port: c.admin.listen.port,
        ...(c.admin.auth_token !== undefined ? { authToken: c.admin.auth_token } : {})
      }
    }
    : {})
})

export const toRunner = (c: IncomingConfig): Runner => ({
  options: toIncomingOptions(c),
  delivery: c.delivery.adapter === "maildir" ? { adapter: "maildir", root: c.delivery.maildir.root } : { adapter: "discard" },
  logging: { format: c.logging.format, level: logLevels[c.logging.level] }
})
