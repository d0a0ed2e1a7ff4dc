/**
 * RateLimiter: how many transactions a client IP and a sender may start, and how many recipients
 * of one domain may be given, per sliding window. Over the limit the command is deferred with
 * 450 4.7.1, so a well-behaved sender slows down and retries.
 *
 * Dimensions: `ip` and `sender` are counted at MAIL (one per transaction; the null sender `<>` is
 * not a sender and is counted per IP only), `recipientDomain` at RCPT. Each has its own window
 * table (see internal/SlidingWindow.ts: the count falls as events leave the window, at most
 * `maxEntries` keys per table, least recently used evicted first — which FAILS OPEN for the
 * evicted key). A background sweeper fiber, owned by the scope `make` runs in, drops keys with
 * no event left in the window every `sweepInterval`, so idle clients do not hold memory until
 * eviction. Time comes from Effect's Clock (TestClock in tests).
 */
import { Clock, Duration, Effect, type Scope } from "effect"
import * as Address from "../../protocol/Address.ts"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import * as SlidingWindow from "../internal/SlidingWindow.ts"
import type { Rule } from "../Policy.ts"
import * as Verdict from "../Verdict.ts"

export type Dimension = "ip" | "sender" | "recipientDomain"

export interface DimensionLimit {
  /** Events allowed per window (default: the limiter's `rate`). */
  readonly rate?: number
  readonly window?: Duration.Input
}

export interface RateLimiterOptions {
  readonly name?: string
  readonly observe?: boolean
  /** Events per window per key (default 5). */
  readonly rate?: number
  /** Window length (default 60 s). */
  readonly window?: Duration.Input
  /** Keys tracked per dimension before the least recently used is evicted (default 100 000). */
  readonly maxEntries?: number
  /** How often idle keys are swept (default 60 s). */
  readonly sweepInterval?: Duration.Input
  /** Which dimensions to limit, each optionally with its own rate/window (default: all three). */
  readonly dimensions?: Partial<Record<Dimension, DimensionLimit | boolean>>
  /** Clients that are never limited (e.g. authenticated submission or trusted networks). */
  readonly exempt?: (ctx: { readonly clientAddress: string; readonly user: string | undefined }) => boolean
}

export const defaults = {
  rate: 5,
  window: Duration.seconds(60),
  maxEntries: 100_000,
  sweepInterval: Duration.seconds(60)
} as const

export const rateLimited = SmtpReply.make(450, "4.7.1", "Rate limit exceeded, try again later")

export interface RateLimiter {
  readonly rule: Rule
  /** Keys currently tracked, per dimension. */
  readonly size: (dimension: Dimension) => number
  /** Runs one sweep now; returns how many keys were dropped. */
  readonly sweep: Effect.Effect<number>
}

/** Builds the limiter and starts its sweeper in the current scope (interrupted when it closes). */
export const make = Effect.fnUntraced(function*(options: RateLimiterOptions = {}): Effect.fn.Return<RateLimiter, never, Scope.Scope> {
  const maxEntries = options.maxEntries ?? defaults.maxEntries
  const windowFor = (d: Dimension): SlidingWindow.SlidingWindow | undefined => {
    const setting = options.dimensions?.[d] ?? true
    if (setting === false) return undefined
    const own = setting === true ? {} : setting
    return SlidingWindow.make({
      limit: own.rate ?? options.rate ?? defaults.rate,
      windowMs: Duration.toMillis(Duration.fromInputUnsafe(own.window ?? options.window ?? defaults.window)),
      maxEntries
    })
  }
  const tables: Record<Dimension, SlidingWindow.SlidingWindow | undefined> = {
    ip: windowFor("ip"),
    sender: windowFor("sender"),
    recipientDomain: windowFor("recipientDomain")
  }

  const sweep = Effect.map(Clock.currentTimeMillis, (now) =>
    (tables.ip?.sweep(now) ?? 0) + (tables.sender?.sweep(now) ?? 0) + (tables.recipientDomain?.sweep(now) ?? 0))

  yield* Effect.forkScoped(
    Effect.forever(Effect.andThen(Effect.sleep(options.sweepInterval ?? defaults.sweepInterval), sweep))
  )

  const exempt = (ctx: { readonly clientAddress: string; readonly user: string | undefined }) =>
    options.exempt?.(ctx) === true

  const rule: Rule = {
    name: options.name ?? "rate_limiter",
    observe: options.observe,
    onMailFrom: (ctx) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (exempt(ctx)) return Verdict.Continue
        // Each dimension is charged independently, even when the other is already over: a client
        // rotating senders must still use up its per-IP budget.
        const ipOk = tables.ip?.hit(ctx.clientAddress, now) ?? true
        // Case-folded whole: a spammer must not get a fresh budget per capitalisation of the local part.
        const sender = ctx.mailFrom === "" ? undefined : (Address.normalize(ctx.mailFrom) ?? ctx.mailFrom).toLowerCase()
        const senderOk = sender === undefined ? true : (tables.sender?.hit(sender, now) ?? true)
        return ipOk && senderOk ? Verdict.Continue : Verdict.defer(rateLimited)
      }),
    onRcptTo: (ctx) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (exempt(ctx) || tables.recipientDomain === undefined) return Verdict.Continue
        const domain = Address.parse(ctx.rcptTo)?.domain.toLowerCase() ?? ""
        return tables.recipientDomain.hit(domain, now) ? Verdict.Continue : Verdict.defer(rateLimited)
      })
  }

  return {
    rule,
    size: (d) => tables[d]?.size() ?? 0,
    sweep
  }
})
