/**
 * What a host app (or the config file, through `config/Options.ts`) tells `Incoming.layer`: the
 * domains, listeners, queue, spool, dispatcher, relay, AUTH, policy and admin settings. A module
 * of its own so that `Control.reload` and the config mapping can name the options without
 * importing the composition that consumes them.
 */
import type { Layer } from "effect"
import type * as AuthHandler from "./auth/AuthHandler.ts"
import type * as Dispatcher from "./delivery/Dispatcher.ts"
import type * as Policy from "./policy/Policy.ts"
import type * as Relay from "./policy/Relay.ts"
import type { MailQueue } from "./queue/MailQueue.ts"
import type { MailQueueError } from "./queue/MailQueueError.ts"
import type { PgQueueOptions } from "./queue/postgres/PgQueueOptions.ts"
import type { QueueAdmin } from "./queue/QueueAdmin.ts"
import type { ListenerInput } from "./smtp/ListenerOptions.ts"
import type * as Admin from "./admin/Admin.ts"
import type { PriorityRule } from "./policy/Priorities.ts"
import type { AcmeOptions } from "./acme/AcmeOptions.ts"

export type QueueChoice =
  | { readonly kind: "memory"; readonly maxDepth?: number; readonly deadLetterTtlMs?: number }
  | {
    readonly kind: "sqlite"
    readonly maxDepth?: number
    readonly deadLetterTtlMs?: number
    /** Bodies up to this size are stored in the database row; larger ones in fsync'd files. */
    readonly inlineThreshold?: number
  }
  | ({
    /**
     * The shared PostgreSQL queue: several nodes on one database (see `queue/postgres/`). Its
     * data dir holds only the spool, so servers on one database may share it too.
     */
    readonly kind: "postgres"
  } & PgQueueOptions)
  | {
    readonly kind: "custom"
    /** Both contracts of the backend, as its `layer` (over `QueueBackend.layer`) provides them. */
    readonly layer: Layer.Layer<MailQueue | QueueAdmin, MailQueueError>
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
  /**
   * Message priorities by sender/recipient pattern (policy/Priorities.ts); with a listener's
   * `priority`, an honoured `MT-PRIORITY` and the routes' levels, the highest wins.
   */
  readonly priorities?: ReadonlyArray<PriorityRule> | undefined
  /**
   * ACME certificates for the listeners with `tls.acme = true` (docs/acme.md); `domains` empty
   * means the host names of those listeners.
   */
  readonly acme?: AcmeOptions | undefined
}

export const defaultDataDir = "./var/incoming"
