/**
 * From a decoded `IncomingConfig` to what the runner builds: the `IncomingOptions` of
 * `Incoming.layer` (the same options a host app passes), plus the parts only the standalone
 * runner has — which delivery adapter to use, how to log, and where to export traces.
 *
 * Delivery is data here, in the option types of the adapters and the Router themselves, so the
 * mapping can be tested without building anything; `cli/delivery.ts` turns it into a layer.
 * So are AUTH and the policy rules: a rate limiter needs a scope for its sweeper and the user
 * store reads a file, so `Build.ts` makes them and completes the `IncomingOptions`.
 */
import { type LogLevel, Redacted } from "effect"
import { defaults as lmtpDefaults, type LmtpOptions } from "../delivery/LmtpAdapter.ts"
import type { RetrySchedule, RouteOptions } from "../delivery/Router.ts"
import type { MxOptions } from "../delivery/MxAdapter.ts"
import type { SmtpRelayOptions } from "../delivery/SmtpRelayAdapter.ts"
import type { StatusKey, WebhookOptions } from "../delivery/webhook/WebhookAdapter.ts"
import type { NodeDnsOptions } from "../dns/NodeDns.ts"
import type { IncomingOptions, QueueChoice } from "../IncomingOptions.ts"
import { type AcmeOptions, defaults as acmeDefaults, directoryUrl } from "../acme/AcmeOptions.ts"
import type * as AuthRules from "../policy/rules/auth/AuthRules.ts"
import type { ConnectionLimitOptions } from "../policy/rules/ConnectionLimit.ts"
import type { HelloRequiredOptions } from "../policy/rules/HelloRequired.ts"
import type { MaxRecipientsOptions } from "../policy/rules/MaxRecipients.ts"
import type { MilterOptions } from "../policy/rules/Milter.ts"
import { parseAddress as parseMilterAddress } from "../policy/milter/Connection.ts"
import type { Dimension, RateLimiterOptions } from "../policy/rules/RateLimiter.ts"
import type { SizeLimitOptions } from "../policy/rules/SizeLimit.ts"
import type { DnsblOptions } from "../policy/rules/spam/Dnsbl.ts"
import type { GreylistOptions } from "../policy/rules/spam/Greylist.ts"
import type { RspamdOptions } from "../policy/rules/spam/Rspamd.ts"
import { type GreylistStoreChoice, storeOf } from "./GreylistConfig.ts"
import type { SpamdOptions } from "../policy/rules/spam/Spamd.ts"
import type { TlsRequiredOptions } from "../policy/rules/TlsRequired.ts"
import type { ListenerInput } from "../smtp/ListenerOptions.ts"
import type { TracingOptions } from "../telemetry/Tracing.ts"
import type { Adapter, IncomingConfig, LogLevelName, PolicyRule } from "./IncomingConfig.ts"

/** One named adapter of the routed form, as the options its module's `make` takes. */
export type AdapterChoice =
  | { readonly type: "maildir"; readonly root: string }
  | { readonly type: "discard" }
  | { readonly type: "webhook"; readonly options: WebhookOptions }
  | { readonly type: "lmtp"; readonly options: LmtpOptions }
  | { readonly type: "smtp"; readonly options: SmtpRelayOptions }
  | {
    readonly type: "mx"
    readonly options: MxOptions
    readonly tlsCaFile?: string | undefined
    /** DKIM keys with their files; `cli/delivery.ts` reads them (Load.ts checked them). */
    readonly dkim?: DkimFiles | undefined
  }

export interface DkimKeyFile {
  readonly domain: string
  readonly selector: string
  readonly privateKeyFile: string
}

export interface DkimFiles {
  readonly key?: DkimKeyFile | undefined
  readonly byDomain?: Readonly<Record<string, DkimKeyFile>> | undefined
}

export type DeliveryChoice =
  | { readonly adapter: "maildir"; readonly root: string }
  | { readonly adapter: "discard" }
  | {
    readonly adapter: "router"
    readonly adapters: Readonly<Record<string, AdapterChoice>>
    readonly routes: ReadonlyArray<RouteOptions>
    readonly unrouted: "retry" | "reject"
  }

/** AUTH as the file sets it; `Build.ts` opens the users file as the store. */
export interface AuthChoice {
  readonly usersFile: string
  readonly maxFailuresPerConnection: number
  readonly maxFailuresPerIp: number
  readonly ipWindowMs: number
  readonly failureDelayMs: number
  /**
   * The AUTH handler is shared by every listener, so it accepts clear-text AUTH when any
   * listener allows it; a listener that does not still hides and refuses AUTH before TLS.
   */
  readonly allowInsecure: boolean
}

/** One built-in rule with the options its module's `make` takes. */
export type RuleChoice =
  | { readonly rule: "rate_limit"; readonly options: RateLimiterOptions }
  | { readonly rule: "tls_required"; readonly options: TlsRequiredOptions }
  | { readonly rule: "hello_required"; readonly options: HelloRequiredOptions }
  | { readonly rule: "max_recipients"; readonly options: MaxRecipientsOptions }
  | { readonly rule: "size_limit"; readonly options: SizeLimitOptions }
  | { readonly rule: "connection_limit"; readonly options: ConnectionLimitOptions }
  | { readonly rule: "spf"; readonly options: AuthRules.SpfOptions }
  | { readonly rule: "dkim" | "dmarc" | "iprev"; readonly options: AuthRules.CommonOptions }
  | { readonly rule: "arc"; readonly options: AuthRules.ArcOptions; readonly seal?: ArcSealFiles | undefined }
  /** Everything but our host name (the `j` macro), which `Build.ts` adds. */
  | { readonly rule: "milter"; readonly options: Omit<MilterOptions, "hostname"> }
  | { readonly rule: "dnsbl"; readonly options: DnsblOptions }
  /** `store`: the embedded one under `data_dir`, or PostgreSQL (GreylistConfig.ts). */
  | { readonly rule: "greylist"; readonly options: GreylistOptions; readonly store: GreylistStoreChoice }
  | { readonly rule: "rspamd"; readonly options: RspamdOptions }
  | { readonly rule: "spamd"; readonly options: SpamdOptions }

/** The ARC seal key as configured; `Build.ts` reads the file. */
export interface ArcSealFiles {
  readonly signingDomain: string
  readonly selector: string
  readonly privateKeyFile: string
}

export interface PoliciesChoice {
  readonly rules: ReadonlyArray<RuleChoice>
  readonly timeoutMs: number
}

export interface Runner {
  /** Everything but `auth` and `policies.rules`, which `Build.ts` adds. */
  readonly options: IncomingOptions
  /** The resolver and cache of the `Dns` service; applied at start only, not on reload. */
  readonly dns: NodeDnsOptions
  readonly auth: AuthChoice | undefined
  readonly policies: PoliciesChoice
  readonly delivery: DeliveryChoice
  readonly logging: { readonly format: "auto" | "json" | "pretty"; readonly level: LogLevel.LogLevel }
  /** OTLP trace export; `undefined` when `[tracing]` is absent. Applied at start only, not on reload. */
  readonly tracing: TracingOptions | undefined
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

/** `[queue]` as `Incoming.layer`'s queue choice. */
export const queueChoice = (q: IncomingConfig["queue"]): QueueChoice => {
  switch (q.backend) {
    case "sqlite":
      return {
        kind: "sqlite",
        maxDepth: q.max_depth,
        deadLetterTtlMs: q.dead_letter_ttl,
        priorityMaxWaitMs: q.priority_max_wait,
        inlineThreshold: q.inline_threshold
      }
    case "memory":
      return { kind: "memory", maxDepth: q.max_depth, deadLetterTtlMs: q.dead_letter_ttl, priorityMaxWaitMs: q.priority_max_wait }
    case "postgres":
      return {
        kind: "postgres",
        // The loader refuses backend = "postgres" without a url; this is never reached empty.
        url: q.url ?? Redacted.make(""),
        poolSize: q.pool_size,
        schema: q.schema,
        maxDepth: q.max_depth,
        deadLetterTtlMs: q.dead_letter_ttl,
        priorityMaxWaitMs: q.priority_max_wait,
        ...(q.node_id !== undefined ? { nodeId: q.node_id } : {})
      }
  }
}

export const toAcme = (a: NonNullable<IncomingConfig["acme"]>): AcmeOptions => ({
  directory: directoryUrl(a.directory),
  ...(a.email !== undefined ? { email: a.email } : {}),
  domains: a.domains,
  challenge: a.challenge,
  httpListen: a.http_listen,
  tlsAlpnListen: a.tls_alpn_listen,
  keyType: a.key_type,
  ...(a.renew_before !== undefined ? { renewBeforeMs: a.renew_before } : {}),
  ...(a.directory_ca !== undefined ? { directoryCaFile: a.directory_ca } : {}),
  retryBaseMs: a.retry_base,
  retryMaxMs: a.retry_max,
  checkIntervalMs: acmeDefaults.checkIntervalMs
})

export const toIncomingOptions = (c: IncomingConfig): IncomingOptions => ({
  hostname: c.hostname,
  domains: c.domains,
  dataDir: c.data_dir,
  drainTimeoutMs: c.drain_timeout,
  listeners: c.listeners.map((l): ListenerInput => ({
    ...(l.name !== undefined ? { name: l.name } : {}),
    ...(l.hostname !== undefined ? { hostname: l.hostname } : {}),
    mode: l.mode,
    allowInsecureAuth: l.allow_insecure_auth,
    host: l.host,
    port: l.port ?? 0,
    ...(l.socket !== undefined ? { path: l.socket } : {}),
    tls: {
      mode: l.tls.mode,
      ...(l.tls.cert !== undefined ? { cert: l.tls.cert } : {}),
      ...(l.tls.key !== undefined ? { key: l.tls.key } : {}),
      ...(l.tls.sni !== undefined ? { sni: l.tls.sni } : {}),
      ...(l.tls.acme ? { acme: true } : {})
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
    hookTimeoutMs: l.hook_timeout,
    ...(l.priority !== undefined ? { priority: l.priority } : {}),
    ...(l.proxy_protocol !== undefined ? { proxyProtocol: { trusted: l.proxy_protocol.trusted, timeoutMs: l.proxy_protocol.timeout } } : {})
  })),
  ...(c.priorities.length > 0
    ? { priorities: c.priorities.map((p) => ({ sender: p.sender, recipient: p.recipient, priority: p.priority })) }
    : {}),
  queue: queueChoice(c.queue),
  spool: { inMemoryThreshold: c.spool.memory_threshold, memoryBudget: c.spool.memory_budget },
  dispatcher: {
    workers: c.delivery.workers,
    maxAttempts: c.delivery.max_attempts,
    leaseMs: c.delivery.lease,
    deliveryTimeoutMs: c.delivery.timeout,
    maxLifetimeMs: c.delivery.max_lifetime,
    ...(c.delivery.bounces
      ? {
        bounces: {
          reportingMta: c.hostname,
          localDomains: c.domains,
          ...(c.delivery.delay_notice !== undefined ? { delayNoticeMs: c.delivery.delay_notice } : {})
        }
      }
      : {}),
    backoff: { baseMs: c.delivery.backoff.base, maxMs: c.delivery.backoff.max, jitter: c.delivery.backoff.jitter }
  },
  relay: {
    trustedNetworks: c.relay.trusted_networks,
    ...(c.relay.recipients !== undefined ? { recipients: c.relay.recipients } : {})
  },
  ...(c.acme !== undefined ? { acme: toAcme(c.acme) } : {}),
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

/**
 * Which adapter types hand mail on to other hosts, so that relayed recipients (from AUTH or
 * trusted clients) have somewhere to go; every type must say (a new one, such as an MX
 * adapter, does not compile until it does). The adapters declare the same at run time
 * (`DeliveryAdapter.deliversOffSite`), which is what the session asks; this is for the load-time
 * warning, before anything is built.
 */
export const deliversOffSite: Readonly<Record<Adapter["type"], boolean>> = {
  maildir: false,
  discard: false,
  webhook: false,
  lmtp: false,
  smtp: true,
  mx: true
}

const keyFile = (k: { readonly domain: string; readonly selector: string; readonly private_key: string }): DkimKeyFile => ({
  domain: k.domain,
  selector: k.selector,
  privateKeyFile: k.private_key
})

const toAdapter = (name: string, a: Adapter, c: IncomingConfig): AdapterChoice => {
  switch (a.type) {
    case "maildir":
      return { type: "maildir", root: a.root ?? c.delivery.maildir.root }
    case "discard":
      return { type: "discard" }
    case "webhook":
      return {
        type: "webhook",
        options: {
          name,
          url: a.url,
          ...(a.secret !== undefined ? { secret: a.secret } : {}),
          // The adapter takes plain header values; they stay Redacted up to this point.
          ...(a.headers !== undefined ? { headers: Object.fromEntries(Object.entries(a.headers).map(([k, v]) => [k, Redacted.value(v)])) } : {}),
          timeoutMs: a.timeout,
          maxRedirects: a.max_redirects,
          raw: a.raw,
          parts: { text: a.parts.text, html: a.parts.html },
          maxPartsBytes: a.max_parts_size,
          // Keys were checked by the schema to be a status or a class.
          responses: a.responses as Partial<Record<StatusKey, "ok" | "retry" | "reject">>,
          tls: { rejectUnauthorized: a.tls.verify }
        }
      }
    case "lmtp":
      return {
        type: "lmtp",
        options: {
          name,
          // Load.ts checked that exactly one of socket and host is given.
          target: a.socket !== undefined ? { path: a.socket } : { host: a.host ?? "127.0.0.1", port: a.port ?? lmtpDefaults.port },
          ...(a.lhlo !== undefined ? { lhlo: a.lhlo } : {}),
          connectTimeoutMs: a.connect_timeout,
          commandTimeoutMs: a.command_timeout,
          dataTimeoutMs: a.data_timeout
        }
      }
    case "smtp":
      return {
        type: "smtp",
        options: {
          name,
          host: a.host,
          ...(a.port !== undefined ? { port: a.port } : {}),
          implicitTls: a.implicit_tls,
          startTls: a.starttls,
          tls: {
            ...(a.tls.verify !== undefined ? { rejectUnauthorized: a.tls.verify } : {}),
            ...(a.tls.servername !== undefined ? { servername: a.tls.servername } : {})
          },
          ...(a.auth !== undefined ? { auth: { user: a.auth.user, pass: a.auth.password } } : {}),
          ...(a.helo !== undefined ? { heloName: a.helo } : {}),
          connectTimeoutMs: a.connect_timeout,
          greetingTimeoutMs: a.greeting_timeout,
          socketTimeoutMs: a.socket_timeout
        }
      }
    case "mx":
      return {
        type: "mx",
        options: {
          name,
          port: a.port,
          ...(a.helo !== undefined ? { heloName: a.helo } : { heloName: c.hostname }),
          ...(a.local_address !== undefined ? { localAddress: a.local_address } : {}),
          tls: a.tls,
          connectTimeoutMs: a.connect_timeout,
          greetingTimeoutMs: a.greeting_timeout,
          socketTimeoutMs: a.socket_timeout,
          maxConnectionsPerDomain: a.max_connections_per_domain,
          maxMessagesPerConnection: a.max_messages_per_connection,
          idleTimeoutMs: a.idle_timeout,
          pauseAfterFailures: a.pause_after_failures,
          pauseMs: a.pause,
          ...(a.mta_sts ? { mtaSts: { port: a.mta_sts_port } } : {})
        },
        // Read when the adapter is built (cli/delivery.ts); Load.ts checked it is readable.
        ...(a.tls_ca !== undefined ? { tlsCaFile: a.tls_ca } : {}),
        ...(a.dkim !== undefined || a.dkim_by_domain !== undefined
          ? {
            dkim: {
              ...(a.dkim !== undefined ? { key: keyFile(a.dkim) } : {}),
              ...(a.dkim_by_domain !== undefined
                ? { byDomain: Object.fromEntries(Object.entries(a.dkim_by_domain).map(([d, k]) => [d, keyFile(k)])) }
                : {})
            }
          }
          : {})
      }
  }
}

type ScheduleConfig = NonNullable<NonNullable<IncomingConfig["routes"]>[number]["schedule"]>

const toSchedule = (s: ScheduleConfig): RetrySchedule =>
  s.kind === "delays"
    ? { kind: "delays", delaysMs: s.delays, ...(s.jitter !== undefined ? { jitter: s.jitter } : {}) }
    : {
      kind: "exponential",
      baseMs: s.base,
      maxMs: s.max,
      ...(s.factor !== undefined ? { factor: s.factor } : {}),
      ...(s.jitter !== undefined ? { jitter: s.jitter } : {})
    }

/** A route's name: its own, else its place in the file, which is what an operator can find. */
export const routeName = (route: { readonly name?: string | undefined }, index: number): string => route.name ?? `routes[${index}]`

export const toDelivery = (c: IncomingConfig): DeliveryChoice => {
  if (c.routes !== undefined) {
    return {
      adapter: "router",
      adapters: Object.fromEntries(Object.entries(c.adapters ?? {}).map(([name, a]) => [name, toAdapter(name, a, c)])),
      routes: c.routes.map((r, i): RouteOptions => ({
        name: routeName(r, i),
        match: r.match,
        ...(r.quarantine ? { quarantine: true } : {}),
        adapter: r.adapter,
        acknowledge: r.acknowledge,
        ...(r.schedule !== undefined ? { retry: toSchedule(r.schedule) } : {}),
        ...(r.max_attempts !== undefined ? { maxAttempts: r.max_attempts } : {}),
        ...(r.concurrency !== undefined ? { concurrency: r.concurrency } : {}),
        ...(r.timeout !== undefined ? { timeoutMs: r.timeout } : {}),
        ...(r.priority !== undefined ? { priority: r.priority } : {})
      })),
      unrouted: c.delivery.unrouted
    }
  }
  return c.delivery.adapter === "maildir" ? { adapter: "maildir", root: c.delivery.maildir.root } : { adapter: "discard" }
}

export const toAuth = (c: IncomingConfig): AuthChoice | undefined =>
  c.auth === undefined ? undefined : {
    usersFile: c.auth.users_file,
    maxFailuresPerConnection: c.auth.max_failures_per_connection,
    maxFailuresPerIp: c.auth.max_failures_per_ip,
    ipWindowMs: c.auth.ip_window,
    failureDelayMs: c.auth.failure_delay,
    allowInsecure: c.listeners.some((l) => l.allow_insecure_auth)
  }

const dimensionOf = { ip: "ip", sender: "sender", recipient_domain: "recipientDomain" } as const satisfies Record<string, Dimension>

/** A rule's label: its own `name`, else the `rule` the operator wrote (what they will grep for). */
const toRule = (p: PolicyRule, c: IncomingConfig): RuleChoice => {
  const common = { name: p.name ?? p.rule, observe: p.observe }
  switch (p.rule) {
    case "rate_limit": {
      const on = new Set(p.dimensions.map((d) => dimensionOf[d]))
      return {
        rule: "rate_limit",
        options: {
          ...common,
          rate: p.rate,
          window: p.window,
          maxEntries: p.max_entries,
          sweepInterval: p.sweep_interval,
          // Every dimension is named, on or off: the module's default is "all on".
          dimensions: { ip: on.has("ip"), sender: on.has("sender"), recipientDomain: on.has("recipientDomain") }
        }
      }
    }
    case "tls_required":
      return { rule: "tls_required", options: common }
    case "hello_required":
      return { rule: "hello_required", options: { ...common, allowBareIp: p.allow_bare_ip, requireFqdn: p.require_fqdn } }
    case "max_recipients":
      return { rule: "max_recipients", options: { ...common, max: p.max } }
    case "size_limit":
      return { rule: "size_limit", options: { ...common, maxSize: p.max } }
    case "connection_limit":
      return { rule: "connection_limit", options: { ...common, max: p.max_per_ip } }
    case "milter": {
      const address = parseMilterAddress(p.address)
      // Load.ts refuses a bad address before this runs; a string here is a bug of ours.
      if (typeof address === "string") throw new Error(address)
      return { rule: "milter", options: { ...common, address, timeoutMs: p.timeout, onError: p.on_error } }
    }
    case "spf":
    case "dkim":
    case "dmarc":
    case "arc":
    case "iprev": {
      const options: AuthRules.CommonOptions = {
        ...common,
        checkAuthenticated: p.check_authenticated,
        checkTrusted: p.check_trusted,
        temperror: p.temperror
      }
      if (p.rule === "spf") return { rule: "spf", options: { ...options, fail: p.fail, permerror: p.permerror } }
      if (p.rule === "arc") {
        return p.seal === undefined ? { rule: "arc", options } : {
          rule: "arc",
          options: { ...options, seal: true },
          seal: { signingDomain: p.seal.domain, selector: p.seal.selector, privateKeyFile: p.seal.private_key_file }
        }
      }
      return { rule: p.rule, options }
    }
    case "dnsbl":
      return {
        rule: "dnsbl",
        options: {
          ...common,
          zones: p.zones.map((z) =>
            typeof z === "string" ? z : {
              zone: z.zone,
              ...(z.weight !== undefined ? { weight: z.weight } : {}),
              ...(z.codes !== undefined ? { codes: z.codes } : {}),
              ...(z.reply !== undefined ? { reply: z.reply } : {})
            }
          ),
          allowZones: p.allow_zones,
          threshold: p.threshold,
          stage: p.stage,
          timeout: p.timeout,
          testEntries: p.test_entries,
          testInterval: p.test_interval,
          checkAuthenticated: p.check_authenticated,
          checkTrusted: p.check_trusted
        }
      }
    case "greylist":
      return {
        rule: "greylist",
        store: storeOf(p, c),
        options: {
          ...common,
          delay: p.delay,
          retryWindow: p.retry_window,
          lifetime: p.lifetime,
          autoAllow: p.auto_allow,
          allowNetworks: p.allow_networks,
          allowSenderDomains: p.allow_sender_domains,
          ipv4Prefix: p.ipv4_prefix,
          ipv6Prefix: p.ipv6_prefix,
          maxEntries: p.max_entries,
          sweepInterval: p.sweep_interval,
          checkAuthenticated: p.check_authenticated,
          checkTrusted: p.check_trusted
        }
      }
    case "rspamd":
      return {
        rule: "rspamd",
        options: {
          ...common,
          url: p.url,
          timeout: p.timeout,
          onError: p.on_error,
          actions: p.actions,
          hostname: c.hostname,
          checkAuthenticated: p.check_authenticated,
          checkTrusted: p.check_trusted
        }
      }
    case "spamd":
      return {
        rule: "spamd",
        options: {
          ...common,
          ...p.address,
          timeout: p.timeout,
          onError: p.on_error,
          command: p.command,
          user: p.user,
          spam: p.spam,
          rejectScore: p.reject_score,
          maxSize: p.max_size,
          checkAuthenticated: p.check_authenticated,
          checkTrusted: p.check_trusted
        }
      }
  }
}

export const toPolicies = (c: IncomingConfig): PoliciesChoice => ({ rules: c.policies.map((p) => toRule(p, c)), timeoutMs: c.policy_timeout })

/** Header values stay `Redacted`: `Tracing.ts` opens them only to hand them to the exporter. */
export const toTracing = (c: IncomingConfig): TracingOptions | undefined =>
  c.tracing === undefined ? undefined : {
    endpoint: c.tracing.otlp_endpoint,
    serviceName: c.tracing.service_name,
    protocol: c.tracing.protocol,
    ...(c.tracing.headers !== undefined ? { headers: c.tracing.headers } : {}),
    sampleRatio: c.tracing.sample_ratio,
    exportIntervalMs: c.tracing.export_interval
  }

export const toDns = (c: IncomingConfig): NodeDnsOptions => ({
  ...(c.dns.servers.length > 0 ? { servers: c.dns.servers } : {}),
  timeoutMs: c.dns.timeout,
  tries: c.dns.tries,
  cache: {
    maxEntries: c.dns.cache_size,
    maxTtlMs: c.dns.max_ttl,
    unknownTtlMs: c.dns.unknown_ttl,
    negativeTtlMs: c.dns.negative_ttl
  }
})

export const toRunner = (c: IncomingConfig): Runner => ({
  options: toIncomingOptions(c),
  dns: toDns(c),
  auth: toAuth(c),
  policies: toPolicies(c),
  delivery: toDelivery(c),
  logging: { format: c.logging.format, level: logLevels[c.logging.level] },
  tracing: toTracing(c)
})
