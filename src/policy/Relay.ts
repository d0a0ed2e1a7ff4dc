/**
 * Recipient authority: which recipients are ours, and who may relay to the rest.
 *
 * This is deliberately separate from the policy rules (guarantee 5, no open relay): a recipient
 * outside the local domains is refused (554 5.7.1) unless the session is authenticated or its
 * client address is in a trusted network, and no rule configuration can switch that off by
 * accident — a rule's `Accept` ends the rule pipeline, never this check. Even then it is relayed
 * only when delivery has a way off-site for it (`relayRoute`, from the delivery adapter):
 * otherwise 550 5.7.1, since the alternative is filing mail for someone@gmail.com in a local
 * mailbox while the sender believes it was sent.
 *
 * Local domains come from a static list and, optionally, a host-app Effect. A local recipient
 * can be checked against a static mailbox list and/or a lookup Effect (unknown → 550 5.1.1);
 * `postmaster` is always accepted (RFC 5321 4.5.1). A failing lookup never becomes a 5xx: it is
 * a refusal with 451 4.3.0 so the sender retries. `Relay.make({ domains })` behaves as before.
 */
import ipaddr from "ipaddr.js"
import { Data, Context, Effect, Layer } from "effect"
import * as Address from "../protocol/Address.ts"
import * as SmtpReply from "../protocol/SmtpReply.ts"

export interface RelayOptions {
  /** Domains we accept mail for; the first is the primary (used for bare `postmaster`). */
  readonly domains: ReadonlyArray<string>
  /** Host-app decision for domains not in `domains` (e.g. a database of hosted domains). */
  readonly localDomain?: ((domain: string) => Effect.Effect<boolean, unknown>) | undefined
  /** Known mailboxes of the local domains (case-insensitive); when set, others get 550 5.1.1. */
  readonly recipients?: ReadonlyArray<string> | undefined
  /** Host-app mailbox lookup, consulted for local recipients not in `recipients`. */
  readonly lookupRecipient?: ((address: string) => Effect.Effect<boolean, unknown>) | undefined
  /** Client networks allowed to relay without AUTH, as CIDR (`10.0.0.0/8`, `::1/128`) or single addresses. */
  readonly trustedNetworks?: ReadonlyArray<string> | undefined
  /**
   * Whether a recipient outside the local domains can be delivered off-site (by an SMTP relay).
   * `Incoming.layer` asks the delivery adapter (`DeliveryAdapter.deliversOffSite`). Absent or
   * false: relaying is refused with 550 5.7.1 even for clients allowed to relay.
   */
  readonly relayRoute?: ((address: string) => boolean) | undefined
}

export type DeniedReason = "Relay" | "UnknownMailbox" | "LookupFailed"

export type RcptDecision =
  | { readonly _tag: "Local"; readonly address: string }
  | { readonly _tag: "Relay"; readonly address: string }
  /** Refused; `reply` is what to send (554 5.7.1 relay, 550 5.1.1 unknown, 451 4.3.0 lookup failure). */
  | { readonly _tag: "Denied"; readonly reason: DeniedReason; readonly reply: SmtpReply.SmtpReply }
  | { readonly _tag: "BadAddress" }

export interface RelayClient {
  /** The session did AUTH. (Older callers also set it for trusted networks; still honoured.) */
  readonly authenticated: boolean
  /** Client IP, checked against `trustedNetworks`. */
  readonly clientAddress?: string | undefined
}

export class Relay extends Context.Service<Relay, {
  readonly primaryDomain: string
  readonly isLocalDomain: (domain: string) => boolean
  /** Whether `ip` is in a trusted network. */
  readonly isTrusted: (ip: string) => boolean
  /** Decides one RCPT. */
  readonly checkRecipient: (address: string, client: RelayClient) => Effect.Effect<RcptDecision>
}>()("incoming/Relay") {}

export class RelayConfigError extends Data.TaggedError("RelayConfigError")<{
  readonly reason: { readonly _tag: "BadNetwork"; readonly network: string }
}> {
  override get message(): string {
    return `trusted network "${this.reason.network}" is not an IP address or CIDR range`
  }
}

export const unknownMailbox = SmtpReply.make(550, "5.1.1", "No such user here")
export const noRelayRoute = SmtpReply.make(550, "5.7.1", "Relaying not available: no route to other domains here")
export const lookupFailed = SmtpReply.make(451, "4.3.0", "Recipient lookup failed, try again later")

/** A CIDR range: base address and prefix length. */
export type Network = readonly [ipaddr.IPv4 | ipaddr.IPv6, number]

/** One CIDR range or single address; `undefined` when it is neither. */
export const parseNetwork = (network: string): Network | undefined => {
  try {
    if (network.includes("/")) return ipaddr.parseCIDR(network)
    const ip = ipaddr.parse(network)
    return [ip, ip.kind() === "ipv4" ? 32 : 128]
  } catch {
    return undefined
  }
}

/** Parses a trusted-network list, for config validation. */
export const parseNetworks = (networks: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<Network>, RelayConfigError> =>
  Effect.forEach(networks, (n) => {
    const parsed = parseNetwork(n.trim())
    return parsed === undefined ? Effect.fail(new RelayConfigError({ reason: { _tag: "BadNetwork", network: n } })) : Effect.succeed(parsed)
  })

/** Whether `ip` (v4, v6 or v4-mapped v6 as Node reports it) is inside one of `networks`. */
export const inNetworks = (networks: ReadonlyArray<Network>, ip: string): boolean => {
  if (networks.length === 0 || !ipaddr.isValid(ip)) return false
  // `::ffff:10.0.0.1` (a v4 client on a dual-stack socket) must match `10.0.0.0/8`.
  const addr = ipaddr.process(ip)
  return networks.some(([range, bits]) => addr.kind() === range.kind() && addr.match(range, bits))
}

/**
 * Builds the service. Throws `RelayConfigError` on a malformed trusted network (use
 * `layerChecked` or `parseNetworks` to get it as a typed failure).
 */
export const make = (options: RelayOptions): Relay["Service"] => {
  // Canonical forms (A-labels), as envelope addresses carry them.
  const domains = new Set(options.domains.map(Address.domainKey))
  const primaryDomain = options.domains[0] === undefined ? "localhost" : Address.domainKey(options.domains[0])
  const isLocalDomain = (d: string) => domains.has(Address.domainKey(d))
  const networks = (options.trustedNetworks ?? []).map((n) => {
    const parsed = parseNetwork(n.trim())
    if (parsed === undefined) throw new RelayConfigError({ reason: { _tag: "BadNetwork", network: n } })
    return parsed
  })
  const isTrusted = (ip: string) => inNetworks(networks, ip)
  const mailboxes = options.recipients === undefined ? undefined : new Set(options.recipients.map(Address.mailboxKey))
  const checksMailboxes = mailboxes !== undefined || options.lookupRecipient !== undefined
  const denied = (reason: DeniedReason, reply: SmtpReply.SmtpReply): RcptDecision => ({ _tag: "Denied", reason, reply })

  // A failing host-app Effect is our problem, not the sender's: refuse with a 4xx.
  const lookup = (f: Effect.Effect<boolean, unknown>): Effect.Effect<"yes" | "no" | "failed"> =>
    f.pipe(
      Effect.map((found) => (found ? "yes" as const : "no" as const)),
      Effect.catchCause((cause) => Effect.as(Effect.logWarning("recipient authority lookup failed", cause), "failed" as const))
    )

  // A plain answer when the lists decide, an effect only when a host lookup has to run.
  type Found = "yes" | "no" | "failed"
  const isLocal = (domain: string): Found | Effect.Effect<Found> =>
    isLocalDomain(domain) ? "yes" : options.localDomain === undefined
      ? "no"
      : lookup(Effect.suspend(() => options.localDomain!(domain.toLowerCase())))

  const mailboxExists = (address: string): Found | Effect.Effect<Found> => {
    const m = Address.parse(address)
    if (!checksMailboxes || (m !== undefined && Address.isPostmaster(m))) return "yes"
    if (mailboxes?.has(Address.mailboxKey(address)) === true) return "yes"
    return options.lookupRecipient === undefined ? "no" : lookup(Effect.suspend(() => options.lookupRecipient!(address)))
  }

  // Decided without an effect when no host lookup is involved: `Effect.succeed` is an Exit, which
  // lets the session answer RCPT without forking a fiber (the common case on a busy MX).
  const checkRecipient = (address: string, client: RelayClient): Effect.Effect<RcptDecision> => {
    const m = Address.parse(address)
    if (m === undefined) return Effect.succeed({ _tag: "BadAddress" })
    const localDomain = m.domain === "" ? "yes" : isLocal(m.domain)
    const whenLocal = (local: "yes" | "no" | "failed"): Effect.Effect<RcptDecision> => {
      if (local === "failed") return Effect.succeed(denied("LookupFailed", lookupFailed))
      if (local === "yes") {
        const full = m.domain === "" ? `${m.local}@${primaryDomain}` : Address.toString(m)
        const exists = mailboxExists(full)
        const decide = (found: "yes" | "no" | "failed"): RcptDecision =>
          found === "failed"
            ? denied("LookupFailed", lookupFailed)
            : found === "yes"
            ? { _tag: "Local", address: full }
            : denied("UnknownMailbox", unknownMailbox)
        return typeof exists === "string" ? Effect.succeed(decide(exists)) : Effect.map(exists, decide)
      }
      const mayRelay = client.authenticated || (client.clientAddress !== undefined && isTrusted(client.clientAddress))
      if (!mayRelay) return Effect.succeed(denied("Relay", SmtpReply.relayDenied))
      const to = Address.toString(m)
      return Effect.succeed(options.relayRoute?.(to) === true ? { _tag: "Relay", address: to } : denied("Relay", noRelayRoute))
    }
    return typeof localDomain === "string" ? whenLocal(localDomain) : Effect.flatMap(localDomain, whenLocal)
  }

  return Relay.of({ primaryDomain, isLocalDomain, isTrusted, checkRecipient })
}

/** The reply for a refused decision (`undefined` when the recipient is accepted). */
export const replyOf = (decision: RcptDecision): SmtpReply.SmtpReply | undefined =>
  decision._tag === "Denied"
    ? decision.reply
    : decision._tag === "BadAddress"
    ? SmtpReply.badRecipientSyntax("Bad recipient address syntax")
    : undefined

export const layer = (options: RelayOptions): Layer.Layer<Relay> => Layer.sync(Relay, () => make(options))

/** Like `layer`, with a malformed trusted network as a typed failure. */
export const layerChecked = (options: RelayOptions): Layer.Layer<Relay, RelayConfigError> =>
  Layer.effect(
    Relay,
    Effect.map(parseNetworks(options.trustedNetworks ?? []), () => make(options))
  )

/** Replaces the recipient authority of a running server (reload); sessions see it at their next RCPT. */
export class RelaySwap extends Context.Service<RelaySwap, {
  /** Validates first: a malformed network fails and changes nothing. */
  readonly replace: (options: RelayOptions) => Effect.Effect<void, RelayConfigError>
}>()("incoming/RelaySwap") {}

/** `layerChecked`, plus `RelaySwap`: the `Relay` delegates to whatever the last `replace` installed. */
export const layerSwappable = (options: RelayOptions): Layer.Layer<Relay | RelaySwap, RelayConfigError> =>
  Layer.effectContext(
    Effect.gen(function*() {
      yield* parseNetworks(options.trustedNetworks ?? [])
      let current = make(options)
      const relay = Relay.of({
        get primaryDomain() {
          return current.primaryDomain
        },
        isLocalDomain: (d) => current.isLocalDomain(d),
        isTrusted: (ip) => current.isTrusted(ip),
        checkRecipient: (address, client) => current.checkRecipient(address, client)
      })
      const swap = RelaySwap.of({
        replace: (next) =>
          Effect.map(parseNetworks(next.trustedNetworks ?? []), () => {
            // A reload changes the lists; where relayed mail can go is the delivery's to say.
            current = make({ ...next, relayRoute: next.relayRoute ?? options.relayRoute })
          })
      })
      return Context.make(Relay, relay).pipe(Context.add(RelaySwap, swap))
    })
  )
