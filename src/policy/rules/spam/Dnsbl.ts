/**
 * The `dnsbl` rule: refuse clients whose address a DNS blocklist lists (RFC 5782), unless a DNS
 * allowlist (DNSWL) lists them.
 *
 * A client `192.0.2.99` is looked up as `99.2.0.192.<zone>` (IPv6: the 32 reversed nibbles), an
 * A query per zone, all zones at once under one deadline. An answer in 127.0.0.0/8 is a listing;
 * NXDOMAIN or no record is not. A listing adds the zone's weight (default 1) to the client's score;
 * at `threshold` (default 1) the client is refused with
 * `554 5.7.1 Service unavailable; client [IP] blocked using ZONE; <the zone's TXT reason>`, by
 * default at RCPT (so the log has the envelope), or at connect.
 *
 * What is not a listing:
 * - answers in 127.255.255.0/24: Spamhaus's way of saying the query is wrong (a public resolver,
 *   over quota, a typo in the zone name); any answer outside 127.0.0.0/8 (a resolver that rewrites
 *   NXDOMAIN). These are errors: logged loudly (at most once a minute per zone) and the zone is
 *   skipped for this client;
 * - timeouts and server failures: the zone is skipped (fail open). A blocklist we cannot reach
 *   must never refuse mail, nor defer it.
 *
 * RFC 5782 section 5 test entries (127.0.0.2 listed, 127.0.0.1 not) are checked at start and
 * every `testInterval`: a zone that lists everything or nothing, or answers its test entries with
 * an error code, is disabled with a warning until a later check passes. A check that cannot reach
 * the zone leaves it as it was.
 *
 * The lookups run once per session (memoized on the session id, forgotten at close), whatever the
 * number of recipients. Authenticated sessions and trusted networks are skipped (Exemption.ts).
 */
import { Clock, Duration, Effect, Metric, Option, type Scope } from "effect"
import { type Dns, type DnsError, reverseName } from "../../../dns/Dns.ts"
import * as SmtpReply from "../../../protocol/SmtpReply.ts"
import type { ConnectContext, Rule } from "../../Policy.ts"
import * as Verdict from "../../Verdict.ts"
import { exempt, type ExemptionOptions } from "./Exemption.ts"

export interface ZoneOptions {
  readonly zone: string
  /** Added to the score when the client is listed (default 1). */
  readonly weight?: number | undefined
  /** Only these answers count as a listing (e.g. Spamhaus ZEN's `127.0.0.2`–`127.0.0.11`); default any. */
  readonly codes?: ReadonlyArray<string> | undefined
  /** The refusal's text instead of the default; `{ip}`, `{zone}` and `{reason}` are filled in. */
  readonly reply?: string | undefined
}

export interface DnsblOptions extends ExemptionOptions {
  readonly name?: string | undefined
  readonly observe?: boolean | undefined
  /** Blocklists: a zone name, or a zone with its weight, codes or reply. */
  readonly zones: ReadonlyArray<string | ZoneOptions>
  /** Allowlists (DNSWL): a client listed in any of them is not looked up in `zones`. */
  readonly allowZones?: ReadonlyArray<string> | undefined
  /** Score at which the client is refused (default 1: any listing). */
  readonly threshold?: number | undefined
  /** Where to refuse: at RCPT (default: the log has the envelope) or at connect. */
  readonly stage?: "connect" | "rcpt" | undefined
  /** Deadline of all the lookups for one client (default 5 s); a zone that does not answer in time is skipped. */
  readonly timeout?: Duration.Input | undefined
  /** Check the RFC 5782 test entries at start and every `testInterval` (default true). */
  readonly testEntries?: boolean | undefined
  /** Default 1 hour. */
  readonly testInterval?: Duration.Input | undefined
}

export const defaults = {
  threshold: 1,
  stage: "rcpt",
  timeoutMs: 5_000,
  testIntervalMs: 3_600_000
} as const

/** What one zone said about one address. */
export type ZoneAnswer =
  | { readonly _tag: "Listed"; readonly codes: ReadonlyArray<string> }
  | { readonly _tag: "Clean" }
  /** An answer that is not a listing: 127.255.255.0/24 or outside 127.0.0.0/8. */
  | { readonly _tag: "Error"; readonly codes: ReadonlyArray<string> }
  /** Timeout or server failure: we could not find out. */
  | { readonly _tag: "Unreachable"; readonly detail: string }

/** The client's standing, as the rule decided it; `hits` in configured zone order. */
export interface Lookup {
  readonly allowedBy: string | undefined
  readonly hits: ReadonlyArray<{ readonly zone: ZoneOptions; readonly reason: string | undefined }>
  readonly score: number
}

export interface ZoneStatus {
  readonly zone: string
  readonly enabled: boolean
  /** Why the last test-entry check disabled it. */
  readonly problem: string | undefined
}

export interface Dnsbl {
  readonly rule: Rule
  /** The zones and whether their test entries passed. */
  readonly status: () => ReadonlyArray<ZoneStatus>
  /** Runs the test-entry checks now. */
  readonly checkZones: Effect.Effect<void>
  /** The lookups for one address, as the rule makes them. */
  readonly lookup: (ip: string) => Effect.Effect<Lookup>
}

export const lookupsTotal = Metric.counter("incoming_dnsbl_lookups_total", {
  description: "DNSBL/DNSWL lookups by zone and result (listed, clean, error, unreachable)",
  incremental: true
})

export const zoneEnabled = Metric.gauge("incoming_dnsbl_zone_enabled", {
  description: "1 when a DNSBL/DNSWL zone passed its RFC 5782 test entries (or was not checked), 0 when disabled"
})

const resultName = { Listed: "listed", Clean: "clean", Error: "error", Unreachable: "unreachable" } as const
const counters = new Map<string, Metric.Metric<number, unknown>>()
const count = (zone: string, answer: ZoneAnswer) => {
  const key = `${zone}\u0000${answer._tag}`
  let m = counters.get(key)
  if (m === undefined) {
    m = lookupsTotal.pipe(Metric.withAttributes({ zone, result: resultName[answer._tag] }))
    counters.set(key, m)
  }
  return Metric.update(m, 1)
}

/** The name to query for `ip` under `zone` (reversed octets or nibbles), or undefined for a non-address. */
export const queryName = (ip: string, zone: string): string | undefined => {
  const reversed = reverseName(ip)
  return reversed === undefined ? undefined : `${reversed.replace(/\.(?:in-addr|ip6)\.arpa$/, "")}.${zone}`
}

/** 127.255.255.0/24: Spamhaus's error codes (public resolver, over quota, bad zone name). */
export const isErrorCode = (a: string): boolean => a.startsWith("127.255.255.")
const isListingCode = (a: string): boolean => a.startsWith("127.") && !isErrorCode(a)

/** An A answer read as RFC 5782 says (before any `codes` filter). */
export const classify = (addresses: ReadonlyArray<string>): ZoneAnswer => {
  const bad = addresses.filter((a) => !isListingCode(a))
  if (bad.length > 0) return { _tag: "Error", codes: bad }
  return addresses.length === 0 ? { _tag: "Clean" } : { _tag: "Listed", codes: addresses }
}

const answerOf = (e: DnsError): ZoneAnswer =>
  e.retryable ? { _tag: "Unreachable", detail: e.message } : { _tag: "Clean" }

/** Printable ASCII only, bounded: a TXT record goes into our reply line. */
const sanitize = (text: string): string => text.replace(/[^\x20-\x7e]+/g, " ").trim().slice(0, 200)

export const defaultReply = "Service unavailable; client [{ip}] blocked using {zone}"

export const replyFor = (zone: ZoneOptions, ip: string, reason: string | undefined): SmtpReply.SmtpReply => {
  const text = zone.reply !== undefined
    ? zone.reply.replaceAll("{ip}", ip).replaceAll("{zone}", zone.zone).replaceAll("{reason}", reason ?? "")
    : reason === undefined || reason === ""
    ? defaultReply.replace("{ip}", ip).replace("{zone}", zone.zone)
    : `${defaultReply.replace("{ip}", ip).replace("{zone}", zone.zone)}; ${reason}`
  return SmtpReply.make(554, "5.7.1", sanitize(text))
}

const normalizeZone = (z: string | ZoneOptions): ZoneOptions =>
  typeof z === "string" ? { zone: z.replace(/\.$/, "").toLowerCase() } : { ...z, zone: z.zone.replace(/\.$/, "").toLowerCase() }

/** Builds the rule; checks the test entries once (bounded by the deadline) and then every `testInterval` in the scope. */
export const make = Effect.fnUntraced(function*(dns: Dns["Service"], options: DnsblOptions): Effect.fn.Return<Dnsbl, never, Scope.Scope> {
  const zones = options.zones.map(normalizeZone)
  const allowZones = (options.allowZones ?? []).map((z) => normalizeZone(z).zone)
  const threshold = options.threshold ?? defaults.threshold
  const timeout = Duration.fromInputUnsafe(options.timeout ?? defaults.timeoutMs)
  const problems = new Map<string, string>()
  const lastWarned = new Map<string, number>()

  /** Loud, but not once per message: a misconfigured zone would flood the log. */
  const warnErrorCode = (zone: string, ip: string, codes: ReadonlyArray<string>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (now - (lastWarned.get(zone) ?? -Infinity) < 60_000) return Effect.void
      lastWarned.set(zone, now)
      return Effect.logError(
        `DNSBL zone ${zone} answered ${codes.join(", ")} for ${ip}: an error code, not a listing. ` +
          "127.255.255.x means the query was refused: the zone name is wrong, the resolver is a public one the list does not serve " +
          "(Spamhaus refuses those: use your own recursive resolver), or the quota is exceeded. The zone is skipped for this client."
      )
    })

  /** One A query, classified and counted; never fails. */
  const ask = (zone: string, ip: string, budget: Duration.Duration): Effect.Effect<ZoneAnswer> => {
    const name = queryName(ip, zone)
    if (name === undefined) return Effect.succeed({ _tag: "Clean" })
    return dns.resolve(name, "A").pipe(
      Effect.map(classify),
      Effect.catchTag("DnsError", (e) => Effect.succeed(answerOf(e))),
      Effect.timeoutOption(budget),
      Effect.map(Option.getOrElse((): ZoneAnswer => ({ _tag: "Unreachable", detail: `no answer within ${Duration.format(budget)}` }))),
      Effect.tap((answer) => count(zone, answer))
    )
  }

  /** The TXT reason of a listing, within what is left of the deadline; absent on any trouble. */
  const reasonOf = (zone: string, ip: string, deadline: number): Effect.Effect<string | undefined> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const name = queryName(ip, zone)
      if (name === undefined || now >= deadline) return Effect.succeed(undefined)
      return dns.resolve(name, "TXT").pipe(
        Effect.map((records) => records.map((parts) => parts.join("")).join(" ")),
        Effect.timeoutOption(deadline - now),
        Effect.map(Option.getOrUndefined),
        Effect.orElseSucceed(() => undefined)
      )
    })

  const enabled = (zone: string) => !problems.has(zone)

  const lookup = (ip: string): Effect.Effect<Lookup> =>
    Effect.gen(function*() {
      const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(timeout)
      const consider = (zone: string, answer: ZoneAnswer): Effect.Effect<ZoneAnswer> => {
        if (answer._tag === "Error") return Effect.as(warnErrorCode(zone, ip, answer.codes), answer)
        if (answer._tag === "Unreachable") return Effect.as(Effect.logWarning(`DNSBL zone ${zone} skipped for ${ip} (fail open): ${answer.detail}`), answer)
        return Effect.succeed(answer)
      }
      const allow = allowZones.filter(enabled)
      const block = zones.filter((z) => enabled(z.zone))
      // Allow and block zones at once: an allowlisted client then costs no second round trip.
      const [allowAnswers, blockAnswers] = yield* Effect.all([
        Effect.forEach(allow, (zone) => Effect.flatMap(ask(zone, ip, timeout), (a) => consider(zone, a)), { concurrency: "unbounded" }),
        Effect.forEach(block, (z) => Effect.flatMap(ask(z.zone, ip, timeout), (a) => consider(z.zone, a)), { concurrency: "unbounded" })
      ], { concurrency: 2 })
      const allowedAt = allowAnswers.findIndex((a) => a._tag === "Listed")
      if (allowedAt >= 0) return { allowedBy: allow[allowedAt], hits: [], score: 0 }
      const listed = block.filter((z, i) => {
        const a = blockAnswers[i]!
        return a._tag === "Listed" && (z.codes === undefined || a.codes.some((c) => z.codes!.includes(c)))
      })
      const score = listed.reduce((sum, z) => sum + (z.weight ?? 1), 0)
      // Reasons only when they will be shown: a refusal.
      const hits = score >= threshold
        ? yield* Effect.forEach(listed, (zone) => Effect.map(reasonOf(zone.zone, ip, deadline), (reason) => ({ zone, reason })), { concurrency: "unbounded" })
        : listed.map((zone) => ({ zone, reason: undefined }))
      return { allowedBy: undefined, hits, score }
    })

  const verdictOf = (ip: string, found: Lookup): Effect.Effect<Verdict.Verdict> => {
    if (found.allowedBy !== undefined || found.hits.length === 0) return Effect.succeed(Verdict.Continue)
    const zonesListing = found.hits.map((h) => h.zone.zone).join(", ")
    if (found.score < threshold) {
      return Effect.as(Effect.logInfo(`client ${ip} listed by ${zonesListing}: score ${found.score} below threshold ${threshold}`), Verdict.Continue)
    }
    // The reply names the heaviest listing (the first of equals, in configured order).
    const top = found.hits.reduce((a, b) => (b.zone.weight ?? 1) > (a.zone.weight ?? 1) ? b : a)
    return Effect.succeed(Verdict.reject(replyFor(top.zone, ip, top.reason)))
  }

  // Per session: a transaction with ten recipients asks each zone once.
  const sessions = new Map<string, Effect.Effect<Lookup>>()
  const lookupFor = (ctx: ConnectContext) =>
    Effect.suspend(() => {
      const known = sessions.get(ctx.sessionId)
      if (known !== undefined) return known
      return Effect.flatMap(Effect.cached(lookup(ctx.clientAddress)), (once) => {
        sessions.set(ctx.sessionId, once)
        return once
      })
    })

  const decide = (ctx: ConnectContext & { readonly user?: string | undefined }) =>
    exempt(options, ctx) ? Effect.succeed(Verdict.Continue) : Effect.flatMap(lookupFor(ctx), (found) => verdictOf(ctx.clientAddress, found))

  const checkZone = (zone: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      const [listed, unlisted] = yield* Effect.all([ask(zone, "127.0.0.2", timeout), ask(zone, "127.0.0.1", timeout)], { concurrency: 2 })
      const was = problems.get(zone)
      const problem = listed._tag === "Error" || unlisted._tag === "Error"
        ? `answers its test entries with ${[listed, unlisted].flatMap((a) => a._tag === "Error" ? a.codes : []).join(", ")}, ` +
          "an error code (wrong zone name, a public resolver the list refuses, or over quota)"
        : listed._tag === "Clean"
        ? "lists nothing: its RFC 5782 test entry 127.0.0.2 is not listed"
        : unlisted._tag === "Listed"
        ? "lists everything: its RFC 5782 test entry 127.0.0.1 is listed"
        : undefined
      if (listed._tag === "Unreachable" || unlisted._tag === "Unreachable") {
        return yield* Effect.logWarning(`DNSBL zone ${zone}: could not check its test entries (left ${was === undefined ? "enabled" : "disabled"})`)
      }
      if (problem !== undefined) {
        problems.set(zone, problem)
        if (was !== problem) yield* Effect.logError(`DNSBL zone ${zone} disabled: it ${problem}`)
      } else if (was !== undefined) {
        problems.delete(zone)
        yield* Effect.logWarning(`DNSBL zone ${zone} enabled again: its test entries answer as RFC 5782 says`)
      }
      yield* Metric.update(zoneEnabled.pipe(Metric.withAttributes({ zone })), problems.has(zone) ? 0 : 1)
    })

  const allZones = [...new Set([...zones.map((z) => z.zone), ...allowZones])]
  const checkZones = Effect.forEach(allZones, checkZone, { concurrency: "unbounded", discard: true })

  if (options.testEntries !== false) {
    yield* checkZones
    const every = Duration.fromInputUnsafe(options.testInterval ?? defaults.testIntervalMs)
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.sleep(every), checkZones)))
  }

  const stage = options.stage ?? defaults.stage
  const forget = (ctx: ConnectContext) => Effect.sync(() => void sessions.delete(ctx.sessionId))
  const rule: Rule = {
    name: options.name ?? "dnsbl",
    observe: options.observe,
    ...(stage === "connect" ? { onConnect: decide } : { onRcptTo: decide }),
    onClose: forget
  }
  return {
    rule,
    status: () => allZones.map((zone) => ({ zone, enabled: enabled(zone), problem: problems.get(zone) })),
    checkZones,
    lookup
  }
})
