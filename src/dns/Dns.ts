/**
 * The `Dns` contract: the one way Incoming asks the DNS, shared by everything that does
 * (SPF/DKIM/DMARC/ARC/iprev now; DNSBL, greylisting exemptions and outbound MX delivery next).
 *
 * A query names a record type and gets that type's answer shape, or a `DnsError` whose reason
 * says what happened: `NotFound` (NXDOMAIN), `NoData` (the name exists, not with this type),
 * `Timeout` and `ServerFailure`. The first two are answers ("there is nothing"), the last two
 * are trouble ("we could not find out"): callers must treat them differently, and trouble must
 * never become a 5xx (guarantee 4). `retryable` says which is which.
 *
 * Implementations: `NodeDns` (node:dns `Resolver` with a TTL cache, the server's default) and
 * `ZoneDns` (an in-memory zone, for tests: nothing leaves the process). `NodeCompat.ts` adapts
 * the contract to the callback shape libraries such as mailauth expect.
 */
import { isIP } from "node:net"
import { Context, Data, Effect } from "effect"

/** The record types callers need; each has its own answer shape (`Answers`). */
export type RecordType = "A" | "AAAA" | "MX" | "TXT" | "PTR"

export const recordTypes: ReadonlyArray<RecordType> = ["A", "AAAA", "MX", "TXT", "PTR"]

export interface MxRecord {
  readonly exchange: string
  readonly priority: number
}

/** The shapes of `dns.promises.resolve(name, type)`: TXT is a list of records, each a list of strings. */
export interface Answers {
  readonly A: ReadonlyArray<string>
  readonly AAAA: ReadonlyArray<string>
  readonly MX: ReadonlyArray<MxRecord>
  readonly TXT: ReadonlyArray<ReadonlyArray<string>>
  readonly PTR: ReadonlyArray<string>
}

export type DnsErrorReason =
  /** NXDOMAIN: the name does not exist. */
  | { readonly _tag: "NotFound" }
  /** The name exists but has no record of this type. */
  | { readonly _tag: "NoData" }
  /** No answer within the deadline (after every try). */
  | { readonly _tag: "Timeout" }
  /** SERVFAIL, REFUSED, a malformed answer, no reachable server: we could not find out. */
  | { readonly _tag: "ServerFailure"; readonly detail: string }

export class DnsError extends Data.TaggedError("DnsError")<{
  readonly name: string
  readonly type: RecordType
  readonly reason: DnsErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    return `DNS ${this.type} ${this.name}: ${r._tag === "ServerFailure" ? `server failure (${r.detail})` : r._tag}`
  }

  /** True for trouble (timeout, server failure): asking again later may give an answer. */
  get retryable(): boolean {
    return this.reason._tag === "Timeout" || this.reason._tag === "ServerFailure"
  }

  /** The `err.code` of node:dns for this reason (what mailauth and other Node libraries test). */
  get code(): "ENOTFOUND" | "ENODATA" | "ETIMEOUT" | "ESERVFAIL" {
    switch (this.reason._tag) {
      case "NotFound":
        return "ENOTFOUND"
      case "NoData":
        return "ENODATA"
      case "Timeout":
        return "ETIMEOUT"
      default:
        return "ESERVFAIL"
    }
  }
}

export class Dns extends Context.Service<Dns, {
  /** The records of `type` at `name` (no trailing dot needed; case does not matter). */
  readonly resolve: <T extends RecordType>(name: string, type: T) => Effect.Effect<Answers[T], DnsError>
}>()("incoming/Dns") {}

/** The PTR name of an address: `4.3.2.1.in-addr.arpa` or the nibble form under `ip6.arpa`; undefined for a non-address. */
export const reverseName = (ip: string): string | undefined => {
  const version = isIP(ip)
  if (version === 4) return `${ip.split(".").reverse().join(".")}.in-addr.arpa`
  if (version !== 6) return undefined
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
  if (mapped !== null) return reverseName(mapped[1]!)
  // Expand `::` into the zero groups it stands for, then write every nibble in reverse.
  const [head, tail] = ip.includes("::") ? ip.split("::") as [string, string] : [ip, undefined]
  const left = head === "" ? [] : head.split(":")
  const right = tail === undefined || tail === "" ? [] : tail.split(":")
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right]
  const nibbles = groups.map((g) => g.padStart(4, "0")).join("").toLowerCase().split("")
  return `${nibbles.reverse().join(".")}.ip6.arpa`
}

/** A name as the cache and zones key it: lower case, no trailing dot. */
export const normalizeName = (name: string): string => {
  const lower = name.trim().toLowerCase()
  return lower.endsWith(".") ? lower.slice(0, -1) : lower
}

export const resolve = <T extends RecordType>(name: string, type: T): Effect.Effect<Answers[T], DnsError, Dns> =>
  Dns.use((dns) => dns.resolve(name, type))

/** The names the address points back to (PTR); `NotFound` when it has none. */
export const reverse = (ip: string): Effect.Effect<ReadonlyArray<string>, DnsError, Dns> => {
  const name = reverseName(ip)
  return name === undefined
    ? Effect.fail(new DnsError({ name: ip, type: "PTR", reason: { _tag: "ServerFailure", detail: "not an IP address" } }))
    : resolve(name, "PTR")
}

/** Like `resolve`, with `NotFound` and `NoData` as an empty answer: for callers to whom "nothing" is a result. */
export const resolveOrEmpty = <T extends RecordType>(name: string, type: T): Effect.Effect<Answers[T] | readonly [], DnsError, Dns> =>
  resolve(name, type).pipe(
    Effect.catchIf((e) => !e.retryable, () => Effect.succeed([] as const))
  )
