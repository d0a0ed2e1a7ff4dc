/**
 * The `greylist` rule: defer the first attempt of an unknown (client network, sender, recipient)
 * triplet, and let the retry through. Real MTAs retry; much spamware does not.
 *
 * At RCPT, for each recipient:
 * - an unknown triplet (or one whose retry window or lifetime is over) is recorded and gets
 *   `451 4.7.1 Greylisted, try again in N seconds`;
 * - a retry before `delay` (default 5 min) is deferred again (the clock is not restarted);
 * - a retry after `delay` and within `retryWindow` (default 2 days) passes, and the triplet is
 *   remembered as passed for `lifetime` (default 35 days) after it was last seen;
 * - a client network that passed `autoAllow` triplets (default 5) is not greylisted any more
 *   (for `lifetime` after it was last seen).
 *
 * The client is its network: the /24 of an IPv4 address, the /64 of an IPv6 one (big senders retry
 * from another host of the same pool). Addresses are compared case-folded. Networks in
 * `allowNetworks`, senders in `allowSenderDomains` (and their subdomains), authenticated sessions
 * and trusted networks are never greylisted.
 *
 * State is in a `GreylistStore` (GreylistStore.ts), pruned every `sweepInterval` and bounded to
 * `maxEntries` triplets. A store that fails lets the mail through with a warning: greylisting is
 * a filter, not a gate, and guarantee 4 forbids a 5xx for our trouble. Time is Effect's Clock.
 */
import { Clock, Duration, Effect, Metric, type Scope } from "effect"
import ipaddr from "ipaddr.js"
import * as Address from "../../../protocol/Address.ts"
import * as SmtpReply from "../../../protocol/SmtpReply.ts"
import type { RcptContext, Rule } from "../../Policy.ts"
import { inNetworks, type Network, parseNetwork } from "../../Relay.ts"
import * as Verdict from "../../Verdict.ts"
import { exempt, type ExemptionOptions } from "./Exemption.ts"
import type { GreylistStore, GreylistStoreError } from "./GreylistStore.ts"

export interface GreylistOptions extends ExemptionOptions {
  readonly name?: string | undefined
  readonly observe?: boolean | undefined
  /** How long a new triplet must wait before a retry passes (default 5 minutes). */
  readonly delay?: Duration.Input | undefined
  /** How long after the first attempt a retry still counts (default 2 days). */
  readonly retryWindow?: Duration.Input | undefined
  /** How long a passed triplet (and an auto-allowed client) is remembered after last seen (default 35 days). */
  readonly lifetime?: Duration.Input | undefined
  /** Passed triplets after which a client network is no longer greylisted (default 5; 0: never). */
  readonly autoAllow?: number | undefined
  /** Clients never greylisted: CIDR ranges or addresses. */
  readonly allowNetworks?: ReadonlyArray<string> | undefined
  /** Senders never greylisted: domains, each with its subdomains. */
  readonly allowSenderDomains?: ReadonlyArray<string> | undefined
  /** Prefix lengths of the client network (default 24 and 64). */
  readonly ipv4Prefix?: number | undefined
  readonly ipv6Prefix?: number | undefined
  /** Triplets kept at most (default 1 000 000); beyond, the waiting ones seen least recently go first. */
  readonly maxEntries?: number | undefined
  /** How often stale records are pruned (default 1 hour). */
  readonly sweepInterval?: Duration.Input | undefined
}

export const defaults = {
  delayMs: 5 * 60_000,
  retryWindowMs: 2 * 86_400_000,
  lifetimeMs: 35 * 86_400_000,
  autoAllow: 5,
  ipv4Prefix: 24,
  ipv6Prefix: 64,
  maxEntries: 1_000_000,
  sweepIntervalMs: 3_600_000
} as const

export const greylisted = (seconds: number) => SmtpReply.make(451, "4.7.1", `Greylisted, try again in ${seconds} seconds`)

export type Outcome = "new" | "early" | "passed" | "known" | "auto_allowed" | "allowed" | "store_error"

export const resultsTotal = Metric.counter("incoming_greylist_results_total", {
  description: "greylist decisions: new (deferred), early (deferred), passed, known, auto_allowed, allowed, store_error",
  incremental: true
})

const counters = new Map<Outcome, Metric.Metric<number, unknown>>()
const count = (outcome: Outcome) => {
  let m = counters.get(outcome)
  if (m === undefined) {
    m = resultsTotal.pipe(Metric.withAttributes({ result: outcome }))
    counters.set(outcome, m)
  }
  return Metric.update(m, 1)
}

/** The client's network as a key: `192.0.2.0/24`, `2001:db8:1:2::/64`. Non-addresses are their own key. */
export const networkKey = (ip: string, ipv4Prefix: number = defaults.ipv4Prefix, ipv6Prefix: number = defaults.ipv6Prefix): string => {
  if (!ipaddr.isValid(ip)) return ip
  const addr = ipaddr.process(ip)
  const bits = addr.kind() === "ipv4" ? ipv4Prefix : ipv6Prefix
  const bytes = addr.toByteArray()
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8))
    bytes[i] = bytes[i]! & (0xff << (8 - keep)) & 0xff
  }
  return `${ipaddr.fromByteArray(bytes).toString()}/${bits}`
}

/** The triplet's key: network, sender, recipient, case-folded (`<>` is the empty sender). */
export const tripletKey = (network: string, sender: string, recipient: string): string =>
  `${network}\u0000${(Address.normalize(sender) ?? sender).toLowerCase()}\u0000${(Address.normalize(recipient) ?? recipient).toLowerCase()}`

const domainOf = (address: string): string => address.slice(address.lastIndexOf("@") + 1).toLowerCase()

export interface Greylist {
  readonly rule: Rule
  /** Runs one prune now; returns how many records went. */
  readonly prune: Effect.Effect<number, GreylistStoreError>
}

/** Builds the rule over `store`; prunes every `sweepInterval` in the scope. */
export const make = Effect.fnUntraced(function*(store: GreylistStore, options: GreylistOptions = {}): Effect.fn.Return<Greylist, never, Scope.Scope> {
  const ms = (d: Duration.Input | undefined, fallback: number) => d === undefined ? fallback : Duration.toMillis(Duration.fromInputUnsafe(d))
  const delay = ms(options.delay, defaults.delayMs)
  const retryWindow = ms(options.retryWindow, defaults.retryWindowMs)
  const lifetime = ms(options.lifetime, defaults.lifetimeMs)
  const autoAllow = options.autoAllow ?? defaults.autoAllow
  const maxEntries = options.maxEntries ?? defaults.maxEntries
  const ipv4Prefix = options.ipv4Prefix ?? defaults.ipv4Prefix
  const ipv6Prefix = options.ipv6Prefix ?? defaults.ipv6Prefix
  // Load.ts has checked every entry; one that still does not parse allows nothing.
  const networks = (options.allowNetworks ?? []).map((n) => parseNetwork(n.trim())).filter((n): n is Network => n !== undefined)
  const senderDomains = (options.allowSenderDomains ?? []).map((d) => d.toLowerCase().replace(/^\.|\.$/g, ""))
  const senderAllowed = (sender: string) => {
    if (sender === "") return false
    const domain = domainOf(sender)
    return senderDomains.some((d) => domain === d || domain.endsWith(`.${d}`))
  }

  /** The outcome, and for a deferral how long is left of the delay (ms). */
  type Decision = { readonly outcome: Outcome; readonly waitMs?: number }
  const decide = (ctx: RcptContext): Effect.Effect<Decision, GreylistStoreError> =>
    Effect.gen(function*() {
      if (inNetworks(networks, ctx.clientAddress) || senderAllowed(ctx.mailFrom)) return { outcome: "allowed" }
      const now = yield* Clock.currentTimeMillis
      const network = networkKey(ctx.clientAddress, ipv4Prefix, ipv6Prefix)
      const client = autoAllow > 0 ? yield* store.getClient(network) : undefined
      if (client !== undefined && client.passes >= autoAllow && now - client.lastSeen <= lifetime) {
        yield* store.putClient(network, { passes: client.passes, lastSeen: now })
        return { outcome: "auto_allowed" }
      }
      const key = tripletKey(network, ctx.mailFrom, ctx.rcptTo)
      const seen = yield* store.getTriplet(key)
      if (seen?.passedAt !== undefined && now - seen.lastSeen <= lifetime) {
        yield* store.putTriplet(key, { ...seen, lastSeen: now })
        return { outcome: "known" }
      }
      if (seen === undefined || seen.passedAt !== undefined || now - seen.firstSeen > retryWindow) {
        yield* store.putTriplet(key, { firstSeen: now, lastSeen: now, passedAt: undefined })
        return { outcome: "new", waitMs: delay }
      }
      if (now - seen.firstSeen < delay) {
        yield* store.putTriplet(key, { ...seen, lastSeen: now })
        return { outcome: "early", waitMs: delay - (now - seen.firstSeen) }
      }
      yield* store.putTriplet(key, { firstSeen: seen.firstSeen, lastSeen: now, passedAt: now })
      const passes = client !== undefined && now - client.lastSeen <= lifetime ? client.passes + 1 : 1
      yield* store.putClient(network, { passes, lastSeen: now })
      return { outcome: "passed" }
    })

  const onRcptTo = (ctx: RcptContext): Effect.Effect<Verdict.Verdict> =>
    exempt(options, ctx) ? Effect.succeed(Verdict.Continue) : decide(ctx).pipe(
      Effect.catchTag("GreylistStoreError", (e) =>
        Effect.as(Effect.logWarning(`greylist store failed, letting the recipient through: ${e.message}`), { outcome: "store_error" } as Decision)),
      Effect.tap(({ outcome }) => count(outcome)),
      Effect.map(({ waitMs }) => waitMs === undefined ? Verdict.Continue : Verdict.defer(greylisted(Math.max(1, Math.ceil(waitMs / 1000)))))
    )

  const prune = Effect.flatMap(Clock.currentTimeMillis, (now) =>
    store.prune({ pendingFirstSeen: now - retryWindow, passedLastSeen: now - lifetime }, maxEntries))

  const every = Duration.millis(ms(options.sweepInterval, defaults.sweepIntervalMs))
  yield* Effect.forkScoped(Effect.forever(Effect.andThen(
    Effect.sleep(every),
    prune.pipe(Effect.catchTag("GreylistStoreError", (e) => Effect.logWarning(`greylist prune failed: ${e.message}`)))
  )))

  return {
    rule: { name: options.name ?? "greylist", observe: options.observe, onRcptTo },
    prune
  }
})
