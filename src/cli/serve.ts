/**
 * `incoming serve`: the standalone server from a config file and command-line flags. It builds
 * the same `Incoming.layer` a host app would, with a Maildir (default) or discard adapter, or
 * the Router over the file's `[adapters.*]` and `[[routes]]` (see `cli/delivery.ts`), and runs
 * until SIGTERM/SIGINT, which drains it (the process then exits 0).
 *
 * The file is `--config PATH`, else `./incoming.toml`, else `/etc/incoming/incoming.toml`, else
 * none (see `config/Load.ts`). A flag given on the command line overrides the file and the
 * `INCOMING_*` variables; a flag not given leaves them alone, which is why no flag has a default
 * here: the defaults live in the config schema, in one place.
 */
import { Effect, Layer, Option, References } from "effect"
import { Command, Flag, GlobalFlag } from "effect/cli"
import * as Build from "../config/Build.ts"
import * as NodeDns from "../dns/NodeDns.ts"
import { formatIssue } from "../config/ConfigError.ts"
import * as Load from "../config/Load.ts"
import * as Reload from "./reload.ts"
import * as Options from "../config/Options.ts"
import * as Render from "../config/Render.ts"
import * as Reclaim from "../internal/reclaim.ts"
import * as Incoming from "../Incoming.ts"
import * as Logging from "../telemetry/Logging.ts"
import * as Tracing from "../telemetry/Tracing.ts"
import * as Delivery from "./delivery.ts"

const flags = {
  config: Flag.String("config").pipe(
    Flag.withDescription("config file (.toml, .json, .yaml); default ./incoming.toml, then /etc/incoming/incoming.toml if present"),
    Flag.optional
  ),
  listen: Flag.String("listen").pipe(
    Flag.withDescription("HOST:PORT to listen on (repeatable; IPv6 as [::1]:2525); replaces the file's listeners. Default 127.0.0.1:2525"),
    Flag.atLeast(0)
  ),
  domain: Flag.String("domain").pipe(
    Flag.withDescription("a domain we accept mail for (repeatable). Default localhost"),
    Flag.atLeast(0)
  ),
  hostname: Flag.String("hostname").pipe(Flag.withDescription("our name in the greeting and Received headers"), Flag.optional),
  maildir: Flag.String("maildir").pipe(Flag.withDescription("Maildir root: one folder per recipient (default ./var/mail)"), Flag.optional),
  deliver: Flag.Literals("deliver", ["maildir", "discard"]).pipe(
    Flag.withDescription("delivery adapter: maildir (default) or discard (acknowledge without storing); not with [[routes]] in the file"),
    Flag.optional
  ),
  queue: Flag.Literals("queue", ["sqlite", "memory"]).pipe(
    Flag.withDescription("queue backend: sqlite (durable, default) or memory (lost on exit)"),
    Flag.optional
  ),
  inlineThreshold: Flag.Int("inline-threshold").pipe(
    Flag.withDescription("sqlite queue: bodies up to this many bytes live in the database, larger ones in files (default 262144)"),
    Flag.optional
  ),
  dataDir: Flag.String("data-dir").pipe(Flag.withDescription(`spool and queue directory (default ${Incoming.defaultDataDir})`), Flag.optional),
  maxSize: Flag.Int("max-size").pipe(Flag.withDescription("largest message in bytes, every listener (default 26214400)"), Flag.optional),
  tls: Flag.Literals("tls", ["disabled", "optional", "required", "implicit"]).pipe(
    Flag.withDescription("TLS mode of every listener (default disabled)"),
    Flag.optional
  ),
  tlsCert: Flag.String("tls-cert").pipe(Flag.withDescription("PEM certificate chain file"), Flag.optional),
  tlsKey: Flag.String("tls-key").pipe(Flag.withDescription("PEM private key file"), Flag.optional),
  workers: Flag.Int("workers").pipe(Flag.withDescription("delivery workers (default 4)"), Flag.optional),
  maxAttempts: Flag.Int("max-attempts").pipe(
    Flag.withDescription("delivery attempts before a recipient is dead-lettered (default 12)"),
    Flag.optional
  ),
  retryBase: Flag.Int("retry-base").pipe(
    Flag.withDescription("seconds before the first retry; doubles each attempt up to delivery.backoff.max (default 60)"),
    Flag.optional
  ),
  drainTimeout: Flag.Int("drain-timeout").pipe(
    Flag.withDescription("seconds a shutdown waits for transactions in flight (default 30)"),
    Flag.optional
  ),
  greetingDelay: Flag.Int("greeting-delay").pipe(
    Flag.withDescription("milliseconds before the 220 greeting; > 0 rejects clients that talk first (default 0)"),
    Flag.optional
  ),
  lineEndings: Flag.Literals("line-endings", ["reject", "normalize"]).pipe(
    Flag.withDescription("bare CR/LF in DATA: reject (default) or normalize to CRLF"),
    Flag.optional
  ),
  logFormat: Flag.Literals("log-format", ["auto", "json", "pretty"]).pipe(
    Flag.withDescription("log lines as JSON, pretty, or auto (JSON unless stdout is a terminal; default)"),
    Flag.optional
  ),
  adminListen: Flag.String("admin-listen").pipe(
    Flag.withDescription("HOST:PORT of the admin HTTP endpoint (/healthz, /readyz, /metrics); off by default"),
    Flag.optional
  )
}

type Flags = {
  readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never
}

const given = <A>(o: Option.Option<A>): A | undefined => Option.getOrUndefined(o)

const overrides = (f: Flags): Load.CliOverrides => ({
  listen: f.listen,
  domains: f.domain,
  hostname: given(f.hostname),
  dataDir: given(f.dataDir),
  maildir: given(f.maildir),
  deliver: given(f.deliver),
  queue: given(f.queue),
  inlineThreshold: given(f.inlineThreshold),
  maxSize: given(f.maxSize),
  tls: given(f.tls),
  tlsCert: given(f.tlsCert),
  tlsKey: given(f.tlsKey),
  greetingDelayMs: given(f.greetingDelay),
  lineEndings: given(f.lineEndings),
  workers: given(f.workers),
  maxAttempts: given(f.maxAttempts),
  retryBaseSeconds: given(f.retryBase),
  drainTimeoutSeconds: given(f.drainTimeout),
  logFormat: given(f.logFormat),
  adminListen: given(f.adminListen)
})

export const serve = Command.make("serve", flags, (f) =>
  Effect.gen(function*() {
    const load = Effect.map(
      Load.loadFromProcess({ configPath: given(f.config), flags: overrides(f) }),
      (loaded) => ({ loaded, runner: Options.toRunner(loaded.config) })
    )
    const { loaded, runner } = yield* load
    // AUTH's user store and the policy rules are built inside the server's layer: a rate limiter's
    // sweeper lives in its scope (config/Build.ts).
    // Delivery stays visible (provideMerge) so that a reload can swap it (DeliverySwap).
    const server = Layer.unwrap(Effect.map(Build.options(runner), Incoming.layer)).pipe(
      Layer.provideMerge(Delivery.layerSwappable(runner.delivery))
    )
    // SIGHUP re-reads the same file with the same flags and applies it (see cli/reload.ts).
    // One Dns (resolver and cache) for the server's life, under the rules of every reload.
    const app = Reload.layer(Effect.map(load, (l) => l.runner), runner).pipe(
      Layer.provideMerge(server),
      Layer.provide(NodeDns.layer(runner.dns))
    )
    // `[tracing]`: the OTLP tracer under everything, so it is built first and flushed last.
    const traced = app.pipe(Layer.provide(Tracing.layer(runner.tracing)))
    // The global --log-level flag, when given, wins over the file's logging.level.
    const cliLevel = yield* GlobalFlag.LogLevel
    return yield* Effect.gen(function*() {
      yield* Effect.logInfo(loaded.file === undefined ? "no config file found: defaults and flags only" : `config file ${loaded.file}`)
      yield* Effect.logDebug(`effective configuration (secrets redacted):\n${Render.render(loaded.config, "toml")}`)
      for (const w of loaded.warnings) yield* Effect.logWarning(formatIssue(w))
      // Said once it is true: a start that fails (data dir in use, port taken) never claims to serve.
      yield* Layer.build(traced)
      // Start-up garbage (module loading) out of the resident set before the first session.
      Reclaim.compact()
      yield* Effect.logInfo(`incoming serving ${runner.options.domains.join(", ")}; delivering with ${Delivery.describe(runner.delivery)}`)
      return yield* Effect.never
    }).pipe(
      Effect.scoped,
      Option.isNone(cliLevel) ? Effect.provideService(References.MinimumLogLevel, runner.logging.level) : (e) => e,
      Effect.provide(Logging.layer({ format: runner.logging.format, isTTY: process.stdout.isTTY === true }))
    )
  })).pipe(Command.withDescription("run the SMTP server"))
