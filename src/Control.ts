/**
 * Control of a running server: `reload` applies new options without dropping open connections
 * or touching queued mail — recipient authority (domains, trusted networks, mailboxes), policy
 * rules, and per-listener limits and TLS certificates (new connections get the new ones).
 *
 * Everything is checked before anything changes: a bad certificate or network fails the reload
 * and the running configuration stays. What needs a restart (a listener's address, mode or TLS
 * mode, listeners added or removed, queue, delivery routes and adapters) is not applied and is
 * listed in the report, so an operator knows.
 */
import { hostname as osHostname } from "node:os"
import { resolve } from "node:path"
import { Context, Data, Effect, Layer } from "effect"
import * as AcmeFiles from "./acme/ListenerFiles.ts"
import { defaultDataDir, type IncomingOptions } from "./IncomingOptions.ts"
import { PolicySwap } from "./policy/Policy.ts"
import { type RelayConfigError, RelaySwap, parseNetworks } from "./policy/Relay.ts"
import type { ListenError } from "./smtp/ListenError.ts"
import { Listeners } from "./smtp/Listener.ts"

export interface ReloadReport {
  /** Settings left as they were because they need a restart. */
  readonly restartNeeded: ReadonlyArray<string>
}

/** Why a reload was refused; whatever the reason, nothing was changed. */
export type ReloadErrorReason =
  /** A trusted network that is not an IP address or CIDR range. */
  | { readonly _tag: "BadNetwork"; readonly network: string }
  /** A listener's new settings cannot be used (a certificate or key that does not load); `detail` names it. */
  | { readonly _tag: "BadListener"; readonly listener: string; readonly detail: string }

export class ReloadError extends Data.TaggedError("ReloadError")<{
  readonly reason: ReloadErrorReason
  readonly cause?: RelayConfigError | ListenError | undefined
}> {
  override get message(): string {
    const r = this.reason
    const why = r._tag === "BadNetwork"
      ? `trusted network "${r.network}" is not an IP address or CIDR range`
      : r.detail
    return `reload refused, the running configuration stays: ${why}`
  }
}

const fromRelay = (e: RelayConfigError) => new ReloadError({ reason: { _tag: "BadNetwork", network: e.reason.network }, cause: e })

export class Control extends Context.Service<Control, {
  readonly reload: (options: IncomingOptions) => Effect.Effect<ReloadReport, ReloadError>
}>()("incoming/Control") {}

export const make = Effect.gen(function*() {
  const listeners = yield* Listeners
  const relay = yield* RelaySwap
  const policy = yield* PolicySwap
  const reload = Effect.fn("Control.reload")(function*(options: IncomingOptions) {
    // Validate what can fail before changing anything.
    yield* parseNetworks(options.relay?.trustedNetworks ?? []).pipe(Effect.mapError(fromRelay))
    // ACME listeners name the manager's files, as at start (the managed names need a restart to change).
    const inputs = AcmeFiles.resolve(options.listeners, options.acme, resolve(options.dataDir ?? defaultDataDir), options.hostname ?? osHostname()).listeners
    const notes = yield* listeners.reconfigure(inputs).pipe(
      Effect.mapError((e) =>
        new ReloadError({
          reason: { _tag: "BadListener", listener: e.listener, detail: e.message },
          cause: e
        })
      )
    )
    yield* relay.replace({ domains: options.domains, ...options.relay }).pipe(Effect.mapError(fromRelay))
    yield* policy.replace(options.policies?.rules ?? [], { timeout: options.policies?.timeoutMs })
    yield* Effect.logInfo(`configuration reloaded${notes.length > 0 ? `; needs a restart: ${notes.join("; ")}` : ""}`)
    return { restartNeeded: notes }
  })
  return Control.of({ reload })
})

export const layer: Layer.Layer<Control, never, Listeners | RelaySwap | PolicySwap> = Layer.effect(Control, make)
