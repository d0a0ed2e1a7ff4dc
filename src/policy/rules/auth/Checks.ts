/**
 * The email-authentication checks behind the `spf`, `dkim`, `dmarc`, `arc` and `iprev` rules,
 * run with mailauth on our `Dns` service, once per transaction however many rules ask.
 *
 * The rules depend on each other: DMARC needs the SPF result (decided at MAIL) and the DKIM
 * results (from the message), and ARC is read in the same pass over the message as DKIM. So
 * `Checks` memoizes each check per transaction — SPF by session and identities, the message pass
 * by message id, iprev by session — and the rules only read and report. A rule asks for what it
 * needs, so DMARC without an `spf` rule still checks SPF, and the message is read once for DKIM,
 * ARC and DMARC together. A session's entries go when it closes (`forget`); the store is capped.
 *
 * mailauth reports DNS trouble as `temperror`; a check that breaks outright (a bug, an
 * unreadable spool file) fails with `PolicyError`, which the pipeline defers (451).
 */
import * as NodeStream from "@effect/platform-node/NodeStream"
import type { Readable } from "node:stream"
import { Context, Effect, Metric, type Scope, Stream } from "effect"
import type { ARCResult, DKIMVerifyResult, SPFResult } from "mailauth"
import { Dns, reverse } from "../../../dns/Dns.ts"
import * as NodeCompat from "../../../dns/NodeCompat.ts"
import type { AuthResult, AuthResultValue } from "../../../protocol/AuthenticationResults.ts"
import type { DataContext, MailContext } from "../../Policy.ts"
import { PolicyError } from "../../Policy.ts"

export interface ChecksOptions {
  /** Our host name: the SPF `mta`, and the authserv-id. */
  readonly hostname: string
  /** SPF DNS-lookup limit (RFC 7208 4.6.4: 10) and void-lookup limit (2). */
  readonly spfLookupLimit?: number | undefined
  readonly spfVoidLookupLimit?: number | undefined
  /** DKIM / ARC keys shorter than this fail (RFC 8301: 1024). */
  readonly minKeyBits?: number | undefined
  /** Our ARC key: when set, the `arc` rule can seal what it verified (RFC 8617 5.1). */
  readonly arcSeal?: ArcSealKey | undefined
}

export interface ArcSealKey {
  /** `d=` of the seal: the domain publishing `<selector>._domainkey.<domain>`. */
  readonly signingDomain: string
  readonly selector: string
  /** PEM (RSA or Ed25519). */
  readonly privateKey: string
}

/** SPF of the two identities (RFC 7208 2.3, 2.4): HELO (when it is a name) and MAIL FROM. */
export interface SpfOutcome {
  readonly helo: AuthResult | undefined
  readonly mailFrom: AuthResult
  /** The domain whose SPF passed (for DMARC alignment), if it passed. */
  readonly passDomain: string | undefined
}

/** What one pass over the message found. */
export interface MessageOutcome {
  readonly dkim: ReadonlyArray<AuthResult>
  /** Signing domains of the passing signatures, for DMARC. */
  readonly dkimPass: ReadonlyArray<{ readonly id: string | undefined; readonly domain: string }>
  readonly headerFrom: ReadonlyArray<string>
  readonly fromFields: number
  readonly arc: AuthResult
  readonly arcRaw: ARCResult | undefined
  /** mailauth's parse, kept for sealing (its headers, ARC data and seal body hash). */
  readonly verified: DKIMVerifyResult
}

export interface DmarcOutcome {
  readonly result: AuthResult
  /** The policy to apply (`p`, or `sp` / `np` for a subdomain; one level lower with `t=y`); absent without a record. */
  readonly policy: "none" | "quarantine" | "reject" | undefined
  /** The author domain (RFC5322.From). */
  readonly domain: string | undefined
}

/** Messages up to this size are read into one buffer for verification; larger ones are streamed. */
const wholeBelow = 256 * 1024

export const resultsTotal = Metric.counter("incoming_auth_results_total", {
  description: "email authentication results by method (spf, dkim, dmarc, arc, iprev) and result",
  incremental: true
})

const attributed = new Map<string, Metric.Metric<number, unknown>>()
/** Counts results, one per method and result. */
export const record = (results: ReadonlyArray<AuthResult>): Effect.Effect<void> =>
  Effect.forEach(results, (r) => {
    const key = `${r.method}\u0000${r.result}`
    let m = attributed.get(key)
    if (m === undefined) {
      m = resultsTotal.pipe(Metric.withAttributes({ method: r.method, result: r.result }))
      attributed.set(key, m)
    }
    return Metric.update(m, 1)
  }, { discard: true })

const resultValue = (raw: string | undefined): AuthResultValue => {
  switch (raw) {
    case "pass":
    case "fail":
    case "softfail":
    case "neutral":
    case "none":
    case "temperror":
    case "permerror":
    case "policy":
      return raw
    case "temperr":
      return "temperror"
    default:
      return "neutral"
  }
}

const failed = (rule: string, what: string) => (cause: unknown) =>
  new PolicyError({ rule, reason: { _tag: "LookupFailed", detail: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` }, cause })

/**
 * Memoized checks, per session: `forget` drops a session's entries at once. Sessions beyond
 * `maxSessions` drop the oldest; a session keeps at most `perSession` entries (a client sending
 * many messages on one connection), also oldest first.
 */
const sessionStore = (maxSessions: number, perSession: number) => {
  const sessions = new Map<string, Map<string, unknown>>()
  return {
    get: (session: string, key: string): unknown => sessions.get(session)?.get(key),
    set: (session: string, key: string, value: unknown) => {
      let entries = sessions.get(session)
      if (entries === undefined) {
        if (sessions.size >= maxSessions) sessions.delete(sessions.keys().next().value!)
        entries = new Map()
        sessions.set(session, entries)
      }
      if (entries.size >= perSession) entries.delete(entries.keys().next().value!)
      entries.set(key, value)
    },
    forget: (session: string) => void sessions.delete(session)
  }
}

/** The domain of an address (after the last "@"), lower case. */
const domainOf = (address: string): string => address.slice(address.lastIndexOf("@") + 1).toLowerCase()

const isIpLiteral = (helo: string) => /^\[.*\]$/.test(helo) || /^[\d.]+$/.test(helo) || helo.includes(":")

export class Checks extends Context.Service<Checks, {
  readonly hostname: string
  readonly spf: (ctx: MailContext) => Effect.Effect<SpfOutcome, PolicyError>
  readonly message: (ctx: DataContext) => Effect.Effect<MessageOutcome, PolicyError>
  readonly dmarc: (ctx: DataContext) => Effect.Effect<DmarcOutcome, PolicyError>
  readonly iprev: (ctx: MailContext) => Effect.Effect<AuthResult, PolicyError>
  /** Whether a seal key is configured (`seal` returns nothing without one). */
  readonly canSeal: boolean
  readonly seal: (ctx: DataContext, authResults: string) => Effect.Effect<ReadonlyArray<string>, PolicyError>
  /** Drops what was memoized for a session (it closed). */
  readonly forget: (sessionId: string) => Effect.Effect<void>
}>()("incoming/auth/Checks") {}

/** Scoped: closing the scope interrupts the DNS lookups mailauth has in flight. */
export const make = (dns: Dns["Service"], options: ChecksOptions): Effect.Effect<Checks["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    // Loaded here, not at import: mailauth and its dependencies add about a second to the start
    // of every `incoming` command on a busy machine, and only servers with these rules need them.
    const { arc, createSeal, dkimVerify, spf: spfCheck } = yield* Effect.promise(() => import("mailauth"))
    const { evaluateDmarc } = yield* Effect.promise(() => import("mailauth/lib/dmarc/index.js"))
    const resolver = yield* NodeCompat.toPromiseResolver(dns)
    const minBitLength = options.minKeyBits ?? 1024
    const store = sessionStore(10_000, 64)

    /** `compute` run once per session and key; later callers share its result. */
    const memo = <A>(session: string, key: string, compute: () => Effect.Effect<A, PolicyError>): Effect.Effect<A, PolicyError> =>
      Effect.suspend(() => {
        const hit = store.get(session, key) as Effect.Effect<A, PolicyError> | undefined
        if (hit !== undefined) return hit
        return Effect.flatMap(Effect.cached(Effect.suspend(compute)), (cached) => {
          store.set(session, key, cached)
          return cached
        })
      })

    const spfOne = (sender: string, ctx: MailContext, helo: string) =>
      Effect.tryPromise({
        try: () =>
          spfCheck({
            sender,
            ip: ctx.clientAddress,
            helo,
            mta: options.hostname,
            resolver: resolver as never,
            maxResolveCount: options.spfLookupLimit ?? 10,
            maxVoidCount: options.spfVoidLookupLimit ?? 2
          }) as Promise<SPFResult>,
        catch: failed("spf", "SPF check")
      })

    const spf = (ctx: MailContext) =>
      memo(ctx.sessionId, `spf\u0000${ctx.mailFrom}\u0000${ctx.helo ?? ""}`, () =>
        Effect.gen(function*() {
          const helo = ctx.helo ?? ""
          const heloName = helo !== "" && !isIpLiteral(helo) ? helo : undefined
          // The HELO identity (RFC 7208 2.3), checked on its own when it is a name.
          const heloResult = heloName === undefined ? undefined : yield* spfOne("", ctx, heloName)
          // A null sender is checked as postmaster@HELO (RFC 7208 2.4): the same check again.
          const mailResult = ctx.mailFrom === "" && heloResult !== undefined ? heloResult : yield* spfOne(ctx.mailFrom, ctx, helo || `[${ctx.clientAddress}]`)
          const mailValue = resultValue(mailResult.status.result)
          const comment = typeof mailResult.status.comment === "string" ? mailResult.status.comment : undefined
          return {
            helo: heloResult === undefined ? undefined : {
              method: "spf",
              result: resultValue(heloResult.status.result),
              properties: { "smtp.helo": heloName! }
            },
            mailFrom: {
              method: "spf",
              result: mailValue,
              ...(mailValue !== "pass" && comment !== undefined ? { reason: comment } : {}),
              properties: ctx.mailFrom === "" ? { "smtp.helo": helo } : { "smtp.mailfrom": ctx.mailFrom }
            },
            passDomain: mailValue === "pass" ? (ctx.mailFrom === "" ? helo.toLowerCase() : domainOf(ctx.mailFrom)) : undefined
          } satisfies SpfOutcome
        }))

    const message = (ctx: DataContext) =>
      memo(ctx.sessionId, `message\u0000${ctx.messageId ?? ""}`, () =>
        Effect.gen(function*() {
          if (ctx.body === undefined) {
            return yield* new PolicyError({ rule: "dkim", reason: { _tag: "Misconfigured", detail: "the DATA context has no message body" } })
          }
          // A small message is handed over as one buffer (mailauth's dkimVerify alone, 1 KiB: 0.86 ms
          // from a buffer, 1.17 ms from a stream); a large one is streamed, so memory stays bounded.
          const input: Buffer | Readable = ctx.size <= wholeBelow
            ? Buffer.concat(yield* Stream.runCollect(ctx.body).pipe(Effect.mapError(failed("dkim", "reading the message"))))
            : yield* NodeStream.toReadable(ctx.body)
          const verified: DKIMVerifyResult = yield* Effect.tryPromise({
            try: () =>
              dkimVerify(input, {
                resolver: resolver as never,
                minBitLength,
                sender: ctx.mailFrom,
                // With a seal key, the same pass computes the body hash of our ARC-Message-Signature.
                ...(options.arcSeal === undefined ? {} : { seal: { ...options.arcSeal } })
              }),
            catch: failed("dkim", "DKIM verification")
          })
          const signatures = verified.results ?? []
          const dkim: Array<AuthResult> = signatures.length === 0
            ? [{ method: "dkim", result: "none", properties: {} }]
            : signatures.map((s): AuthResult => {
              // mailauth reports a body hash mismatch as neutral; it is a failed verification
              // (RFC 6376 3.7 PERMFAIL, RFC 8601 2.7.1 "fail"), and that is what operators grep for.
              const bodyChanged = s.status.result === "neutral" && /body hash did not verify/.test(String(s.status.comment ?? ""))
              const result = bodyChanged ? "fail" : resultValue(s.status.result)
              return {
                method: "dkim",
                result,
                ...(result !== "pass" && typeof s.status.comment === "string" ? { reason: s.status.comment } : {}),
                properties: {
                  ...(s.signingDomain !== undefined ? { "header.d": s.signingDomain } : {}),
                  ...(s.selector !== undefined ? { "header.s": s.selector } : {}),
                  ...(s.algo !== undefined ? { "header.a": s.algo } : {}),
                  ...(s.signature !== undefined ? { "header.b": s.signature.slice(0, 8) } : {})
                }
              }
            })
          const arcData = verified.arc
          const arcRaw = arcData === undefined ? undefined : yield* Effect.tryPromise({
            try: () => arc(arcData as never, { resolver: resolver as never, minBitLength }),
            catch: failed("arc", "ARC verification")
          })
          const arcValue = resultValue(arcRaw?.status.result ?? "none")
          return {
            dkim,
            dkimPass: signatures.filter((s) => s.status.result === "pass" && s.signingDomain !== undefined).map((s) => ({
              id: s.id,
              domain: s.signingDomain!
            })),
            headerFrom: verified.headerFrom ?? [],
            fromFields: verified.fromFields ?? 0,
            arc: {
              method: "arc",
              result: arcValue,
              ...(arcValue !== "pass" && arcValue !== "none" && typeof arcRaw?.status.comment === "string" ? { reason: arcRaw.status.comment } : {}),
              properties: { "smtp.remote-ip": ctx.clientAddress }
            },
            arcRaw,
            verified
          } satisfies MessageOutcome
        }))

    const dmarc = (ctx: DataContext) =>
      memo(ctx.sessionId, `dmarc\u0000${ctx.messageId ?? ""}`, () =>
        Effect.gen(function*() {
          const found = yield* message(ctx)
          const spfFound = yield* spf(ctx)
          const evaluated = yield* Effect.tryPromise({
            try: () =>
              evaluateDmarc({
                headerFrom: [...found.headerFrom],
                fromFields: found.fromFields,
                spfDomains: spfFound.passDomain === undefined ? [] : [spfFound.passDomain],
                dkimDomains: found.dkimPass.map((d) => ({ ...(d.id === undefined ? {} : { id: d.id }), domain: d.domain })),
                ...(found.arcRaw === undefined ? {} : { arcResult: found.arcRaw }),
                resolver: resolver as never
              }),
            catch: failed("dmarc", "DMARC evaluation")
          })
          const response = evaluated.response
          if (response === false) {
            // No author domain (none) or more than one (permerror, RFC 9989 5.3.1): not evaluated.
            const reason = evaluated.reason
            return {
              result: {
                method: "dmarc",
                result: reason === undefined || reason === "no-author-domain" ? "none" : "permerror",
                ...(reason !== undefined ? { reason } : {}),
                properties: {}
              },
              policy: undefined,
              domain: undefined
            } satisfies DmarcOutcome
          }
          const value = resultValue(response.status.result)
          const from = response.status.header?.from
          const applied = response.status.policy?.dmarc
          const policy = value === "none" || value === "temperror" ? undefined : normalizePolicy(response.policy)
          return {
            result: {
              method: "dmarc",
              result: value,
              properties: {
                ...(from !== undefined ? { "header.from": from } : {}),
                ...(applied !== undefined ? { "policy.dmarc": applied } : {})
              }
            },
            policy,
            domain: from
          } satisfies DmarcOutcome
        }))

    const iprev = (ctx: MailContext) =>
      memo(ctx.sessionId, `iprev\u0000${ctx.clientAddress}`, () =>
        Effect.gen(function*() {
          const ip = ctx.clientAddress
          const report = (result: AuthResultValue, reason?: string): AuthResult => ({
            method: "iprev",
            result,
            ...(reason !== undefined ? { reason } : {}),
            properties: { "policy.iprev": ip }
          })
          const names = yield* Effect.result(reverse(ip).pipe(Effect.provideService(Dns, dns)))
          if (names._tag === "Failure") {
            return names.failure.retryable ? report("temperror", "PTR lookup failed") : report("permerror", "no PTR record")
          }
          // RFC 8601 3: some PTR name must resolve back to the address. Ten names at most.
          const family = ip.includes(":") ? "AAAA" : "A"
          let trouble = false
          for (const name of names.success.slice(0, 10)) {
            const back = yield* Effect.result(dns.resolve(name, family))
            if (back._tag === "Failure") {
              trouble ||= back.failure.retryable
              continue
            }
            if (back.success.some((a) => sameAddress(a, ip))) return report("pass", name.replace(/\.$/, ""))
          }
          return trouble ? report("temperror", "forward lookup failed") : report("fail", "no PTR name resolves back to the address")
        }))

    /**
     * Our ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results carrying
     * `authResults`, the value of our Authentication-Results), as header lines; none without a
     * seal key, or when the chain we received failed (RFC 8617 5.1.2: a failed chain is not sealed
     * further) or sealing failed (logged).
     */
    const seal = (ctx: DataContext, authResults: string) =>
      Effect.gen(function*() {
        if (options.arcSeal === undefined) return []
        const found = yield* message(ctx)
        const status = found.arcRaw?.status
        const cv = status?.result ?? "none"
        if (!(cv === "none" || cv === "pass" || status?.shouldSeal === true)) return []
        const sealed = yield* Effect.tryPromise({
          try: () =>
            createSeal(false, {
              headers: found.verified.headers,
              arc: found.verified.arc,
              seal: { ...found.verified.seal, cv, authResults, signTime: new Date() }
            } as never),
          catch: failed("arc", "ARC sealing")
        })
        if (sealed.errors.length > 0) {
          yield* Effect.logWarning(`ARC sealing failed, the message goes on unsealed: ${JSON.stringify(sealed.errors)}`)
          return []
        }
        return sealed.headers
      })

    const forget = (sessionId: string) => Effect.sync(() => store.forget(sessionId))

    return Checks.of({ hostname: options.hostname, spf, message, dmarc, iprev, canSeal: options.arcSeal !== undefined, seal, forget })
  })

const normalizePolicy = (p: string | undefined): DmarcOutcome["policy"] =>
  p === "reject" || p === "quarantine" || p === "none" ? p : undefined

/** IPv4-mapped IPv6 addresses compare as their IPv4 form. */
const sameAddress = (a: string, b: string) => a.toLowerCase().replace(/^::ffff:/, "") === b.toLowerCase().replace(/^::ffff:/, "")
