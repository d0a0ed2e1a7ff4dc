/**
 * Finding, reading and validating the configuration: the one path from "what the operator
 * wrote" to a decoded `IncomingConfig`, shared by `incoming serve` and `incoming check-config`.
 *
 * Order of precedence, lowest first: built-in defaults, the file, `INCOMING_*` variables,
 * command-line flags. The file is `--config PATH` if given (it must exist), else the first of
 * `./incoming.toml` and `/etc/incoming/incoming.toml` that exists, else none (defaults and flags
 * only, so `npm start` works without a file). The format follows the extension: `.toml`,
 * `.json`, `.yaml`/`.yml`.
 *
 * Relative paths written in the file (data_dir, tls cert/key, maildir roots, LMTP sockets, the users file) are relative to
 * the file's directory, so a file means the same thing whatever the working directory; those
 * from flags, variables and defaults are relative to the working directory, as on a command line.
 *
 * Checks the schema cannot make are done here after decoding (those of `[acme]` in AcmeChecks.ts) — the start-up preflight, the same
 * for check-config, serve and a reload: the data dir can be created and written (not under a
 * file, not on a read-only file system), a TLS mode that needs a certificate has one and the
 * pair is usable (PEM, the key matches), listener addresses and names are unique, the backoff
 * base does not exceed its cap, and the routed delivery form hangs together (every route names
 * an adapter that exists, patterns do not collide — by the Router's own `compile` — an LMTP
 * adapter has a socket or a host, route limits fit inside the dispatcher's), and relay, AUTH and
 * policies agree with the listeners (trusted networks parse as CIDR, known mailboxes are in a
 * local domain, a submission listener has a users file that exists and TLS, rule names are
 * unique) — each of which the server would otherwise refuse at start, or worse, accept wrongly.
 */
import { dirname, extname, isAbsolute, relative, resolve } from "node:path"
import { Effect, FileSystem, Schema, SchemaIssue } from "effect"
import { parse as parseToml, TomlError } from "smol-toml"
import { parse as parseYaml, YAMLParseError } from "yaml"
import { parseHostPort } from "./HostPort.ts"
import * as QueueConfig from "./QueueConfig.ts"
import * as DataDir from "../DataDir.ts"
import * as Router from "../delivery/Router.ts"
import * as NodeDns from "../dns/NodeDns.ts"
import { parseAddress as parseMilterAddress } from "../policy/milter/Connection.ts"
import * as Relay from "../policy/Relay.ts"
import * as SqliteGreylistStore from "../policy/rules/spam/SqliteGreylistStore.ts"
import * as Address from "../protocol/Address.ts"
import * as KeyPair from "../smtp/internal/keyPair.ts"
import { acmeChecks } from "./AcmeChecks.ts"
import { type ConfigIssue, ConfigError, invalid } from "./ConfigError.ts"
import * as Env from "./Env.ts"
import { adapterNamePattern, adapterTypes, IncomingConfig, ruleTypes } from "./IncomingConfig.ts"
import { toDelivery } from "./Options.ts"
import * as MxConfig from "./MxConfig.ts"
import { formatPath, getAt, isTree, type Path, setAt, type Tree } from "./Shape.ts"
import { formatDuration } from "./Units.ts"
import { relayWarnings } from "./Warnings.ts"

export const defaultSearchPaths: ReadonlyArray<string> = ["./incoming.toml", "/etc/incoming/incoming.toml"]

/** What `incoming serve` flags can set; each one given overrides the file and the environment. */
export interface CliOverrides {
  /** `--listen`: replaces the listeners; each new one takes its other settings from the file's first listener. */
  readonly listen?: ReadonlyArray<string> | undefined
  readonly domains?: ReadonlyArray<string> | undefined
  readonly hostname?: string | undefined
  readonly dataDir?: string | undefined
  readonly maildir?: string | undefined
  readonly deliver?: "maildir" | "discard" | undefined
  readonly queue?: "sqlite" | "memory" | "postgres" | undefined
  readonly inlineThreshold?: number | undefined
  /** The per-listener flags apply to every listener. */
  readonly maxSize?: number | undefined
  readonly tls?: "disabled" | "optional" | "required" | "implicit" | undefined
  readonly tlsCert?: string | undefined
  readonly tlsKey?: string | undefined
  readonly greetingDelayMs?: number | undefined
  readonly lineEndings?: "reject" | "normalize" | undefined
  readonly workers?: number | undefined
  readonly maxAttempts?: number | undefined
  readonly retryBaseSeconds?: number | undefined
  readonly drainTimeoutSeconds?: number | undefined
  readonly logFormat?: "auto" | "json" | "pretty" | undefined
  readonly adminListen?: string | undefined
}

export interface LoadOptions {
  /** `--config PATH`. */
  readonly configPath?: string | undefined
  readonly env: Env.Env
  readonly cwd: string
  readonly flags?: CliOverrides | undefined
  readonly searchPaths?: ReadonlyArray<string> | undefined
}

export interface Loaded {
  /** Absolute path of the file read, if any. */
  readonly file: string | undefined
  readonly config: IncomingConfig
  /** Settings that work, but not as their author likely meant: check-config prints them, serve logs them. */
  readonly warnings: ReadonlyArray<ConfigIssue>
}

/** Settings that name files or directories: relative values are resolved (see the module comment). */
const pathSettings = (tree: Tree): ReadonlyArray<Path> => {
  const listeners = Array.isArray(tree.listeners) ? tree.listeners : []
  const adapters = isTree(tree.adapters) ? Object.keys(tree.adapters) : []
  return [
    ["data_dir"],
    ["delivery", "maildir", "root"],
    ["auth", "users_file"],
    ["acme", "directory_ca"],
    ...listeners.flatMap((l, i): Array<Path> => [
      ["listeners", i, "tls", "cert"],
      ["listeners", i, "tls", "key"],
      ...sniNames(l).flatMap((name): Array<Path> => [["listeners", i, "tls", "sni", name, "cert"], ["listeners", i, "tls", "sni", name, "key"]])
    ]),
    // Only a maildir adapter has `root`, only an LMTP one `socket`, only an MX one `tls_ca`: the others are left alone.
    ...adapters.flatMap((name): Array<Path> => [["adapters", name, "root"], ["adapters", name, "socket"], ...MxConfig.filePaths(tree, name)]),
    // The ARC seal key of an `arc` rule.
    ...(Array.isArray(tree.policies) ? tree.policies : []).flatMap((p, i): Array<Path> =>
      isTree(p) && isTree(p.seal) ? [["policies", i, "seal", "private_key_file"]] : []
    )
  ]
}

/** The server names of a listener's `tls.sni` table, as written in the file. */
const sniNames = (listener: unknown): ReadonlyArray<string> => {
  if (!isTree(listener) || !isTree(listener.tls) || !isTree(listener.tls.sni)) return []
  return Object.keys(listener.tls.sni)
}

const resolvePath = (tree: Tree, path: Path, base: string) => {
  const v = getAt(tree, path)
  if (typeof v === "string" && v !== "" && !isAbsolute(v)) setAt(tree, path, resolve(base, v))
}

const displayName = (file: string, cwd: string): string => {
  const rel = relative(cwd, file)
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? rel : file
}

type Format = "toml" | "json" | "yaml"

const formatOf = (file: string): Format | undefined => {
  const ext = extname(file).toLowerCase()
  return ext === ".toml" ? "toml" : ext === ".json" ? "json" : ext === ".yaml" || ext === ".yml" ? "yaml" : undefined
}

const firstLine = (text: string) => text.split("\n")[0]!.trim()

const parseText = (format: Format, text: string, name: string): Effect.Effect<unknown, ConfigError> =>
  Effect.try({
    try: () => (format === "toml" ? parseToml(text) : format === "json" ? JSON.parse(text) as unknown : parseYaml(text) as unknown),
    catch: (cause) => {
      if (cause instanceof TomlError) {
        return new ConfigError({
          reason: { _tag: "Syntax", file: name, line: cause.line, column: cause.column, detail: firstLine(cause.message).replace(/^Invalid TOML document: /, "") },
          cause
        })
      }
      if (cause instanceof YAMLParseError) {
        const pos = cause.linePos?.[0]
        return new ConfigError({
          reason: { _tag: "Syntax", file: name, line: pos?.line, column: pos?.col, detail: firstLine(cause.message).replace(/ at line \d+, column \d+:?$/, "") },
          cause
        })
      }
      return new ConfigError({ reason: { _tag: "Syntax", file: name, detail: cause instanceof Error ? cause.message : String(cause) }, cause })
    }
  })

const findFile = Effect.fnUntraced(function*(options: LoadOptions) {
  const fs = yield* FileSystem.FileSystem
  const exists = (p: string) => fs.exists(p).pipe(Effect.orElseSucceed(() => false))
  if (options.configPath !== undefined) {
    const file = resolve(options.cwd, options.configPath)
    if (!(yield* exists(file))) return yield* new ConfigError({ reason: { _tag: "NotFound", file: options.configPath } })
    return file
  }
  for (const candidate of options.searchPaths ?? defaultSearchPaths) {
    const file = resolve(options.cwd, candidate)
    if (yield* exists(file)) return file
  }
  return undefined
})

const readDocument = Effect.fnUntraced(function*(file: string, name: string) {
  const fs = yield* FileSystem.FileSystem
  const format = formatOf(file)
  if (format === undefined) return yield* new ConfigError({ reason: { _tag: "UnsupportedFormat", file: name } })
  const text = yield* fs.readFileString(file).pipe(
    Effect.mapError((cause) => new ConfigError({ reason: { _tag: "Unreadable", file: name, detail: cause.message }, cause }))
  )
  // An empty YAML file parses to null: it means "no settings", like an empty TOML file.
  const doc = text.trim() === "" ? {} : yield* parseText(format, text, name)
  if (!isTree(doc)) return yield* invalid([{ source: name, path: "", message: "expected a table (key/value mapping) at the top level" }])
  return doc
})

/** Applies the flags to the document, recording which path each one set. */
export const applyFlags = (tree: Tree, flags: CliOverrides, cwd: string): { readonly issues: ReadonlyArray<ConfigIssue>; readonly applied: ReadonlyArray<{ readonly path: Path; readonly flag: string }> } => {
  const issues: Array<ConfigIssue> = []
  const applied: Array<{ path: Path; flag: string }> = []
  const set = (flag: string, path: Path, value: unknown) => {
    const problem = setAt(tree, path, value)
    if (problem !== undefined) issues.push({ source: flag, path: formatPath(path), message: problem })
    else applied.push({ path, flag })
  }
  if (flags.listen !== undefined && flags.listen.length > 0) {
    const template: Tree = Array.isArray(tree.listeners) && isTree(tree.listeners[0]) ? { ...tree.listeners[0] } : {}
    delete template.name // names must stay unique; each new listener gets its address as its name
    const listeners: Array<Tree> = []
    for (const text of flags.listen) {
      const hp = parseHostPort(text)
      if (typeof hp === "string") issues.push({ source: "--listen", path: "", message: hp })
      else listeners.push({ ...template, host: hp.host, port: hp.port })
    }
    tree.listeners = listeners
    applied.push({ path: ["listeners"], flag: "--listen" })
  }
  if (flags.domains !== undefined && flags.domains.length > 0) set("--domain", ["domains"], [...flags.domains])
  if (flags.hostname !== undefined) set("--hostname", ["hostname"], flags.hostname)
  if (flags.dataDir !== undefined) set("--data-dir", ["data_dir"], resolve(cwd, flags.dataDir))
  if (flags.maildir !== undefined) set("--maildir", ["delivery", "maildir", "root"], resolve(cwd, flags.maildir))
  if (flags.deliver !== undefined) set("--deliver", ["delivery", "adapter"], flags.deliver)
  if (flags.queue !== undefined) set("--queue", ["queue", "backend"], flags.queue)
  if (flags.inlineThreshold !== undefined) set("--inline-threshold", ["queue", "inline_threshold"], flags.inlineThreshold)
  if (flags.workers !== undefined) set("--workers", ["delivery", "workers"], flags.workers)
  if (flags.maxAttempts !== undefined) set("--max-attempts", ["delivery", "max_attempts"], flags.maxAttempts)
  if (flags.retryBaseSeconds !== undefined) set("--retry-base", ["delivery", "backoff", "base"], flags.retryBaseSeconds * 1000)
  if (flags.drainTimeoutSeconds !== undefined) set("--drain-timeout", ["drain_timeout"], flags.drainTimeoutSeconds * 1000)
  if (flags.logFormat !== undefined) set("--log-format", ["logging", "format"], flags.logFormat)
  if (flags.adminListen !== undefined) set("--admin-listen", ["admin", "listen"], flags.adminListen)

  const perListener: ReadonlyArray<readonly [string, Path, unknown]> = [
    ["--max-size", ["max_size"], flags.maxSize],
    ["--greeting-delay", ["greeting_delay"], flags.greetingDelayMs],
    ["--line-endings", ["line_endings"], flags.lineEndings],
    ["--tls", ["tls", "mode"], flags.tls],
    ["--tls-cert", ["tls", "cert"], flags.tlsCert === undefined ? undefined : resolve(cwd, flags.tlsCert)],
    ["--tls-key", ["tls", "key"], flags.tlsKey === undefined ? undefined : resolve(cwd, flags.tlsKey)]
  ]
  for (const [flag, sub, value] of perListener) {
    if (value === undefined) continue
    Env.materializeListeners(tree)
    const listeners = Array.isArray(tree.listeners) ? tree.listeners : []
    listeners.forEach((_, i) => set(flag, ["listeners", i, ...sub], value))
  }
  return { issues, applied }
}

/**
 * Checks of the document before decoding, where the schema's own message would be vague or the
 * decoded value can no longer tell: an adapter table's `type` and a policy's `rule` (a union
 * otherwise reports only "expected a table with type = ..." on the whole table), and `delivery.adapter` set alongside
 * `[[routes]]` (after decoding it always has its default, and silently ignoring a setting the
 * operator wrote is what this loader never does).
 */
const documentChecks = (tree: Tree, sourceOf: (path: Path) => string): { readonly issues: Array<ConfigIssue>; readonly badTables: ReadonlySet<string> } => {
  const issues: Array<ConfigIssue> = []
  // Paths (formatted) of tables whose discriminator was reported: the union's own whole-table
  // message about them would only repeat it.
  const badTables = new Set<string>()
  const add = (path: Path, message: string) => issues.push({ source: sourceOf(path), path: formatPath(path), message })
  if (isTree(tree.adapters)) {
    const expected = adapterTypes.map((t) => `"${t}"`).join(" | ")
    for (const [name, table] of Object.entries(tree.adapters)) {
      if (!adapterNamePattern.test(name)) {
        add(["adapters", name], `bad adapter name ${JSON.stringify(name)}: letters, digits, "-" and "_", starting with a letter or digit`)
        badTables.add(formatPath(["adapters", name]))
        continue
      }
      if (!isTree(table)) continue
      const type = table.type
      if (type === undefined) add(["adapters", name, "type"], `missing (required): one of ${expected}`)
      else if (typeof type !== "string" || !(adapterTypes as ReadonlyArray<string>).includes(type)) {
        add(["adapters", name, "type"], `expected ${expected}, got ${JSON.stringify(type)}`)
      } else continue
      badTables.add(formatPath(["adapters", name]))
    }
  }
  if (Array.isArray(tree.policies)) {
    const expected = ruleTypes.map((t) => `"${t}"`).join(" | ")
    tree.policies.forEach((table, i) => {
      if (!isTree(table)) return
      const rule = table.rule
      if (rule === undefined) add(["policies", i, "rule"], `missing (required): one of ${expected}`)
      else if (typeof rule !== "string" || !(ruleTypes as ReadonlyArray<string>).includes(rule)) {
        add(["policies", i, "rule"], `unknown rule ${JSON.stringify(rule)}: expected ${expected}`)
      } else return
      badTables.add(formatPath(["policies", i]))
    })
  }
  if (tree.routes !== undefined && getAt(tree, ["delivery", "adapter"]) !== undefined) {
    add(["delivery", "adapter"], "not used when [[routes]] are configured: route recipients to an [adapters.<name>] instead")
  }
  return { issues, badTables }
}

/** Turns schema issues into config issues, each blamed on the source that set the value. */
const schemaIssues = (issue: SchemaIssue.Issue, sourceOf: (path: Path) => string): Array<ConfigIssue> => {
  const formatter = SchemaIssue.makeFormatterStandardSchemaV1({
    leafHook: (leaf) => {
      if (leaf._tag === "UnexpectedKey") return "unknown key"
      if (leaf._tag === "MissingKey") return "missing (required)"
      return SchemaIssue.defaultLeafHook(leaf)
    }
  })
  return formatter(issue).issues.map((i) => {
    const path = (i.path ?? []).map((s) => (typeof s === "object" ? s.key : s)).map((s) => (typeof s === "number" ? s : String(s)))
    return { source: sourceOf(path), path: formatPath(path), message: i.message.replace(/^Expected /, "expected ") }
  })
}

/** The routed delivery form: adapters and routes against each other and the dispatcher. */
const routingChecks = (config: IncomingConfig, sourceOf: (path: Path) => string): Array<ConfigIssue> => {
  const issues: Array<ConfigIssue> = []
  const add = (path: Path, message: string) => issues.push({ source: sourceOf(path), path: formatPath(path), message })
  const adapters = config.adapters ?? {}
  for (const [name, a] of Object.entries(adapters)) {
    if (a.type !== "lmtp") continue
    if ((a.socket === undefined) === (a.host === undefined)) {
      add(["adapters", name], a.socket === undefined ? "needs socket (a Unix socket path) or host (and port)" : "socket and host are exclusive: give one")
    } else if (a.socket !== undefined && a.port !== undefined) {
      add(["adapters", name, "port"], "not used with socket")
    }
  }
  for (const [i, p] of config.priorities.entries()) {
    if (p.sender.length === 0 && p.recipient.length === 0) add(["priorities", i], "needs sender or recipient patterns")
  }
  const routes = config.routes
  if (routes === undefined) {
    if (config.adapters !== undefined) add(["routes"], "missing: [adapters.*] are only used by [[routes]] (add a [[routes]] table with match = [\"*\"] for a catch-all)")
    return issues
  }
  const used = new Set<string>()
  for (const [i, r] of routes.entries()) {
    used.add(r.adapter)
    if (!(r.adapter in adapters)) {
      const known = Object.keys(adapters)
      add(["routes", i, "adapter"], `no adapter named "${r.adapter}"${known.length > 0 ? ` (configured: ${known.map((k) => `"${k}"`).join(", ")})` : " ([adapters.<name>] tables define them)"}`)
    }
    if (r.max_attempts !== undefined && r.max_attempts > config.delivery.max_attempts) {
      add(["routes", i, "max_attempts"], `${r.max_attempts} is more than delivery.max_attempts (${config.delivery.max_attempts}), which dead-letters first`)
    }
    if (r.timeout !== undefined && r.timeout >= config.delivery.timeout) {
      add(["routes", i, "timeout"], `${formatDuration(r.timeout)} is not below delivery.timeout (${formatDuration(config.delivery.timeout)}), which would cut the whole delivery off first`)
    }
    if (r.schedule?.kind === "exponential" && r.schedule.base > r.schedule.max) {
      add(["routes", i, "schedule", "base"], `${formatDuration(r.schedule.base)} is more than schedule.max (${formatDuration(r.schedule.max)})`)
    }
  }
  for (const name of Object.keys(adapters)) {
    if (!used.has(name)) add(["adapters", name], "not used by any route")
  }
  // The Router's own compile judges patterns and names; growing the table one route at a time
  // tells which route brought the conflict in. Only on an otherwise clean table: it would repeat
  // what is reported above in its own words.
  const delivery = toDelivery(config)
  if (delivery.adapter === "router" && issues.length === 0) {
    for (let i = 1; i <= delivery.routes.length; i++) {
      const compiled = Router.compile(delivery.routes.slice(0, i))
      if (compiled._tag === "Failure") {
        add(["routes", i - 1], compiled.failure.problem)
        break
      }
    }
  }
  return issues
}

/** Relay, AUTH and policies, against each other and the listeners. */
const accessChecks = Effect.fnUntraced(function*(config: IncomingConfig, sourceOf: (path: Path) => string) {
  const fs = yield* FileSystem.FileSystem
  const issues: Array<ConfigIssue> = []
  const add = (path: Path, message: string) => issues.push({ source: sourceOf(path), path: formatPath(path), message })
  // Relay's own parser judges each entry, so the loader and the server cannot disagree.
  for (const [i, network] of config.relay.trusted_networks.entries()) {
    const parsed = yield* Effect.result(Relay.parseNetworks([network]))
    if (parsed._tag === "Failure") add(["relay", "trusted_networks", i], `not an IP address or CIDR range (like "10.0.0.0/8" or "::1"): ${JSON.stringify(network)}`)
  }
  const domains = new Set(config.domains.map(Address.domainKey))
  for (const [i, r] of (config.relay.recipients ?? []).entries()) {
    const m = Address.parse(r)
    if (m === undefined || m.domain === "") add(["relay", "recipients", i], `expected a mailbox like "user@${config.domains[0]}", got ${JSON.stringify(r)}`)
    else if (!domains.has(m.domain)) add(["relay", "recipients", i], `${JSON.stringify(r)} is not in one of domains (${config.domains.join(", ")})`)
  }
  for (const [i, l] of config.listeners.entries()) {
    for (const [j, network] of (l.proxy_protocol?.trusted ?? []).entries()) {
      const parsed = yield* Effect.result(Relay.parseNetworks([network]))
      if (parsed._tag === "Failure") {
        add(["listeners", i, "proxy_protocol", "trusted", j], `not an IP address or CIDR range (like "10.0.0.0/8"): ${JSON.stringify(network)}`)
      }
    }
  }
  for (const [i, l] of config.listeners.entries()) {
    if (l.mode === "mx" || l.mode === "lmtp") continue
    const name = l.name ?? `smtp:${l.host}:${l.port ?? 0}`
    if (config.auth === undefined) {
      add(["listeners", i, "mode"], `listener "${name}" is mode "${l.mode}", which requires AUTH: set auth.users_file (users are added with "incoming users add NAME --file PATH")`)
    }
    if (l.tls.mode === "disabled") {
      add(["listeners", i, "tls", "mode"], `listener "${name}" is mode "${l.mode}", which requires TLS: set tls.mode (${l.mode === "submissions" ? `"implicit"` : `"optional" or "required"`}) with a cert and key`)
    }
  }
  if (config.auth !== undefined) {
    const file = config.auth.users_file
    const info = yield* fs.stat(file).pipe(Effect.option)
    if (info._tag === "None") add(["auth", "users_file"], `file not found: ${file} (create it with: incoming users add NAME --file ${file})`)
    else if (info.value.type !== "File") add(["auth", "users_file"], `not a file: ${file}`)
    else if ((yield* fs.access(file, { readable: true }).pipe(Effect.option))._tag === "None") add(["auth", "users_file"], `not readable by this user: ${file}`)
  }
  for (const [i, p] of config.policies.entries()) {
    if (p.rule !== "arc" || p.seal === undefined) continue
    const file = p.seal.private_key_file
    const readable = yield* fs.access(file, { readable: true }).pipe(Effect.option)
    if (readable._tag === "None") add(["policies", i, "seal", "private_key_file"], `not readable by this user (or not found): ${file}`)
    else if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(yield* fs.readFileString(file).pipe(Effect.orElseSucceed(() => "")))) {
      add(["policies", i, "seal", "private_key_file"], `not a PEM private key: ${file}`)
    }
  }
  for (const [name, a] of Object.entries(config.adapters ?? {})) {
    if (a.type === "mx") for (const p of yield* MxConfig.fileProblems(fs, name, a)) add(p.path, p.message)
  }
  // The resolver's own parser judges each server, so the loader and the server cannot disagree.
  for (const [i, server] of config.dns.servers.entries()) {
    const problem = NodeDns.serverProblem(server)
    if (problem !== undefined) add(["dns", "servers", i], problem)
  }
  for (const [i, r] of (config.routes ?? []).entries()) {
    if (r.match.length === 0 && !r.quarantine) add(["routes", i, "match"], "missing (required): the recipients this route takes, like [\"*@example.com\"] (only a route with quarantine = true may have none)")
  }
  for (const [i, p] of config.policies.entries()) {
    if (p.rule === "rspamd" && p.timeout >= config.policy_timeout) {
      add(["policies", i, "timeout"], `${formatDuration(p.timeout)} is not under policy_timeout (${formatDuration(config.policy_timeout)}): the policy deadline would answer 451 before on_error applies`)
    }
  }
  for (const [i, p] of config.policies.entries()) {
    if (p.rule !== "greylist") continue
    for (const [j, network] of p.allow_networks.entries()) {
      const parsed = yield* Effect.result(Relay.parseNetworks([network]))
      if (parsed._tag === "Failure") add(["policies", i, "allow_networks", j], `not an IP address or CIDR range (like "192.0.2.0/24"): ${JSON.stringify(network)}`)
    }
  }
  for (const [i, p] of config.policies.entries()) {
    if (p.rule !== "milter") continue
    const address = parseMilterAddress(p.address)
    if (typeof address === "string") add(["policies", i, "address"], address)
    if (p.timeout >= config.policy_timeout) {
      add(["policies", i, "timeout"], `${formatDuration(p.timeout)} is not under policy_timeout (${formatDuration(config.policy_timeout)}): the policy deadline would answer 451 before on_error applies`)
    }
  }
  const names = new Map<string, number>()
  for (const [i, p] of config.policies.entries()) {
    const name = p.name ?? p.rule
    const same = names.get(name)
    if (same !== undefined) add(["policies", i, "name"], `same name as policies[${same}] ("${name}"): give each a name, it labels their verdicts and metrics`)
    names.set(name, i)
  }
  return issues
})

/** Checks across fields and against the file system, after decoding. */
const semanticChecks = Effect.fnUntraced(function*(config: IncomingConfig, sourceOf: (path: Path) => string) {
  const fs = yield* FileSystem.FileSystem
  const issues: Array<ConfigIssue> = []
  const add = (path: Path, message: string) => issues.push({ source: sourceOf(path), path: formatPath(path), message })
  const pairCheck = (at: Path, files: KeyPair.KeyPairFiles) => {
    const read = KeyPair.read(files)
    if (KeyPair.isProblem(read)) add([...at, read.which], read.message)
  }
  // What serve would hit creating and writing the data dir (read-only, under a file, not ours).
  const dataDirProblem = DataDir.check(config.data_dir)
  if (dataDirProblem !== undefined) add(["data_dir"], `${config.data_dir}: ${dataDirProblem}`)
  // The greylist's state under data_dir: what serve would hit opening it (corrupt, locked, not a file).
  const greylistDb = dataDirProblem === undefined ? SqliteGreylistStore.problem(config.data_dir) : undefined
  for (const [i, p] of config.policies.entries()) {
    if (p.rule === "greylist" && greylistDb !== undefined) add(["policies", i], `greylist store (under data_dir): ${greylistDb}`)
  }
  for (const [key, message] of QueueConfig.problems(config.queue)) add(["queue", key], message)
  const addresses = new Map<string, number>()
  const names = new Map<string, number>()
  issues.push(...(yield* acmeChecks(config, sourceOf)))
  for (const [i, l] of config.listeners.entries()) {
    // An ACME listener's files are the manager's (issued at start when missing): acmeChecks looked at it.
    if (l.tls.mode !== "disabled" && !l.tls.acme) {
      let usable = true
      for (const which of ["cert", "key"] as const) {
        const file = l.tls[which]
        usable &&= file !== undefined
        if (file === undefined) {
          add(["listeners", i, "tls", which], `required when tls.mode is "${l.tls.mode}"`)
          continue
        }
        const info = yield* fs.stat(file).pipe(Effect.option)
        if (info._tag === "None") add(["listeners", i, "tls", which], `file not found: ${file}`)
        else if (info.value.type !== "File") add(["listeners", i, "tls", which], `not a file: ${file}`)
        else if ((yield* fs.access(file, { readable: true }).pipe(Effect.option))._tag === "None") {
          add(["listeners", i, "tls", which], `not readable by this user: ${file}`)
        } else continue
        usable = false
      }
      // The listener's own check (PEM, the key matching the certificate), so serve cannot refuse what passed here.
      if (usable) pairCheck(["listeners", i, "tls"], { cert: l.tls.cert!, key: l.tls.key! })
      for (const [name, files] of Object.entries(l.tls.sni ?? {})) {
        let found = true
        for (const which of ["cert", "key"] as const) {
          const exists = yield* fs.exists(files[which]).pipe(Effect.orElseSucceed(() => false))
          if (!exists) add(["listeners", i, "tls", "sni", name, which], `file not found: ${files[which]}`)
          found &&= exists
        }
        if (found) pairCheck(["listeners", i, "tls", "sni", name], files)
      }
    }
    // The command deadline also runs while a hook (policy, commit) works: unless it is the longer
    // one, a slow hook is cut off with 421 4.4.2 instead of answering its own 451 at hook_timeout.
    if (l.command_timeout > 0 && l.hook_timeout > 0 && l.command_timeout <= l.hook_timeout) {
      add(
        ["listeners", i, "command_timeout"],
        `${formatDuration(l.command_timeout)} must be longer than hook_timeout (${formatDuration(l.hook_timeout)}), which runs inside it`
      )
    }
    if (l.port === undefined && l.socket === undefined) add(["listeners", i, "port"], "required (or `socket`, a Unix socket path)")
    if (l.port !== undefined && l.socket !== undefined) add(["listeners", i, "socket"], "a listener has a port or a socket, not both")
    const address = l.socket !== undefined ? `unix:${l.socket}` : `${l.host}:${l.port ?? 0}`
    const sameAddress = addresses.get(address)
    if (l.port !== 0 && sameAddress !== undefined) add(["listeners", i], `same address as listeners[${sameAddress}] (${address})`)
    addresses.set(address, i)
    const name = l.name ?? `smtp:${address}`
    const sameName = names.get(name)
    if (sameName !== undefined) add(["listeners", i, "name"], `same name as listeners[${sameName}] ("${name}")`)
    names.set(name, i)
  }
  const backoff = config.delivery.backoff
  if (backoff.base > backoff.max) {
    add(["delivery", "backoff", "base"], `${formatDuration(backoff.base)} is more than delivery.backoff.max (${formatDuration(backoff.max)})`)
  }
  issues.push(...routingChecks(config, sourceOf))
  issues.push(...(yield* accessChecks(config, sourceOf)))
  if (config.admin !== undefined) {
    const a = config.admin.listen
    const clash = config.listeners.findIndex((l) => l.port !== 0 && l.port === a.port && (l.host === a.host || l.host === "0.0.0.0" || a.host === "0.0.0.0"))
    if (a.port !== 0 && clash >= 0) add(["admin", "listen"], `same port as listeners[${clash}] (${a.port})`)
  }
  return issues
})

/**
 * Loads the effective configuration. Fails with a `ConfigError` listing every problem found,
 * each with its source and path.
 */
export const load = Effect.fnUntraced(function*(options: LoadOptions) {
  const file = yield* findFile(options)
  const name = file === undefined ? "defaults" : displayName(file, options.cwd)
  const tree: Tree = file === undefined ? {} : yield* readDocument(file, name)

  const sources: Env.Sources = new Map()
  const refs = Env.interpolate(tree, options.env, name)
  if (file !== undefined) for (const p of pathSettings(tree)) resolvePath(tree, p, dirname(file))
  const overrides = Env.applyOverrides(tree, options.env, refs.referenced)
  for (const { path, variable } of overrides.applied) {
    sources.set(formatPath(path), `env ${variable}`)
    if (pathSettings(tree).some((p) => formatPath(p) === formatPath(path))) resolvePath(tree, path, options.cwd)
  }
  const flags = options.flags === undefined ? { issues: [], applied: [] } : applyFlags(tree, options.flags, options.cwd)
  for (const { path, flag } of flags.applied) sources.set(formatPath(path), flag)
  const early = [...refs.issues, ...overrides.issues, ...flags.issues]
  if (early.length > 0) return yield* invalid(early)

  // A value is blamed on whoever set the longest prefix of its path; everything else on the file.
  const sourceOf = (path: Path): string => {
    for (let n = path.length; n > 0; n--) {
      const s = sources.get(formatPath(path.slice(0, n)))
      if (s !== undefined) return s
    }
    return name
  }

  const documented = documentChecks(tree, sourceOf)
  const decodedExit = yield* Schema.decodeUnknownEffect(IncomingConfig)(tree, { errors: "all", onExcessProperty: "error", reportInput: true }).pipe(
    Effect.result
  )
  if (decodedExit._tag === "Failure" || documented.issues.length > 0) {
    // An adapter or policy whose type was already reported is not reported again as a whole table.
    const fromSchema = decodedExit._tag === "Failure"
      ? schemaIssues(decodedExit.failure.issue, sourceOf).filter((i) => !documented.badTables.has(i.path))
      : []
    return yield* invalid([...documented.issues, ...fromSchema])
  }
  const decoded = decodedExit.success
  // Defaults for paths are relative to the working directory.
  const config: IncomingConfig = {
    ...decoded,
    data_dir: resolve(options.cwd, decoded.data_dir),
    delivery: { ...decoded.delivery, maildir: { root: resolve(options.cwd, decoded.delivery.maildir.root) } }
  }
  const issues = yield* semanticChecks(config, sourceOf)
  if (issues.length > 0) return yield* invalid(issues)
  return { file, config, warnings: relayWarnings(config, sourceOf) } satisfies Loaded
})

/**
 * `load` with this process's environment and working directory. The one place outside tests
 * that reads `process.env`: everything else gets its settings from the decoded config.
 */
export const loadFromProcess = (options: { readonly configPath?: string | undefined; readonly flags?: CliOverrides | undefined }) =>
  load({ ...options, env: process.env, cwd: process.cwd() })
