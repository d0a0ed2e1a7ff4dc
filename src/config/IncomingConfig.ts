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
 * Delivery has two forms. The simple one is `delivery.adapter` (`maildir` | `discard`). The
 * routed one is named `[adapters.<name>]` tables (one Struct per `type`) and `[[routes]]` that
 * send recipients to them through the delivery Router. Checks that span both (a route names an
 * adapter that exists, patterns do not collide) are in `Load.ts`, after decoding.
 *
 * Relay control, AUTH and policies: `relay` (trusted networks, known mailboxes), `auth` (the users
 * file and the brute-force limits) and `[[policies]]`, the built-in rules in the order they run,
 * one Struct per `rule`. These are data here; `Build.ts` turns them into the live objects (the
 * scoped rate limiter, the file-backed user store). A key the schema does not know is still
 * rejected, so a file written for a later version fails loudly instead of being half-applied.
 */
import { hostname as osHostname } from "node:os"
import { Duration as EffectDuration, Effect, Result, Schema, SchemaIssue, SchemaTransformation } from "effect"
import * as Backoff from "../delivery/Backoff.ts"
import * as Dispatcher from "../delivery/Dispatcher.ts"
import * as LmtpAdapterModule from "../delivery/LmtpAdapter.ts"
import * as MxAdapterModule from "../delivery/MxAdapter.ts"
import { MxAdapter } from "./MxConfig.ts"
import * as SmtpRelayAdapterModule from "../delivery/SmtpRelayAdapter.ts"
import * as WebhookAdapterModule from "../delivery/webhook/WebhookAdapter.ts"
import * as Policy from "../policy/Policy.ts"
import * as Milter from "../policy/rules/Milter.ts"
import * as Priority from "../protocol/Priority.ts"
import * as RateLimiter from "../policy/rules/RateLimiter.ts"
import * as DnsblModule from "../policy/rules/spam/Dnsbl.ts"
import * as GreylistModule from "../policy/rules/spam/Greylist.ts"
import * as RspamdModule from "../policy/rules/spam/Rspamd.ts"
import * as SpamdModule from "../policy/rules/spam/Spamd.ts"
import * as ListenerOptions from "../smtp/ListenerOptions.ts"
import { defaultSpoolOptions } from "../spool/Spool.ts"
import { defaults as tracingDefaults } from "../telemetry/Tracing.ts"
import { Duration, Size } from "./Units.ts"
import { Acme } from "./AcmeConfig.ts"
import { Dns } from "./DnsConfig.ts"
import { Queue } from "./QueueConfig.ts"
import { count, duration, ListenAddress, NonEmpty, Secret, size, withDefault } from "./SchemaParts.ts"

const d = ListenerOptions.defaults

export const Tls = Schema.Struct({
  mode: withDefault(Schema.Literals(["disabled", "optional", "required", "implicit"]), d.tls.mode),
  /** PEM certificate chain; required unless mode is "disabled". */
  cert: Schema.optionalKey(NonEmpty),
  /** PEM private key; not a secret itself (it names a file), the file's permissions protect it. */
  key: Schema.optionalKey(NonEmpty),
  /** More certificates chosen by the name the client asks for (SNI): server name → files. */
  sni: Schema.optionalKey(Schema.Record(Schema.String, Schema.Struct({ cert: NonEmpty, key: NonEmpty }))),
  /** Use the certificates of `[acme]` (one per managed name, picked by SNI) instead of cert/key/sni. */
  acme: withDefault(Schema.Boolean, false)
})

/** A message priority: `low`, `normal`, `high`, `critical` or an integer -9..9 (protocol/Priority.ts). */
export const PriorityLevel = Schema.Union([Schema.String, Schema.Number]).pipe(
  Schema.decodeTo(
    Schema.Number,
    SchemaTransformation.transformEffect<number, string | number>({
      decode: (input) =>
        Result.match(Priority.fromSetting(input), {
          onFailure: (message) => Effect.fail(new SchemaIssue.InvalidValue({ message })),
          onSuccess: Effect.succeed
        }),
      encode: (n) => Effect.succeed(Priority.format(n))
    })
  ),
  Schema.annotate({ expected: "a priority" })
)

export const Listener = Schema.Struct({
  name: Schema.optionalKey(NonEmpty),
  /**
   * `mx` (AUTH optional), `submission` (STARTTLS then AUTH before MAIL), `submissions` (implicit
   * TLS, AUTH), `lmtp` (RFC 2033: LHLO, one reply per recipient after DATA).
   */
  mode: withDefault(Schema.Literals(["mx", "submission", "submissions", "lmtp"]), d.mode),
  /** Offer and accept AUTH before TLS: only for loopback setups and tests. */
  allow_insecure_auth: withDefault(Schema.Boolean, d.allowInsecureAuth),
  host: withDefault(NonEmpty, "127.0.0.1"),
  /** Required unless `socket` is set. */
  port: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))),
  /** A Unix socket path to listen on instead of `host`/`port` (an `lmtp` listener behind a local MTA). */
  socket: Schema.optionalKey(NonEmpty),
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
  hook_timeout: duration(d.hookTimeoutMs),
  /** Priority of the mail this listener accepts (the highest level that applies wins). */
  priority: Schema.optionalKey(PriorityLevel),
  /**
   * PROXY protocol v1/v2 from these load balancers (CIDR ranges or addresses): they must send a
   * header, others may not; the header's client address is the client everywhere.
   */
  proxy_protocol: Schema.optionalKey(Schema.Struct({
    trusted: Schema.Array(NonEmpty).check(Schema.isMinLength(1)),
    timeout: duration(ListenerOptions.defaultProxyTimeoutMs)
  }))
})

export const defaultListeners = [{ host: "127.0.0.1", port: 2525 }] as const

export const Spool = Schema.Struct({
  memory_threshold: size(defaultSpoolOptions.inMemoryThreshold),
  memory_budget: size(defaultSpoolOptions.memoryBudget)
})

export const Delivery = Schema.Struct({
  adapter: withDefault(Schema.Literals(["maildir", "discard"]), "maildir"),
  maildir: withDefault(Schema.Struct({ root: withDefault(NonEmpty, "./var/mail") }), {}),
  /** With `[[routes]]`: what happens to a recipient no route matches. */
  unrouted: withDefault(Schema.Literals(["retry", "reject"]), "retry"),
  workers: count(1, Dispatcher.defaults.workers),
  max_attempts: count(1, Dispatcher.defaults.maxAttempts),
  lease: duration(Dispatcher.defaults.leaseMs),
  timeout: duration(Dispatcher.defaults.deliveryTimeoutMs),
  /** Report dead-lettered recipients to the sender (RFC 3464 DSN, `MAIL FROM:<>`). */
  bounces: withDefault(Schema.Boolean, true),
  /** A recipient not delivered this long after the message arrived is dead-lettered (and bounced). */
  max_lifetime: duration(Dispatcher.defaults.maxLifetimeMs),
  /** With `bounces`: one delay notice (RFC 3464 `Action: delayed`) to a sender whose message waited this long; off when absent. */
  delay_notice: Schema.optionalKey(Duration),
  backoff: withDefault(Schema.Struct({
    base: duration(Backoff.defaults.baseMs),
    max: duration(Backoff.defaults.maxMs),
    jitter: withDefault(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1, exclusiveMaximum: true })), Backoff.defaults.jitter)
  }), {})
})

/** The adapters' own defaults, shown by `check-config` as the values of options left out. */
export const adapterDefaults = {
  webhook: WebhookAdapterModule.defaults,
  lmtp: LmtpAdapterModule.defaults,
  smtp: SmtpRelayAdapterModule.defaults,
  mx: MxAdapterModule.defaults
} as const

const Port = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }))

/** An absolute http(s) URL; other schemes and relative references are refused. */
const HttpUrl = NonEmpty.check(Schema.makeFilter((u: string) => {
  try {
    const url = new URL(u)
    return url.protocol === "http:" || url.protocol === "https:" ? undefined : `expected an http:// or https:// URL, got ${JSON.stringify(u)}`
  } catch {
    return `expected an absolute http:// or https:// URL, got ${JSON.stringify(u)}`
  }
}))

export const adapterTypes = ["maildir", "discard", "webhook", "lmtp", "smtp", "mx"] as const
export type AdapterType = (typeof adapterTypes)[number]

export const MaildirAdapter = Schema.Struct({
  type: Schema.Literal("maildir"),
  /** Without it, `delivery.maildir.root`. */
  root: Schema.optionalKey(NonEmpty)
})

export const DiscardAdapter = Schema.Struct({ type: Schema.Literal("discard") })

const wd = adapterDefaults.webhook
/**
 * Response overrides keyed by `"404"` or a class such as `"4xx"`. The keys are checked by a
 * filter on the whole table rather than a key schema, whose failure would read "unknown key".
 */
const Responses = Schema.Record(Schema.String, Schema.Literals(["ok", "retry", "reject"])).check(
  Schema.makeFilter((table: Readonly<Record<string, string>>) =>
    Object.keys(table)
      .filter((k) => !/^[1-5](?:\d\d|xx)$/.test(k))
      .map((k) => ({ path: [k], issue: `expected a status ("404") or a class ("4xx") as the key, got ${JSON.stringify(k)}` }))
  )
)

export const WebhookAdapter = Schema.Struct({
  type: Schema.Literal("webhook"),
  url: HttpUrl,
  /** HMAC-SHA256 key for `X-Incoming-Signature`; without it requests are unsigned. */
  secret: Schema.optionalKey(Secret),
  /**
   * Extra request headers. Their values are held as secrets: the usual reason to add a header
   * is an `Authorization` for the endpoint.
   */
  headers: Schema.optionalKey(Schema.Record(NonEmpty, Secret)),
  timeout: duration(wd.timeoutMs),
  max_redirects: count(0, wd.maxRedirects),
  raw: withDefault(Schema.Literals(["base64", "multipart", "omit"]), wd.raw),
  parts: withDefault(Schema.Struct({
    text: withDefault(Schema.Boolean, false),
    html: withDefault(Schema.Boolean, false)
  }), {}),
  max_parts_size: size(wd.maxPartsBytes),
  responses: withDefault(Responses, {}),
  tls: withDefault(Schema.Struct({ verify: withDefault(Schema.Boolean, true) }), {})
})

const ld = adapterDefaults.lmtp
export const LmtpAdapter = Schema.Struct({
  type: Schema.Literal("lmtp"),
  /** A Unix socket; or `host` (and `port`). Exactly one of `socket` and `host`. */
  socket: Schema.optionalKey(NonEmpty),
  host: Schema.optionalKey(NonEmpty),
  port: Schema.optionalKey(Port),
  lhlo: Schema.optionalKey(NonEmpty),
  connect_timeout: duration(ld.connectTimeoutMs),
  command_timeout: duration(ld.commandTimeoutMs),
  data_timeout: duration(ld.dataTimeoutMs)
})

const sd = adapterDefaults.smtp
export const SmtpAdapter = Schema.Struct({
  type: Schema.Literal("smtp"),
  host: NonEmpty,
  /** Default 25, or 465 with `implicit_tls`. */
  port: Schema.optionalKey(Port),
  implicit_tls: withDefault(Schema.Boolean, false),
  starttls: withDefault(Schema.Literals(["opportunistic", "required", "disabled"]), sd.startTls),
  tls: withDefault(Schema.Struct({
    /** Default: verify when TLS is required (`implicit_tls` or `starttls = "required"`). */
    verify: Schema.optionalKey(Schema.Boolean),
    servername: Schema.optionalKey(NonEmpty)
  }), {}),
  auth: Schema.optionalKey(Schema.Struct({ user: NonEmpty, password: Secret })),
  helo: Schema.optionalKey(NonEmpty),
  connect_timeout: duration(sd.connectTimeoutMs),
  greeting_timeout: duration(sd.greetingTimeoutMs),
  socket_timeout: duration(sd.socketTimeoutMs)
})

export const Adapter = Schema.Union([MaildirAdapter, DiscardAdapter, WebhookAdapter, LmtpAdapter, SmtpAdapter, MxAdapter]).annotate({
  expected: `a table with type = ${adapterTypes.map((t) => `"${t}"`).join(" | ")}`
})
export type Adapter = typeof Adapter.Type

/** Adapter names appear in logs and route tables: a plain alphabet (checked in `Load.ts`, by name). */
export const adapterNamePattern = /^[A-Za-z0-9][A-Za-z0-9_-]*$/

export const Schedule = Schema.Union([
  Schema.Struct({
    kind: Schema.Literal("delays"),
    /** Waits after the 1st, 2nd, ... failure; the last repeats. */
    delays: Schema.NonEmptyArray(Duration),
    jitter: Schema.optionalKey(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1, exclusiveMaximum: true })))
  }),
  Schema.Struct({
    kind: Schema.Literal("exponential"),
    base: Duration,
    max: Duration,
    factor: Schema.optionalKey(Schema.Number.check(Schema.isGreaterThanOrEqualTo(1))),
    jitter: Schema.optionalKey(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1, exclusiveMaximum: true })))
  })
]).annotate({ expected: `a table with kind = "delays" | "exponential"` })

export const Route = Schema.Struct({
  /** Label in logs (`route=...`); defaults to `routes[i]`. Must be unique. */
  name: Schema.optionalKey(NonEmpty),
  /**
   * `user@domain` (also `user+tag@domain`), `user+tag@domain`, `*@domain`, or `*`. Required,
   * except on the route that takes quarantined mail.
   */
  match: withDefault(Schema.Array(NonEmpty), []),
  /** This route takes every quarantined message (DMARC p=quarantine), whatever its recipients. */
  quarantine: withDefault(Schema.Boolean, false),
  adapter: NonEmpty,
  acknowledge: withDefault(Schema.Literals(["durable", "sync"]), "durable"),
  /** Without it, `delivery.backoff`. */
  schedule: Schema.optionalKey(Schedule),
  /** Without it, `delivery.max_attempts`. */
  max_attempts: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))),
  concurrency: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))),
  timeout: Schema.optionalKey(Duration),
  /** Priority of messages with a recipient on this route (the highest level that applies wins). */
  priority: Schema.optionalKey(PriorityLevel)
})

/** `[[priorities]]`: a level for messages whose sender or any recipient matches a pattern. */
export const PriorityPattern = Schema.Struct({
  sender: withDefault(Schema.Array(Schema.String), []),
  recipient: withDefault(Schema.Array(NonEmpty), []),
  priority: PriorityLevel
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

/**
 * OTLP/HTTP trace export, off unless the table is present. `otlp_endpoint` is the collector's
 * base URL (`/v1/traces` is appended, as OpenTelemetry's `OTEL_EXPORTER_OTLP_ENDPOINT` does);
 * header values are secrets because the usual header is a vendor's API key.
 */
export const Tracing = Schema.Struct({
  otlp_endpoint: HttpUrl,
  service_name: withDefault(NonEmpty, tracingDefaults.serviceName),
  /** `protobuf` is the OTLP/HTTP default every collector accepts; `json` is easier to read on the wire. */
  protocol: withDefault(Schema.Literals(["protobuf", "json"]), tracingDefaults.protocol),
  headers: Schema.optionalKey(Schema.Record(NonEmpty, Secret)),
  /** Share of traces kept, decided at each root span (a session's DATA, a delivery attempt). */
  sample_ratio: withDefault(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 })), tracingDefaults.sampleRatio),
  export_interval: duration(tracingDefaults.exportIntervalMs)
})

/**
 * Defaults of the AUTH failure limits. AuthHandler keeps them as literals inside `make`, so they
 * are repeated here for `check-config` to show; keep them in step with src/auth/AuthHandler.ts.
 */
export const authDefaults = {
  maxFailuresPerConnection: 3,
  maxFailuresPerIp: 10,
  ipWindowMs: 15 * 60_000,
  failureDelayMs: 1_000
} as const

export const Auth = Schema.Struct({
  /**
   * The users file `incoming users add` writes (scrypt hashes). Without an `[auth]` table there
   * is no AUTH, and a `submission`/`submissions` listener is refused at load time.
   */
  users_file: NonEmpty,
  max_failures_per_connection: count(1, authDefaults.maxFailuresPerConnection),
  max_failures_per_ip: count(1, authDefaults.maxFailuresPerIp),
  ip_window: duration(authDefaults.ipWindowMs),
  failure_delay: duration(authDefaults.failureDelayMs)
})

export const Relay = Schema.Struct({
  /** Clients that may relay without AUTH: CIDR ranges or single addresses (checked in `Load.ts`). */
  trusted_networks: withDefault(Schema.Array(NonEmpty), []),
  /** Known mailboxes of the local domains; when present, other local recipients get 550 5.1.1. */
  recipients: Schema.optionalKey(Schema.Array(NonEmpty))
})

const observe = withDefault(Schema.Boolean, false)
/** A rule's label in `PolicyVerdict` events and `incoming_policy_verdicts_total`; default its `rule`. */
const ruleName = Schema.optionalKey(NonEmpty)
const positive = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

export const rateLimitDimensions = ["ip", "sender", "recipient_domain"] as const
const ms = (d: EffectDuration.Duration) => EffectDuration.toMillis(d)

export const RateLimitRule = Schema.Struct({
  rule: Schema.Literal("rate_limit"),
  name: ruleName,
  observe,
  rate: count(1, RateLimiter.defaults.rate),
  window: duration(ms(RateLimiter.defaults.window)),
  dimensions: withDefault(Schema.NonEmptyArray(Schema.Literals(rateLimitDimensions)), [...rateLimitDimensions]),
  max_entries: count(1, RateLimiter.defaults.maxEntries),
  sweep_interval: duration(ms(RateLimiter.defaults.sweepInterval))
})

export const TlsRequiredRule = Schema.Struct({ rule: Schema.Literal("tls_required"), name: ruleName, observe })

export const HelloRequiredRule = Schema.Struct({
  rule: Schema.Literal("hello_required"),
  name: ruleName,
  observe,
  allow_bare_ip: withDefault(Schema.Boolean, false),
  require_fqdn: withDefault(Schema.Boolean, false)
})

export const MaxRecipientsRule = Schema.Struct({ rule: Schema.Literal("max_recipients"), name: ruleName, observe, max: positive })

export const SizeLimitRule = Schema.Struct({ rule: Schema.Literal("size_limit"), name: ruleName, observe, max: Size })

export const ConnectionLimitRule = Schema.Struct({ rule: Schema.Literal("connection_limit"), name: ruleName, observe, max_per_ip: positive })

/** What every email-authentication rule takes (policy/rules/auth/AuthRules.ts). */
const authRule = {
  name: ruleName,
  observe,
  /** Check AUTH sessions too (default: they are our users, skipped). */
  check_authenticated: withDefault(Schema.Boolean, false),
  /** Check clients in `relay.trusted_networks` too (default: skipped). */
  check_trusted: withDefault(Schema.Boolean, false),
  /** DNS trouble or a failed check: let the message through, or defer with 451 4.4.3. */
  temperror: withDefault(Schema.Literals(["continue", "defer"]), "continue")
}
const recordOrReject = withDefault(Schema.Literals(["record", "reject"]), "record")

export const SpfRule = Schema.Struct({ rule: Schema.Literal("spf"), ...authRule, fail: recordOrReject, permerror: recordOrReject })
export const DkimRule = Schema.Struct({ rule: Schema.Literal("dkim"), ...authRule })
export const DmarcRule = Schema.Struct({ rule: Schema.Literal("dmarc"), ...authRule })
export const ArcRule = Schema.Struct({
  rule: Schema.Literal("arc"),
  ...authRule,
  /** Seal forwarded mail with our key (RFC 8617): `d=`, `s=` and the PEM private key file. */
  seal: Schema.optionalKey(Schema.Struct({ domain: NonEmpty, selector: NonEmpty, private_key_file: NonEmpty }))
})
export const IprevRule = Schema.Struct({ rule: Schema.Literal("iprev"), ...authRule })

export const authRuleTypes = ["spf", "dkim", "dmarc", "arc", "iprev"] as const

/** A mail filter speaking the milter protocol (policy/rules/Milter.ts). */
export const MilterRule = Schema.Struct({
  rule: Schema.Literal("milter"),
  name: ruleName,
  observe,
  /** `inet:HOST:PORT` or `unix:/path` (checked in `Load.ts`). */
  address: NonEmpty,
  /** Deadline of connecting and of each reply; keep it under `policy_timeout`. */
  timeout: duration(Milter.defaults.timeoutMs),
  /** A filter that fails: let the mail through (`accept`, Postfix's default) or defer it with 451 (`tempfail`). */
  on_error: withDefault(Schema.Literals(["accept", "tempfail"]), Milter.defaults.onError)
})

/** What the anti-spam rules take (policy/rules/spam/): our own users are skipped unless asked. */
const spamExemptions = {
  /** Check AUTH sessions too (default: they are our users, skipped). */
  check_authenticated: withDefault(Schema.Boolean, false),
  /** Check clients in `relay.trusted_networks` too (default: skipped). */
  check_trusted: withDefault(Schema.Boolean, false)
}

const Weight = Schema.Number.check(Schema.isGreaterThan(0))

/** A blocklist: its name, or a table with its weight, the answers that count and its own reply. */
export const DnsblZone = Schema.Union([
  NonEmpty,
  Schema.Struct({
    zone: NonEmpty,
    weight: Schema.optionalKey(Weight),
    /** Only these A answers count as a listing (e.g. `["127.0.0.2", "127.0.0.3"]`). */
    codes: Schema.optionalKey(Schema.Array(NonEmpty)),
    /** The refusal's text; `{ip}`, `{zone}` and `{reason}` are filled in. */
    reply: Schema.optionalKey(NonEmpty)
  })
]).annotate({ expected: "a zone name, or a table with zone (and weight, codes, reply)" })

export const DnsblRule = Schema.Struct({
  rule: Schema.Literal("dnsbl"),
  name: ruleName,
  observe,
  zones: Schema.NonEmptyArray(DnsblZone),
  /** DNSWL zones: a client listed in one of them is not refused. */
  allow_zones: withDefault(Schema.Array(NonEmpty), []),
  threshold: withDefault(Weight, DnsblModule.defaults.threshold),
  stage: withDefault(Schema.Literals(["rcpt", "connect"]), DnsblModule.defaults.stage),
  timeout: duration(DnsblModule.defaults.timeoutMs),
  test_entries: withDefault(Schema.Boolean, true),
  test_interval: duration(DnsblModule.defaults.testIntervalMs),
  ...spamExemptions
})

export const GreylistRule = Schema.Struct({
  rule: Schema.Literal("greylist"),
  name: ruleName,
  observe,
  delay: duration(GreylistModule.defaults.delayMs),
  retry_window: duration(GreylistModule.defaults.retryWindowMs),
  lifetime: duration(GreylistModule.defaults.lifetimeMs),
  /** Passed triplets after which a client network is not greylisted any more (0: never). */
  auto_allow: count(0, GreylistModule.defaults.autoAllow),
  /** CIDR ranges or addresses never greylisted (checked in `Load.ts`). */
  allow_networks: withDefault(Schema.Array(NonEmpty), []),
  /** Sender domains (with their subdomains) never greylisted. */
  allow_sender_domains: withDefault(Schema.Array(NonEmpty), []),
  ipv4_prefix: withDefault(Schema.Int.check(Schema.isBetween({ minimum: 8, maximum: 32 })), GreylistModule.defaults.ipv4Prefix),
  ipv6_prefix: withDefault(Schema.Int.check(Schema.isBetween({ minimum: 16, maximum: 128 })), GreylistModule.defaults.ipv6Prefix),
  max_entries: count(1, GreylistModule.defaults.maxEntries),
  sweep_interval: duration(GreylistModule.defaults.sweepIntervalMs),
  /** Where the state lives: `sqlite` (`<data_dir>/greylist.db`) or `postgres` (the queue's database); default follows `[queue] backend`. */
  store: Schema.optionalKey(Schema.Literals(["sqlite", "postgres"])),
  ...spamExemptions
})

const rspamdActions = ["reject", "soft reject", "greylist", "add header", "rewrite subject", "no action"] as const
const treatments = Schema.Literals(["reject", "defer", "mark", "quarantine", "accept"])

export const RspamdRule = Schema.Struct({
  rule: Schema.Literal("rspamd"),
  name: ruleName,
  observe,
  /** rspamd's normal worker; the message goes to `<url>/checkv2`. */
  url: withDefault(HttpUrl, RspamdModule.defaults.url),
  /** Deadline of one scan; keep it under `policy_timeout`. */
  timeout: duration(RspamdModule.defaults.timeoutMs),
  /** rspamd down, slow or broken: let the message through (`accept`) or defer it with 451 (`tempfail`). */
  on_error: withDefault(Schema.Literals(["accept", "tempfail"]), RspamdModule.defaults.onError),
  /** Overrides of the action mapping, e.g. `{ greylist = "accept" }`. */
  actions: withDefault(Schema.Struct(Object.fromEntries(rspamdActions.map((a) => [a, Schema.optionalKey(treatments)])) as {
    readonly [K in (typeof rspamdActions)[number]]: Schema.optionalKey<typeof treatments>
  }), {}),
  ...spamExemptions
})

export const SpamdRule = Schema.Struct({
  rule: Schema.Literal("spamd"),
  name: ruleName,
  observe,
  /** SpamAssassin's spamd, `HOST:PORT`. */
  address: withDefault(ListenAddress, `${SpamdModule.defaults.host}:${SpamdModule.defaults.port}`),
  timeout: duration(SpamdModule.defaults.timeoutMs),
  on_error: withDefault(Schema.Literals(["accept", "tempfail"]), SpamdModule.defaults.onError),
  command: withDefault(Schema.Literals(["check", "symbols", "report"]), SpamdModule.defaults.command),
  /** spamd's `User` header: whose preferences apply. */
  user: Schema.optionalKey(NonEmpty),
  /** What spam gets: `reject` (550 5.7.1), `defer`, `mark`, `quarantine`, `accept`. */
  spam: withDefault(treatments, SpamdModule.defaults.spam),
  reject_score: Schema.optionalKey(Schema.Number),
  max_size: size(SpamdModule.defaults.maxSize),
  ...spamExemptions
})

export const spamRuleTypes = ["dnsbl", "greylist", "rspamd", "spamd"] as const

export const ruleTypes = ["rate_limit", "tls_required", "hello_required", "max_recipients", "size_limit", "connection_limit", ...authRuleTypes, "milter", ...spamRuleTypes] as const
export type RuleType = (typeof ruleTypes)[number]

export const PolicyRule = Schema.Union([
  RateLimitRule,
  TlsRequiredRule,
  HelloRequiredRule,
  MaxRecipientsRule,
  SizeLimitRule,
  ConnectionLimitRule,
  SpfRule,
  DkimRule,
  DmarcRule,
  ArcRule,
  IprevRule,
  MilterRule,
  DnsblRule,
  GreylistRule,
  RspamdRule,
  SpamdRule
])
  .annotate({ expected: `a table with rule = ${ruleTypes.map((t) => `"${t}"`).join(" | ")}` })
export type PolicyRule = typeof PolicyRule.Type

export { Acme, Dns, ListenAddress }

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
  admin: Schema.optionalKey(Admin),
  /** OTLP/HTTP trace export; off unless this table is present. */
  tracing: Schema.optionalKey(Tracing),
  /** ACME certificates for listeners with tls.acme; off unless this table is present. */
  acme: Schema.optionalKey(Acme),
  /** Named delivery adapters for `routes`. */
  adapters: Schema.optionalKey(Schema.Record(Schema.String, Adapter)),
  /** Recipient → adapter; when present, delivery goes through the Router instead of `delivery.adapter`. */
  routes: Schema.optionalKey(Schema.Array(Route)),
  /** Who may relay, and which local mailboxes exist. */
  relay: withDefault(Relay, {}),
  /** SMTP AUTH; off when absent. */
  auth: Schema.optionalKey(Auth),
  /** How DNS is asked (email authentication; later DNSBLs and MX lookups). */
  dns: withDefault(Dns, {}),
  /** Built-in policy rules, in the order they run. */
  policies: withDefault(Schema.Array(PolicyRule), []),
  /** Deadline of each rule hook; past it the command is deferred with 451 4.4.2. */
  policy_timeout: duration(ms(Policy.defaultTimeout)),
  /** Message priorities by sender/recipient pattern. */
  priorities: withDefault(Schema.Array(PriorityPattern), [])
})

export type IncomingConfig = typeof IncomingConfig.Type
export type IncomingConfigInput = typeof IncomingConfig.Encoded
