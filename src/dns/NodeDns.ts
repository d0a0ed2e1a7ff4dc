/**
 * The server's `Dns`: node:dns's `Resolver` (c-ares: its own UDP/TCP client, not the blocking
 * `getaddrinfo` thread pool) behind the TTL cache of `DnsCache.ts`.
 *
 * `servers` are `HOST` or `HOST:PORT` (IPv6 in brackets: `[::1]:5353`); without them the system's
 * resolvers (/etc/resolv.conf). `timeoutMs` is the deadline of one try and `tries` how many
 * tries c-ares makes per server, so a dead resolver costs at most `timeoutMs × tries` per
 * server before the query fails with `Timeout`.
 *
 * node:dns reports TTLs for A and AAAA answers only; MX, TXT and PTR answers are kept for
 * `unknownTtlMs` (default 5 minutes, below the TTL most zones publish for such records).
 */
import { Resolver } from "node:dns/promises"
import { Effect, Layer } from "effect"
import * as DnsCache from "./DnsCache.ts"
import { type Answers, Dns, DnsError, type RecordType } from "./Dns.ts"

export interface NodeDnsOptions {
  /** Resolvers to ask, `HOST[:PORT]`; default the system's. */
  readonly servers?: ReadonlyArray<string> | undefined
  /** Deadline of one try, ms (default 2000). */
  readonly timeoutMs?: number | undefined
  /** Tries per server (default 2). */
  readonly tries?: number | undefined
  readonly cache?: Partial<DnsCache.CacheOptions> | undefined
}

export const defaults = { timeoutMs: 2_000, tries: 2 }

const reasonOf = (code: string | undefined, message: string): DnsError["reason"] => {
  switch (code) {
    case "ENOTFOUND":
      return { _tag: "NotFound" }
    case "ENODATA":
      return { _tag: "NoData" }
    case "ETIMEOUT":
      return { _tag: "Timeout" }
    default:
      return { _tag: "ServerFailure", detail: code ?? message }
  }
}

const errorOf = (name: string, type: RecordType) => (cause: unknown): DnsError => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
  return new DnsError({ name, type, reason: reasonOf(code, cause instanceof Error ? cause.message : String(cause)), cause })
}

/** One upstream query; TTL from c-ares where it reports one. */
const query = (resolver: Resolver) => <T extends RecordType>(name: string, type: T): Effect.Effect<DnsCache.Answer<T>, DnsError> => {
  const ask = async (): Promise<DnsCache.Answer<RecordType>> => {
    switch (type) {
      case "A":
      case "AAAA": {
        const rows = type === "A" ? await resolver.resolve4(name, { ttl: true }) : await resolver.resolve6(name, { ttl: true })
        return { records: rows.map((r) => r.address), ttl: rows.length === 0 ? undefined : Math.min(...rows.map((r) => r.ttl)) }
      }
      case "MX":
        return { records: (await resolver.resolveMx(name)).map(({ exchange, priority }) => ({ exchange, priority })), ttl: undefined }
      case "TXT":
        return { records: await resolver.resolveTxt(name), ttl: undefined }
      default:
        return { records: await resolver.resolvePtr(name), ttl: undefined }
    }
  }
  return Effect.tryPromise({ try: ask, catch: errorOf(name, type) }) as Effect.Effect<DnsCache.Answer<T>, DnsError>
}

/** Why node:dns refuses `server` as a resolver address, if it does. */
export const serverProblem = (server: string): string | undefined => {
  try {
    new Resolver().setServers([server])
    return undefined
  } catch (e) {
    return `not a resolver address (an IP address, with :PORT if not 53; IPv6 as [::1]:53): ${JSON.stringify(server)}` +
      (e instanceof Error ? ` (${e.message})` : "")
  }
}

/** The resolver itself (no cache): for tests of the upstream and for callers that cache elsewhere. */
export const makeResolver = (options: NodeDnsOptions = {}): Resolver => {
  const resolver = new Resolver({ timeout: options.timeoutMs ?? defaults.timeoutMs, tries: options.tries ?? defaults.tries })
  if (options.servers !== undefined && options.servers.length > 0) resolver.setServers([...options.servers])
  return resolver
}

export const make = (options: NodeDnsOptions = {}): Effect.Effect<Dns["Service"]> =>
  Effect.sync(() => DnsCache.make(query(makeResolver(options)), options.cache))

export const layer = (options: NodeDnsOptions = {}): Layer.Layer<Dns> => Layer.effect(Dns, make(options))

export type { Answers }
