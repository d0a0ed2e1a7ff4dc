/**
 * The schema of the config file: every setting the standalone server takes, with its default.
 *
 * Keys are snake_case as written in TOML/JSON/YAML; decoding fills in defaults, turns durations
 * into milliseconds and sizes into bytes, and wraps secrets in `Redacted` so they never reach a
 * log line or the output of `check-config`. Unknown keys are errors (decoded with
 * `onExcessProperty: "error"`). Defaults are taken from the modules that own them
 * (`ListenerOptions.defaults`, `Dispatcher.defaults`, ...) so the file and a host app built
 * with `Incoming.layer` start from the same values.
 *
 * Extension points: `routes` (recipient → delivery adapter) and `policies` (rules per stage)
 * are being designed in parallel. They are deliberately absent: a key the schema does not know
 * is rejected, so a file written for a later version fails loudly instead of being half-applied.
 * Each will be added here as a Struct of its own, under its own top-level key.
 */
import { hostname as osHostname } from "node:os"
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { parseHostPort } from "../cli/address.ts"
import * as Backoff from "../delivery/Backoff.ts"
import * as Dispatcher from "../delivery/Dispatcher.ts"
import { defaultQueueOptions } from "../queue/MailQueue.ts"
import { defaultInlineThreshold } from "../queue/SqliteQueue.ts"
import * as ListenerOptions from "../smtp/ListenerOptions.ts"
import { defaultSpoolOptions } from "../spool/Spool.ts"
import { Duration, formatDuration, formatSize, Size } from "./Units.ts"

const withDefault = <S extends Schema.Top>(schema: S, value: S["Encoded"]) =>
  schema.pipe(Schema.withDecodingDefaultKey<S>(Effect.succeed(value)))
const duration = (ms: number) => withDefault(Duration, formatDuration(ms))
const size = (bytes: number) => withDefault(Size, formatSize(bytes))
const count = (min: number, value: number) => withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(min)), value)
const NonEmpty = Schema.String.check(Schema.isNonEmpty())

/** A secret: decoded into `Redacted`; a wrong value is reported without echoing it. */
const secretMessage = "expected a non-empty string (a secret: the value is not shown)"
const Secret = Schema.RedactedFromValue(
  Schema.String.annotate({ message: secretMessage }).check(Schema.isNonEmpty({ message: secretMessage }))
)

/** `"HOST:PORT"` (IPv6 as `"[::1]:9025"`), decoded to its parts. */
export const ListenAddress = Schema.String.pipe(
  Schema.decodeTo(
    Schema.Struct({ host: Schema.String, port: Schema.Number }),
    SchemaTransformation.transformEffect<{ readonly host: string; readonly port: number }, string>({
      decode: (text) => {
        const hp = parseHostPort(text)
        return typeof hp === "string" ? Effect.fail(new SchemaIssue.InvalidValue({ message: `bad listen address: ${hp}` })) : Effect.succeed(hp)
      },
      encode: ({ host, port }) => Effect.succeed(host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)
    })
  )
)

const d = ListenerOptions.defaults

export const Tls = Schema.Struct({
  mode: withDefault(Schema.Literals(["disabled", "optional", "required", "implicit"]), d.tls.mode),
  /** PEM certificate chain; required unless mode is "disabled". */
  cert: Schema.optionalKey(NonEmpty),
  /** PEM private key; not a secret itself (it names a file), the file's permissions protect it. */
  key: Schema.optionalKey(NonEmpty)
})

export const Listener = Schema.Struct({
  name: Schema.optionalKey(NonEmpty),
  host: withDefault(NonEmpty, "127.0.0.1"),
  port: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })),
  /** This listener's name in the greeting and `Received: by`; defaults to the top-level hostname. */
  hostname: Schema.optionalKey(NonEmpty),
  tls: withDefault(Tls, {}),
  max_size: size(d.maxSize),
  max_recipients: count(1, d.maxRecipients),
  max_commands: count(1, d.maxCommands),
  max_errors: count(1, d.maxErrors),
  idle_timeout: duration(d.idleTimeoutMs),
  command_timeout: duration(d.commandTimeoutMs),
  data_timeout: duration(d.dataTimeoutMs),
  max_connection_time: duration(d.maxConnectionTimeMs),
  max_connections: count(1, d.maxConnections),
  max_connections_per_ip: count(1, d.maxConnectionsPerIp),
  greeting_delay: duration(d.greetingDelayMs),
  line_endings: withDefault(Schema.Literals(["reject", "normalize"]), d.lineEndings),
  hook_timeout: duration(d.hookTimeoutMs)
})

export const defaultListeners = [{ host: "127.0.0.1", port: 2525 }] as const

export const Queue = Schema.Struct({
  backend: withDefault(Schema.Literals(["sqlite", "memory"]), "sqlite"),
  max_depth: count(1, defaultQueueOptions.maxDepth),
  dead_letter_ttl: duration(defaultQueueOptions.deadLetterTtlMs),
  /** sqlite only: bodies up to this size live in the database row, larger ones in fsync'd files. */
  inline_threshold: size(defaultInlineThreshold)
})

export const Spool = Schema.Struct({
  memory_threshold: size(defaultSpoolOptions.inMemoryThreshold),
  memory_budget: size(defaultSpoolOptions.memoryBudget)
})

export const Delivery = Schema.Struct({
  adapter: withDefault(Schema.Literals(["maildir", "discard"]), "maildir"),
  maildir: withDefault(Schema.Struct({ root: withDefault(NonEmpty, "./var/mail") }), {}),
  workers: count(1, Dispatcher.defaults.workers),
  max_attempts: count(1, Dispatcher.defaults.maxAttempts),
  lease: duration(Dispatcher.defaults.leaseMs),
  timeout: duration(Dispatcher.defaults.deliveryTimeoutMs),
  backoff: withDefault(Schema.Struct({
    base: duration(Backoff.defaults.baseMs),
    max: duration(Backoff.defaults.maxMs),
    jitter: withDefault(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1, exclusiveMaximum: true })), Backoff.defaults.jitter)
  }), {})
})

export const LogLevels = ["trace", "debug", "info", "warn", "error", "fatal", "none"] as const
export type LogLevelName = (typeof LogLevels)[number]

export const Logging = Schema.Struct({
  format: withDefault(Schema.Literals(["auto", "json", "pretty"]), "auto"),
  level: withDefault(Schema.Literals(LogLevels), "info")
})

export const Admin = Schema.Struct({
  listen: ListenAddress,
  /**
   * When set, every admin path but `/healthz` needs `Authorization: Bearer <token>`. A secret:
   * write it as `"${ADMIN_TOKEN}"` (or set `INCOMING_ADMIN_AUTH_TOKEN`), not in the file.
   */
  auth_token: Schema.optionalKey(Secret)
})

export const IncomingConfig = Schema.Struct({
  hostname: NonEmpty.pipe(Schema.withDecodingDefaultKey(Effect.sync(() => osHostname()))),
  domains: withDefault(Schema.NonEmptyArray(NonEmpty), ["localhost"]),
  data_dir: withDefault(NonEmpty, "./var/incoming"),
  drain_timeout: duration(30_000),
  listeners: withDefault(Schema.NonEmptyArray(Listener), defaultListeners),
  queue: withDefault(Queue, {}),
  spool: withDefault(Spool, {}),
  delivery: withDefault(Delivery, {}),
  logging: withDefault(Logging, {}),
  /** The admin HTTP endpoint (metrics, health); off unless this table is present. */
  admin: Schema.optionalKey(Admin)
})

export type IncomingConfig = typeof IncomingConfig.Type
export type IncomingConfigInput = typeof IncomingConfig.Encoded
