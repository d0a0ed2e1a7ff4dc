/**
 * The `[dns]` table of the config file: the resolver and cache of the `Dns` service.
 */
import { Schema } from "effect"
import * as DnsCache from "../dns/DnsCache.ts"
import * as NodeDnsModule from "../dns/NodeDns.ts"
import { count, duration, NonEmpty, withDefault } from "./SchemaParts.ts"

/** The resolver of the `Dns` service (dns/NodeDns.ts), shared by every part that asks the DNS. */
export const Dns = Schema.Struct({
  /** `HOST` or `HOST:PORT` (IPv6 in brackets); empty: the system's resolvers. Checked in `Load.ts`. */
  servers: withDefault(Schema.Array(NonEmpty), []),
  /** Deadline of one try. */
  timeout: duration(NodeDnsModule.defaults.timeoutMs),
  /** Tries per server. */
  tries: count(1, NodeDnsModule.defaults.tries),
  /** Answers kept in the cache at most (0: no cache). */
  cache_size: count(0, DnsCache.defaultCacheOptions.maxEntries),
  /** Upper bound of an answer's stay in the cache. */
  max_ttl: duration(DnsCache.defaultCacheOptions.maxTtlMs),
  /** Stay of MX, TXT and PTR answers, whose TTL the resolver does not report. */
  unknown_ttl: duration(DnsCache.defaultCacheOptions.unknownTtlMs),
  /** Stay of "no such name" and "no such record" answers. */
  negative_ttl: duration(DnsCache.defaultCacheOptions.negativeTtlMs)
})
