/**
 * The `[adapters.<name>]` table of `type = "mx"` (delivery/MxAdapter.ts), and the load-time
 * checks of the files it names: the DKIM private keys (readable, a private key, not open to
 * other users) and the CA file of `tls = "required"`.
 */
import { Effect, type FileSystem, Schema } from "effect"
import * as DkimSigner from "../delivery/dkim/DkimSigner.ts"
import * as MxAdapterModule from "../delivery/MxAdapter.ts"
import { count, duration, NonEmpty, withDefault } from "./SchemaParts.ts"
import type { Path } from "./Shape.ts"

// Shape.ts reads IncomingConfig's schema when it loads, and IncomingConfig imports this file: a
// value import from Shape.ts would run before the schema exists.
const isTree = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const md = MxAdapterModule.defaults
const Port = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }))
const DkimKey = Schema.Struct({ domain: NonEmpty, selector: NonEmpty, private_key: NonEmpty })

/** Delivery to each recipient domain's MX hosts. */
export const MxAdapter = Schema.Struct({
  type: Schema.Literal("mx"),
  /** Port of every MX host (default 25; tests point it elsewhere). */
  port: withDefault(Port, md.port),
  helo: Schema.optionalKey(NonEmpty),
  /** The local address to connect from. */
  local_address: Schema.optionalKey(NonEmpty),
  /** `opportunistic` (STARTTLS when offered, unverified), `required` (verified against the MX name), `disabled`. */
  tls: withDefault(Schema.Literals(["opportunistic", "required", "disabled"]), md.tls),
  /** PEM file of extra CAs (besides Node's default CAs) for `tls = "required"` and MTA-STS. */
  tls_ca: Schema.optionalKey(NonEmpty),
  /** Honour the MTA-STS policies (RFC 8461) of destination domains. */
  mta_sts: withDefault(Schema.Boolean, false),
  /** HTTPS port of the MTA-STS policy hosts (`mta-sts.<domain>`); 443 but in tests. */
  mta_sts_port: withDefault(Port, md.mtaStsPort),
  connect_timeout: duration(md.connectTimeoutMs),
  greeting_timeout: duration(md.greetingTimeoutMs),
  socket_timeout: duration(md.socketTimeoutMs),
  max_connections_per_domain: count(1, md.maxConnectionsPerDomain),
  max_messages_per_connection: count(1, md.maxMessagesPerConnection),
  /** How long an unused connection is kept for the next message to its domain ("0s": no reuse). */
  idle_timeout: duration(md.idleTimeoutMs),
  /** Attempts in a row where no MX of a domain took a connection before the domain is paused. */
  pause_after_failures: count(1, md.pauseAfterFailures),
  pause: duration(md.pauseMs),
  /** DKIM-sign outbound mail: `d=`, `s=` and the PEM private key file (mode 600). */
  dkim: Schema.optionalKey(DkimKey),
  /** Keys by sender domain; `dkim` signs for the others. */
  dkim_by_domain: Schema.optionalKey(Schema.Record(NonEmpty, DkimKey))
})
export type MxAdapter = typeof MxAdapter.Type

/** The problems of the files an MX adapter named `name` refers to, by path. */
export const fileProblems = (fs: FileSystem.FileSystem, name: string, a: MxAdapter) =>
  Effect.gen(function*() {
    const problems: Array<{ readonly path: Path; readonly message: string }> = []
    const keys: Array<[Path, string]> = [
      ...(a.dkim !== undefined ? [[["adapters", name, "dkim", "private_key"], a.dkim.private_key] as [Path, string]] : []),
      ...Object.entries(a.dkim_by_domain ?? {}).map(([d, k]): [Path, string] => [["adapters", name, "dkim_by_domain", d, "private_key"], k.private_key])
    ]
    for (const [path, file] of keys) {
      const text = yield* fs.readFileString(file).pipe(Effect.option)
      const problem = DkimSigner.checkKeyFile(file, text._tag === "Some" ? text.value : undefined)
      if (problem !== undefined) problems.push({ path, message: problem })
    }
    if (a.tls_ca !== undefined && (yield* fs.access(a.tls_ca, { readable: true }).pipe(Effect.option))._tag === "None") {
      problems.push({ path: ["adapters", name, "tls_ca"], message: `not readable by this user (or not found): ${a.tls_ca}` })
    }
    return problems
  })

/** The file settings of adapter `name` as written (relative to the file): CA and DKIM keys. */
export const filePaths = (tree: unknown, name: string): ReadonlyArray<Path> => {
  const a = isTree(tree) && isTree(tree.adapters) ? tree.adapters[name] : undefined
  const domains = isTree(a) && isTree(a.dkim_by_domain) ? Object.keys(a.dkim_by_domain) : []
  return [
    ["adapters", name, "tls_ca"],
    ["adapters", name, "dkim", "private_key"],
    ...domains.map((d): Path => ["adapters", name, "dkim_by_domain", d, "private_key"])
  ]
}
