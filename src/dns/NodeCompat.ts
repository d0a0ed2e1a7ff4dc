/**
 * The `Dns` service in the shape Node libraries expect of a resolver: `(name, rrtype) =>
 * Promise`, resolving like `dns.promises.resolve(name, rrtype)` and rejecting with an `Error`
 * whose `code` is node:dns's (`ENOTFOUND`, `ENODATA`, `ETIMEOUT`, `ESERVFAIL`). mailauth tells
 * "no record" (none / permerror) from "could not ask" (temperror) by these codes.
 *
 * The promise runs the lookup as an Effect with the caller's context, so lookups made by a
 * library still go through our cache, metrics and deadlines.
 */
import { type Context, Effect, Exit } from "effect"
import { type Dns, DnsError, type RecordType, recordTypes } from "./Dns.ts"

export type PromiseResolver = (name: string, rrtype: string) => Promise<Array<unknown>>

/** An Error as node:dns would reject with it. */
export const toNodeError = (e: DnsError): Error & { code: string; hostname: string } =>
  Object.assign(new Error(`query${e.type === "PTR" ? "Ptr" : e.type[0] + e.type.slice(1).toLowerCase()} ${e.code} ${e.name}`), {
    code: e.code,
    hostname: e.name
  })

export const toPromiseResolver = (dns: Dns["Service"], context: Context.Context<never>): PromiseResolver => (name, rrtype) => {
  const type = rrtype.toUpperCase() as RecordType
  if (!recordTypes.includes(type)) {
    // Asked for a type we do not serve (SPF's obsolete "SPF" type, CNAME): nothing there.
    return Promise.reject(toNodeError(new DnsError({ name, type: "TXT", reason: { _tag: "NoData" } })))
  }
  return Effect.runPromiseExitWith(context)(dns.resolve(name, type)).then((exit) => {
    if (Exit.isSuccess(exit)) return (exit.value as ReadonlyArray<unknown>).map((r) => Array.isArray(r) ? [...r] : r)
    const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
    if (failure !== undefined && failure._tag === "Fail") throw toNodeError(failure.error)
    throw Object.assign(new Error(`DNS lookup of ${name} interrupted`), { code: "ECANCELLED" })
  })
}
