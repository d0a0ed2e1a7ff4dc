/**
 * `incoming serve`: the standalone server from command-line flags. It builds the same
 * `Incoming.layer` a host app would, with a Maildir (default) or discard adapter, and runs until
 * SIGTERM/SIGINT, which drains it (the process then exits 0).
 */
import { resolve } from "node:path"
import { Console, Effect, Layer } from "effect"
import { Command, Flag } from "effect/cli"
import * as DiscardAdapter from "../delivery/DiscardAdapter.ts"
import * as MaildirAdapter from "../delivery/MaildirAdapter.ts"
import * as Incoming from "../Incoming.ts"
import type { ListenerInput } from "../smtp/ListenerOptions.ts"
import * as Logging from "../telemetry/Logging.ts"
import { parseHostPort } from "./address.ts"

const flags = {
  listen: Flag.String("listen").pipe(
    Flag.withDescription("HOST:PORT to listen on (repeatable; IPv6 as [::1]:2525). Default 127.0.0.1:2525"),
    Flag.atLeast(0)
  ),
  domain: Flag.String("domain").pipe(
    Flag.withDescription("a domain we accept mail for (repeatable). Default localhost"),
    Flag.atLeast(0)
  ),
  hostname: Flag.String("hostname").pipe(Flag.withDescription("our name in the greeting and Received headers"), Flag.optional),
  maildir: Flag.String("maildir").pipe(Flag.withDescription("Maildir root: one folder per recipient"), Flag.withDefault("./var/mail")),
  deliver: Flag.Literals("deliver", ["maildir", "discard"]).pipe(
    Flag.withDescription("delivery adapter: maildir (default) or discard (acknowledge without storing)"),
    Flag.withDefault("maildir" as const)
  ),
  queue: Flag.Literals("queue", ["sqlite", "memory"]).pipe(
    Flag.withDescription("queue backend: sqlite (durable, default) or memory (lost on exit)"),
    Flag.withDefault("sqlite" as const)
  ),
  inlineThreshold: Flag.Int("inline-threshold").pipe(
    Flag.withDescription("sqlite queue: bodies up to this many bytes live in the database, larger ones in files"),
    Flag.withDefault(256 * 1024)
  ),
  dataDir: Flag.String("data-dir").pipe(Flag.withDescription("spool and queue directory"), Flag.withDefault(Incoming.defaultDataDir)),
  maxSize: Flag.Int("max-size").pipe(Flag.withDescription("largest message in bytes"), Flag.withDefault(25 * 1024 * 1024)),
  tls: Flag.Literals("tls", ["disabled", "optional", "required", "implicit"]).pipe(
    Flag.withDescription("TLS mode of every listener"),
    Flag.withDefault("disabled" as const)
  ),
  tlsCert: Flag.String("tls-cert").pipe(Flag.withDescription("PEM certificate chain file"), Flag.optional),
  tlsKey: Flag.String("tls-key").pipe(Flag.withDescription("PEM private key file"), Flag.optional),
  workers: Flag.Int("workers").pipe(Flag.withDescription("delivery workers"), Flag.withDefault(4)),
  maxAttempts: Flag.Int("max-attempts").pipe(
    Flag.withDescription("delivery attempts before a recipient is dead-lettered"),
    Flag.withDefault(12)
  ),
  retryBase: Flag.Int("retry-base").pipe(
    Flag.withDescription("seconds before the first retry; doubles each attempt up to 4 hours"),
    Flag.withDefault(60)
  ),
  drainTimeout: Flag.Int("drain-timeout").pipe(
    Flag.withDescription("seconds a shutdown waits for transactions in flight"),
    Flag.withDefault(30)
  ),
  greetingDelay: Flag.Int("greeting-delay").pipe(
    Flag.withDescription("milliseconds before the 220 greeting; > 0 rejects clients that talk first"),
    Flag.withDefault(0)
  ),
  lineEndings: Flag.Literals("line-endings", ["reject", "normalize"]).pipe(
    Flag.withDescription("bare CR/LF in DATA: reject (default) or normalize to CRLF"),
    Flag.withDefault("reject" as const)
  ),
  logFormat: Flag.Literals("log-format", ["auto", "json", "pretty"]).pipe(
    Flag.withDescription("log lines as JSON, pretty, or auto (JSON unless stdout is a terminal)"),
    Flag.withDefault("auto" as const)
  )
}

type Flags = {
  readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never
}

class UsageError extends Error {}

const toOptions = (f: Flags): Incoming.IncomingOptions => {
  const addresses = f.listen.length === 0 ? ["127.0.0.1:2525"] : f.listen
  const listeners = addresses.map((a): ListenerInput => {
    const hp = parseHostPort(a)
    if (typeof hp === "string") throw new UsageError(`--listen: ${hp}`)
    return {
      host: hp.host,
      port: hp.port,
      maxSize: f.maxSize,
      greetingDelayMs: f.greetingDelay,
      lineEndings: f.lineEndings,
      tls: {
        mode: f.tls,
        ...(f.tlsCert._tag === "Some" ? { cert: f.tlsCert.value } : {}),
        ...(f.tlsKey._tag === "Some" ? { key: f.tlsKey.value } : {})
      }
    }
  })
  return {
    hostname: f.hostname._tag === "Some" ? f.hostname.value : undefined,
    domains: f.domain.length === 0 ? ["localhost"] : f.domain,
    listeners,
    dataDir: f.dataDir,
    queue: f.queue === "sqlite" ? { kind: "sqlite", inlineThreshold: f.inlineThreshold } : { kind: "memory" },
    dispatcher: { workers: f.workers, maxAttempts: f.maxAttempts, backoff: { baseMs: f.retryBase * 1000, maxMs: 4 * 3600_000, jitter: 0.2 } },
    drainTimeoutMs: f.drainTimeout * 1000
  }
}

export const serve = Command.make("serve", flags, (f) =>
  Effect.gen(function*() {
    const options = yield* Effect.try({ try: () => toOptions(f), catch: (e) => e as Error })
    const adapter = f.deliver === "discard"
      ? DiscardAdapter.layer
      : MaildirAdapter.layer({ root: resolve(f.maildir) })
    const app = Incoming.layer(options).pipe(Layer.provide(adapter))
    yield* Effect.logInfo(
      `incoming serving ${options.domains.join(", ")}; delivering with ${f.deliver}` +
        (f.deliver === "maildir" ? ` into ${resolve(f.maildir)}` : "")
    )
    return yield* Layer.launch(app)
  }).pipe(
    Effect.catchIf((e): e is UsageError => e instanceof UsageError, (e) => Console.error(e.message).pipe(Effect.andThen(Effect.fail(e)))),
    Effect.provide(Logging.layer({ format: f.logFormat, isTTY: process.stdout.isTTY === true }))
  )).pipe(Command.withDescription("run the SMTP server"))
