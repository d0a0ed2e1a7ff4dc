/**
 * The `Dns` service in the shape Node libraries expect of a resolver: `(name, rrtype) =>
 * Promise`, resolving like `dns.promises.resolve(name, rrtype)` and rejecting with an `Error`
 * whose `code` is node:dns's (`ENOTFOUND`, `ENODATA`, `ETIMEOUT`, `ESERVFAIL`). mailauth tells
 * "no record" (none / permerror) from "could not ask" (temperror) by these codes.
 *
 * The promise runs the lookup as a fiber of a `FiberSet` in the caller's scope (so lookups made
 * by a library still go through our cache, metrics and deadlines, and a shutdown interrupts the
 * ones in flight instead of leaving them unowned).
 */
import { Effect, FiberSet, Result, type Scope } from "effect"
import { type Dns, DnsError, type RecordType, recordTypes } from "./Dns.ts"

export type PromiseResolver = (name: string, rrtype: string) => Promise<Array<unknown>>

/** An Error as node:dns would reject with it. */
export const toNodeError = (e: DnsError): Error & { code: string; hostname: string } =>
  Object.assign(new Error(`query${e.type === "PTR" ? "Ptr" : e.type[0] + e.type.slice(1).toLowerCase()} ${e.code} ${e.name}`), {
    code: e.code,
    hostname: e.name
  })

const cancelled = (name: string) => Object.assign(new Error(`DNS lookup of ${name} interrupted`), { code: "ECANCELLED" })

/** The resolver, its lookups owned by the current scope (closing it interrupts those in flight). */
export const toPromiseResolver = (dns: Dns["Service"]): Effect.Effect<PromiseResolver, never, Scope.Scope> =>
  Effect.map(FiberSet.makeRuntimePromise(), (run) => (name, rrtype) => {
    const type = rrtype.toUpperCase() as RecordType
    if (!recordTypes.includes(type)) {
      // Asked for a type we do not serve (SPF's obsolete "SPF" type, CNAME): nothing there.
      return Promise.reject(toNodeError(new DnsError({ name, type: "TXT", reason: { _tag: "NoData" } })))
    }
    // The typed failure comes back as a value: the rejection is then only interruption.
    return run(Effect.result(dns.resolve(name, type))).then(
      (result) => {
        if (Result.isFailure(result)) throw toNodeError(result.failure)
        return (result.success as ReadonlyArray<unknown>).map((r) => Array.isArray(r) ? [...r] : r)
      },
      () => {
        throw cancelled(name)
      }
    )
  })
