/**
 * Recipient authority: which recipients are ours, and who may relay to the rest.
 *
 * This is deliberately separate from the policy rules (guarantee 5, no open relay): a recipient
 * outside the local domains is refused unless the session is authenticated or comes from a
 * trusted network, and no rule configuration can switch that off by accident.
 */
import { Context, Effect, Layer } from "effect"
import * as Address from "../smtp/Address.ts"

export interface RelayOptions {
  /** Domains we accept mail for; the first is the primary (used for bare `postmaster`). */
  readonly domains: ReadonlyArray<string>
}

export type RcptDecision =
  | { readonly _tag: "Local"; readonly address: string }
  | { readonly _tag: "Relay"; readonly address: string }
  | { readonly _tag: "Denied" }
  | { readonly _tag: "BadAddress" }

export class Relay extends Context.Service<Relay, {
  readonly primaryDomain: string
  readonly isLocalDomain: (domain: string) => boolean
  /** Decides one RCPT; `authenticated` covers AUTH and trusted networks. */
  readonly checkRecipient: (address: string, client: { readonly authenticated: boolean }) => Effect.Effect<RcptDecision>
}>()("incoming/Relay") {}

export const make = (options: RelayOptions): Relay["Service"] => {
  const domains = new Set(options.domains.map((d) => d.toLowerCase()))
  const primaryDomain = options.domains[0]?.toLowerCase() ?? "localhost"
  const isLocalDomain = (d: string) => domains.has(d.toLowerCase())
  return Relay.of({
    primaryDomain,
    isLocalDomain,
    checkRecipient: (address, client) =>
      Effect.sync((): RcptDecision => {
        const m = Address.parse(address)
        if (m === undefined) return { _tag: "BadAddress" }
        if (m.domain === "") return { _tag: "Local", address: `${m.local}@${primaryDomain}` }
        if (isLocalDomain(m.domain)) return { _tag: "Local", address: Address.toString(m) }
        return client.authenticated ? { _tag: "Relay", address: Address.toString(m) } : { _tag: "Denied" }
      })
  })
}

export const layer = (options: RelayOptions): Layer.Layer<Relay> => Layer.succeed(Relay, make(options))
