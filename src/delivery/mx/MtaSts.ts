/**
 * The MTA-STS policy (RFC 8461) of a destination domain, as the MX adapter needs it before it
 * connects: discovered through the `_mta-sts.<domain>` TXT record (asked through our `Dns`),
 * fetched from `https://mta-sts.<domain>/.well-known/mta-sts.txt`, and cached by domain.
 *
 * The fetch is strict (§3.3): HTTPS with the certificate verified for `mta-sts.<domain>`, status
 * 200 only (a redirect is not followed), `text/plain`, at most `maxBytes`, within `timeoutMs`.
 * The policy host's address comes from our `Dns` too, never from the system resolver, so the
 * same DNS answers decide the MX hosts and the policy host (tests point both at loopback).
 *
 * The cache is in memory (a restart or a reload starts empty, as a first sighting would) and
 * follows §3.3 and §5.1:
 * - a cached policy is used until its `max_age` runs out, while the TXT record names its `id`;
 * - a new `id` means a new fetch; if that fails, the cached policy goes on being used;
 * - no record (or DNS trouble) with a live cached policy: the cached policy applies;
 * - a record but no policy fetched and none cached: no policy, delivery as without MTA-STS.
 * A failed fetch is not tried again for `retryFailedMs` (per domain and id), so a domain whose
 * policy host is down does not cost every delivery a timeout. Lookups for one domain are run one
 * at a time, so a burst of messages fetches a policy once.
 */
import { request } from "node:https"
import { Clock, Effect, Metric, Result, Semaphore } from "effect"
import * as Dns from "../../dns/Dns.ts"
import * as MtaStsPolicy from "./MtaStsPolicy.ts"

export interface MtaStsOptions {
  /** Port of the policy hosts' HTTPS (default 443; tests point it elsewhere). */
  readonly port?: number | undefined
  /** Trusted CA certificates (PEM) for the policy hosts; default: Node's default CAs. */
  readonly ca?: ReadonlyArray<string | Buffer> | undefined
  /** The local address to connect from (the adapter's `local_address`). */
  readonly localAddress?: string | undefined
  readonly timeoutMs?: number | undefined
  readonly maxBytes?: number | undefined
  readonly retryFailedMs?: number | undefined
}

export const defaults = { port: 443, timeoutMs: 20_000, maxBytes: 64 * 1024, retryFailedMs: 5 * 60_000 } as const

/** A policy in force for a domain, with the `id` it was published under. */
export interface Known {
  readonly policy: MtaStsPolicy.Policy
  readonly id: string
}

export interface MtaSts {
  /** The policy that applies to mail for `domain` now (an A-label name), if any. */
  readonly policyFor: (domain: string) => Effect.Effect<Known | undefined>
}

const fetches = (domain: string, result: "fetched" | "failed") =>
  Metric.counter("incoming_mta_sts_policy_fetches_total", {
    description: "MTA-STS policy fetches by destination domain and result (fetched, failed)",
    incremental: true,
    attributes: { domain, result }
  })

/** Why a fetch failed: `connect` moves on to the host's next address, the others end the fetch. */
interface FetchFailure {
  readonly stage: "connect" | "response"
  readonly detail: string
}

/** `text/plain`, with or without parameters (§3.3: only the media type counts). */
const isTextPlain = (contentType: string | undefined) => contentType?.split(";")[0]?.trim().toLowerCase() === "text/plain"

/** One GET of the policy file from `address`, verified for `host`. */
interface Resolved {
  readonly port: number
  readonly ca: ReadonlyArray<string | Buffer> | undefined
  readonly localAddress: string | undefined
  readonly timeoutMs: number
  readonly maxBytes: number
  readonly retryFailedMs: number
}

const get = (address: string, host: string, o: Resolved) =>
  Effect.callback<string, FetchFailure>((resume) => {
    let settled = false
    const done = (result: Effect.Effect<string, FetchFailure>) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      req.destroy()
      resume(result)
    }
    const fail = (stage: FetchFailure["stage"], detail: string) => done(Effect.fail({ stage, detail }))
    const req = request({
      host: address,
      port: o.port,
      path: "/.well-known/mta-sts.txt",
      method: "GET",
      // The certificate must be valid for the policy host's name, not for the address dialled.
      servername: host,
      headers: { host: o.port === 443 ? host : `${host}:${o.port}`, accept: "text/plain" },
      rejectUnauthorized: true,
      ...(o.ca !== undefined ? { ca: [...o.ca] } : {}),
      ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}),
      // No shared agent: nothing pooled, nothing cached between fetches (§3.3: no HTTP caching).
      agent: false
    }, (res) => {
      const status = res.statusCode ?? 0
      // §3.3: redirects are not followed; anything but 200 is no policy.
      if (status !== 200) return fail("response", `HTTP ${status}${status >= 300 && status < 400 ? " (redirects are not followed)" : ""}`)
      if (!isTextPlain(res.headers["content-type"])) return fail("response", `Content-Type ${res.headers["content-type"] ?? "(none)"} is not text/plain`)
      const chunks: Array<Buffer> = []
      let size = 0
      res.on("data", (chunk: Buffer) => {
        size += chunk.length
        if (size > o.maxBytes) return fail("response", `the policy is larger than ${o.maxBytes} bytes`)
        chunks.push(chunk)
      })
      res.on("end", () => done(Effect.succeed(Buffer.concat(chunks).toString("utf8"))))
      res.on("error", (e) => fail("response", e.message))
    })
    // Connection and TLS trouble (an untrusted or misnamed certificate too): the next address may do better.
    req.on("error", (e) => fail("connect", e.message))
    const timer = setTimeout(() => fail("connect", `no answer within ${o.timeoutMs} ms`), o.timeoutMs)
    req.end()
    return Effect.sync(() => {
      settled = true
      clearTimeout(timer)
      req.destroy()
    })
  })

export const make = (options: MtaStsOptions = {}): Effect.Effect<MtaSts, never, Dns.Dns> =>
  Effect.gen(function*() {
    const dns = yield* Dns.Dns
    const o: Resolved = {
      port: options.port ?? defaults.port,
      ca: options.ca,
      localAddress: options.localAddress,
      timeoutMs: options.timeoutMs ?? defaults.timeoutMs,
      maxBytes: options.maxBytes ?? defaults.maxBytes,
      retryFailedMs: options.retryFailedMs ?? defaults.retryFailedMs
    }
    const cache = new Map<string, Known & { readonly expiresAt: number }>()
    const failed = new Map<string, { readonly id: string; readonly until: number }>()
    const locks = new Map<string, Semaphore.Semaphore>()
    const lock = (domain: string) => {
      let s = locks.get(domain)
      if (s === undefined) locks.set(domain, s = Semaphore.makeUnsafe(1))
      return s
    }

    /** The policy host's addresses, IPv4 first (as the MX resolver orders them). */
    const addressesOf = (host: string) =>
      Effect.all([Dns.resolveOrEmpty(host, "A"), Dns.resolveOrEmpty(host, "AAAA")], { concurrency: 2 }).pipe(
        Effect.map(([a, aaaa]) => [...a, ...aaaa]),
        Effect.mapError((e): FetchFailure => ({ stage: "connect", detail: e.message })),
        Effect.provideService(Dns.Dns, dns)
      )

    const fetchPolicy = (domain: string) =>
      Effect.gen(function*() {
        const host = `mta-sts.${domain}`
        const addresses = yield* addressesOf(host)
        if (addresses.length === 0) return yield* Effect.fail({ stage: "connect", detail: `${host} has no address` } satisfies FetchFailure)
        const failures: Array<string> = []
        for (const address of addresses) {
          const got = yield* get(address, host, o).pipe(Effect.result)
          if (Result.isSuccess(got)) {
            const parsed = MtaStsPolicy.parsePolicy(got.success)
            if (Result.isFailure(parsed)) return yield* Effect.fail({ stage: "response", detail: `bad policy: ${parsed.failure}` } satisfies FetchFailure)
            return parsed.success
          }
          failures.push(`[${address}]: ${got.failure.detail}`)
          if (got.failure.stage === "response") break
        }
        return yield* Effect.fail({ stage: "connect", detail: `https://${host}:${o.port}: ${failures.join("; ")}` } satisfies FetchFailure)
      })

    const policyFor = (domain: string): Effect.Effect<Known | undefined> =>
      lock(domain).withPermits(1)(Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        let cached = cache.get(domain)
        if (cached !== undefined && cached.expiresAt <= now) {
          cache.delete(domain)
          cached = undefined
        }
        const txt = yield* dns.resolve(`_mta-sts.${domain}`, "TXT").pipe(Effect.result)
        // No record, no usable record, or DNS trouble: the cached policy, if one is live (§3.3).
        if (Result.isFailure(txt)) return cached
        const record = MtaStsPolicy.parseRecord(txt.success)
        if (Result.isFailure(record)) {
          if (txt.success.length > 0) yield* Effect.logDebug(`MTA-STS record of ${domain} not used: ${record.failure}`)
          return cached
        }
        const id = record.success
        if (cached !== undefined && cached.id === id) return cached
        const recent = failed.get(domain)
        if (recent !== undefined && recent.id === id && now < recent.until) return cached
        const fetched = yield* fetchPolicy(domain).pipe(Effect.result)
        if (Result.isFailure(fetched)) {
          failed.set(domain, { id, until: now + o.retryFailedMs })
          yield* Metric.update(fetches(domain, "failed"), 1)
          yield* Effect.logWarning(
            `MTA-STS policy of ${domain} (id ${id}) could not be fetched: ${fetched.failure.detail}; ` +
              (cached !== undefined ? `keeping the cached policy (id ${cached.id}, ${cached.policy.mode})` : "delivering as without MTA-STS")
          )
          return cached
        }
        failed.delete(domain)
        yield* Metric.update(fetches(domain, "fetched"), 1)
        const known = { policy: fetched.success, id, expiresAt: now + fetched.success.maxAgeSeconds * 1000 }
        cache.set(domain, known)
        yield* Effect.logInfo(`MTA-STS policy of ${domain} (id ${id}): ${known.policy.mode}, mx ${known.policy.mx.join(", ") || "(none)"}, max_age ${known.policy.maxAgeSeconds} s`)
        return known
      }).pipe(Effect.annotateLogs({ domain })))

    return { policyFor }
  })
