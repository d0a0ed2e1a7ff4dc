/**
 * `incoming dev`: the developers' catch-all inbox (see `dev/DevInbox.ts`). SMTP on
 * 127.0.0.1:1025 accepts any sender, any recipient of any domain and any AUTH credentials,
 * stores what it gets under `./var/dev`, and shows it at http://127.0.0.1:8025. It prints both
 * addresses at start and drains on SIGTERM/SIGINT (the process then exits 0).
 *
 * Bad flags are reported together, one line each, naming the flag (as `serve` does for its
 * configuration).
 */
import { Config, Console, Effect, Layer, Option, Redacted, References } from "effect"
import { Command, Flag, GlobalFlag } from "effect/cli"
import { type ConfigIssue, invalid } from "../config/ConfigError.ts"
import * as DevInbox from "../dev/DevInbox.ts"
import * as Http from "../dev/Http.ts"
import type * as Release from "../dev/Release.ts"
import * as Logging from "../telemetry/Logging.ts"
import { parseHostPort } from "../config/HostPort.ts"

const d = DevInbox.defaults

const flags = {
  smtp: Flag.String("smtp").pipe(Flag.withDescription(`HOST:PORT of the SMTP listener (default ${d.smtp.host}:${d.smtp.port})`), Flag.optional),
  http: Flag.String("http").pipe(
    Flag.withDescription(`HOST:PORT of the web inbox and API (default ${d.http.host}:${d.http.port}); 0.0.0.0 exposes every message`),
    Flag.optional
  ),
  dataDir: Flag.String("data-dir").pipe(Flag.withDescription(`where caught mail is kept (default ${d.dataDir})`), Flag.optional),
  maxMessages: Flag.Int("max-messages").pipe(
    Flag.withDescription(`keep this many messages, deleting the oldest beyond (default ${d.maxMessages})`),
    Flag.optional
  ),
  maxSize: Flag.Int("max-size").pipe(Flag.withDescription("largest message in bytes (default 26214400)"), Flag.optional),
  hostname: Flag.String("hostname").pipe(Flag.withDescription(`our name in the greeting (default ${d.hostname})`), Flag.optional),
  tlsCert: Flag.String("tls-cert").pipe(Flag.withDescription("PEM certificate chain: STARTTLS is offered with --tls-key"), Flag.optional),
  tlsKey: Flag.String("tls-key").pipe(Flag.withDescription("PEM private key"), Flag.optional),
  lineEndings: Flag.Literals("line-endings", ["reject", "normalize"]).pipe(
    Flag.withDescription("bare CR/LF in DATA: reject (default, as in production) or normalize to CRLF"),
    Flag.optional
  ),
  basicAuth: Flag.Redacted("basic-auth").pipe(
    Flag.withDescription("USER:PASSWORD the web inbox asks for (or INCOMING_DEV_BASIC_AUTH); off by default"),
    Flag.withFallbackConfig(Config.Redacted("INCOMING_DEV_BASIC_AUTH")),
    Flag.optional
  ),
  releaseSmtp: Flag.String("release-smtp").pipe(
    Flag.withDescription("HOST:PORT of the SMTP server \"Release\" forwards messages to; Release is off without it"),
    Flag.optional
  ),
  releaseAllow: Flag.String("release-allow").pipe(
    Flag.withDescription("a recipient Release may send to: alice@example.com, *@example.com or * (repeatable)"),
    Flag.atLeast(0)
  ),
  logFormat: Flag.Literals("log-format", ["auto", "json", "pretty"]).pipe(
    Flag.withDescription("log lines as JSON, pretty, or auto (JSON unless stdout is a terminal; default)"),
    Flag.optional
  )
}

type Flags = {
  readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never
}

const given = <A>(o: Option.Option<A>): A | undefined => Option.getOrUndefined(o)

/** The flags as `DevInbox` options, or every problem with them. */
export const toOptions = (f: Flags): DevInbox.DevInboxOptions | ReadonlyArray<ConfigIssue> => {
  const issues: Array<ConfigIssue> = []
  const problem = (source: string, message: string) => issues.push({ source, path: "", message })
  const address = (source: string, text: string | undefined) => {
    if (text === undefined) return undefined
    const parsed = parseHostPort(text)
    if (typeof parsed === "string") return void problem(source, parsed)
    return parsed
  }
  const smtp = address("--smtp", given(f.smtp))
  const http = address("--http", given(f.http))
  const releaseSmtp = address("--release-smtp", given(f.releaseSmtp))
  const cert = given(f.tlsCert)
  const key = given(f.tlsKey)
  if ((cert === undefined) !== (key === undefined)) problem(cert === undefined ? "--tls-key" : "--tls-cert", "give both --tls-cert and --tls-key")
  const maxMessages = given(f.maxMessages)
  if (maxMessages !== undefined && maxMessages < 1) problem("--max-messages", "must be at least 1")
  const maxSize = given(f.maxSize)
  if (maxSize !== undefined && maxSize < 1024) problem("--max-size", "must be at least 1024 bytes")
  const authText = Option.map(f.basicAuth, Redacted.value)
  const colon = Option.getOrElse(Option.map(authText, (t) => t.indexOf(":")), () => -1)
  if (Option.isSome(authText) && colon < 1) problem("--basic-auth", "expected USER:PASSWORD")
  if (releaseSmtp !== undefined && f.releaseAllow.length === 0) {
    problem("--release-allow", "--release-smtp needs at least one --release-allow (who messages may be released to)")
  }
  if (releaseSmtp === undefined && f.releaseAllow.length > 0) problem("--release-allow", "only means something with --release-smtp")
  if (issues.length > 0) return issues
  const release: Release.ReleaseOptions | undefined = releaseSmtp === undefined
    ? undefined
    : { smtp: { host: releaseSmtp.host, port: releaseSmtp.port }, allow: f.releaseAllow }
  return {
    smtp,
    http: {
      ...http,
      basicAuth: Option.isSome(authText)
        ? { user: authText.value.slice(0, colon), password: Redacted.make(authText.value.slice(colon + 1)) }
        : undefined
    },
    dataDir: given(f.dataDir),
    maxMessages,
    maxSize,
    hostname: given(f.hostname),
    tls: cert !== undefined && key !== undefined ? { cert, key } : undefined,
    lineEndings: given(f.lineEndings),
    release
  }
}

export const dev = Command.make("dev", flags, (f) =>
  Effect.gen(function*() {
    const options = toOptions(f)
    if (Array.isArray(options)) return yield* Effect.fail(invalid(options))
    const inbox = DevInbox.layer(options as DevInbox.DevInboxOptions)
    const announce = Layer.effectDiscard(Effect.gen(function*() {
      const d = yield* DevInbox.DevInbox
      // Plain lines on stdout whatever the log format: what a developer copies into their app.
      yield* Console.log(`incoming dev: SMTP  smtp://${Http.urlHost(d.smtp.host)}:${d.smtp.port}  (any recipient, any AUTH credentials)`)
      yield* Console.log(`incoming dev: inbox ${d.url}`)
    }))
    const cliLevel = yield* GlobalFlag.LogLevel
    return yield* Layer.launch(announce.pipe(Layer.provide(inbox))).pipe(
      Option.isNone(cliLevel) ? Effect.provideService(References.MinimumLogLevel, "Info") : (e) => e,
      Effect.provide(Logging.layer({ format: given(f.logFormat) ?? "auto", isTTY: process.stdout.isTTY === true }))
    )
  })).pipe(Command.withDescription("run a catch-all SMTP server with a web inbox for developing apps that send mail"))
