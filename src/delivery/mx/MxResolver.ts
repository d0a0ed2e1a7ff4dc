/**
 * Where mail for a domain goes (RFC 5321 §5.1), asked through the `Dns` service: the MX hosts in
 * preference order (hosts of equal preference shuffled, so load spreads across them), each with
 * all of its IPv4 and IPv6 addresses; the domain itself as an implicit MX when it has no MX
 * record but has an address; nothing at all for a null MX (RFC 7505: `MX 0 .`) or a domain that
 * does not exist. DNS trouble (a timeout, SERVFAIL) is kept apart from those answers: it means
 * "try later", never "undeliverable".
 */
import { Effect, Random } from "effect"
import * as Dns from "../../dns/Dns.ts"

export interface Host {
  /** The MX host name (the domain itself for an implicit MX). */
  readonly name: string
  readonly preference: number
  /** Its addresses, IPv4 first (the address family every MTA can reach). */
  readonly addresses: ReadonlyArray<string>
}

export type Destination =
  | { readonly _tag: "Hosts"; readonly hosts: ReadonlyArray<Host>; readonly implicit: boolean }
  /** The domain says it takes no mail (RFC 7505): permanent (556 5.1.10). */
  | { readonly _tag: "NullMx" }
  /** The domain does not exist, or has neither MX nor address: permanent (5.1.2). */
  | { readonly _tag: "NoSuchDomain"; readonly detail: string }
  /** We could not find out (DNS trouble, or every MX host's lookup failed): try later. */
  | { readonly _tag: "Trouble"; readonly detail: string }

/** An MX host's addresses; `undefined` when finding out failed (trouble), `[]` when it has none. */
const addressesOf = (name: string): Effect.Effect<ReadonlyArray<string> | undefined, never, Dns.Dns> =>
  Effect.all([Dns.resolveOrEmpty(name, "A"), Dns.resolveOrEmpty(name, "AAAA")], { concurrency: 2, mode: "result" }).pipe(
    Effect.map(([v4, v6]) => {
      const a = v4._tag === "Success" ? v4.success : undefined
      const aaaa = v6._tag === "Success" ? v6.success : undefined
      if (a === undefined && aaaa === undefined) return undefined
      return [...(a ?? []), ...(aaaa ?? [])]
    })
  )

/** Hosts of equal preference in random order, preferences ascending. */
const ordered = (records: ReadonlyArray<Dns.MxRecord>) =>
  Effect.gen(function*() {
    const keyed = yield* Effect.forEach(records, (r) => Effect.map(Random.next, (k) => ({ r, k })))
    return keyed.sort((x, y) => x.r.priority - y.r.priority || x.k - y.k).map(({ r }) => r)
  })

/** The destination of mail for `domain` (an A-label or ASCII name). */
export const resolve = Effect.fn("MxResolver.resolve")(function*(domain: string) {
  const mx = yield* Dns.resolve(domain, "MX").pipe(Effect.result)
  if (mx._tag === "Failure") {
    const error = mx.failure
    if (error.retryable) return { _tag: "Trouble", detail: error.message } satisfies Destination
    if (error.reason._tag === "NotFound") return { _tag: "NoSuchDomain", detail: `${domain} does not exist` } satisfies Destination
    // No MX record: the domain's own address is the implicit MX (RFC 5321 §5.1).
    const addresses = yield* addressesOf(domain)
    if (addresses === undefined) return { _tag: "Trouble", detail: `looking up the addresses of ${domain} failed` } satisfies Destination
    if (addresses.length === 0) return { _tag: "NoSuchDomain", detail: `${domain} has no MX and no address record` } satisfies Destination
    return { _tag: "Hosts", hosts: [{ name: domain, preference: 0, addresses }], implicit: true } satisfies Destination
  }
  const records = mx.success
  // RFC 7505 §3: a single MX of preference 0 whose host is the root (".", which resolvers give as "").
  if (records.length === 1 && Dns.normalizeName(records[0]!.exchange) === "") return { _tag: "NullMx" } satisfies Destination
  const usable = records.filter((r) => Dns.normalizeName(r.exchange) !== "")
  if (usable.length === 0) return { _tag: "NullMx" } satisfies Destination
  const hosts: Array<Host> = []
  let trouble = 0
  for (const r of yield* ordered(usable)) {
    const addresses = yield* addressesOf(r.exchange)
    if (addresses === undefined) trouble++
    else if (addresses.length > 0) hosts.push({ name: Dns.normalizeName(r.exchange), preference: r.priority, addresses })
  }
  if (hosts.length > 0) return { _tag: "Hosts", hosts, implicit: false } satisfies Destination
  // Every MX host lacked an address: trouble if any lookup failed, else a broken domain.
  return trouble > 0
    ? { _tag: "Trouble", detail: `looking up the addresses of ${domain}'s MX hosts failed` } satisfies Destination
    : { _tag: "NoSuchDomain", detail: `no MX host of ${domain} has an address` } satisfies Destination
})
