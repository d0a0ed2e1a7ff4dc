/**
 * Reload of running listeners: what a running listener can take (limits, timeouts, its host name,
 * TLS certificates) and what needs a restart (its address, mode or TLS mode, listeners added or
 * removed). Everything is checked — certificates read — before anything changes, and a failure
 * changes nothing. The new settings then replace the old ones as one object: a session reads its
 * listener's settings once per command, so it sees either the old set or the new one, never a
 * mix; the engine reads its limits once per connection, so an open connection keeps its own.
 */
import { Effect, Ref } from "effect"
import { parseNetwork, type Network } from "../policy/Relay.ts"
import type { EngineLimits, IncomingSmtpServer } from "./internal/engine.ts"
import * as Tls from "./internal/tls.ts"
import type { ListenError } from "./ListenError.ts"
import * as ListenerOptions from "./ListenerOptions.ts"

/** A bound listener as a reload sees it. */
export interface Live {
  readonly name: string
  /** The address it is bound to, as shown in errors (`host:port`). */
  readonly address: string
  /** The bound port (the real one when 0 was configured). */
  readonly port: number
  /** The settings in force, read by the listener's sessions at each command. */
  readonly settings: Ref.Ref<ListenerOptions.ListenerOptions>
  readonly server: IncomingSmtpServer
}

/** What the engine enforces per connection, from a listener's settings. */
export const engineLimits = (o: ListenerOptions.ListenerOptions): EngineLimits => ({
  greetingDelayMs: o.greetingDelayMs,
  commandTimeoutMs: o.commandTimeoutMs,
  dataTimeoutMs: o.dataTimeoutMs,
  maxConnectionTimeMs: o.maxConnectionTimeMs,
  maxCommands: o.maxCommands,
  maxErrors: o.maxErrors,
  proxy: o.proxyProtocol === undefined ? undefined : {
    // Checked when the listener starts (`badProxyNetworks`); nothing unparsable gets here.
    trusted: o.proxyProtocol.trusted.map((n) => parseNetwork(n.trim())).filter((n): n is Network => n !== undefined),
    timeoutMs: o.proxyProtocol.timeoutMs
  }
})

/** The entries of `proxyProtocol.trusted` that are not an address or CIDR range. */
export const badProxyNetworks = (o: ListenerOptions.ListenerOptions): ReadonlyArray<string> =>
  (o.proxyProtocol?.trusted ?? []).filter((n) => parseNetwork(n.trim()) === undefined)

interface Plan {
  /** What `next` asks for that this listener cannot change while bound. */
  readonly restartNeeded: ReadonlyArray<string>
  /** Installs the rest. */
  readonly apply: Effect.Effect<void>
}

/** Checks `next` for `live` (reads its certificates); the plan it returns applies it. */
export const prepare = (live: Live, next: ListenerOptions.ListenerInput, hostname: string): Effect.Effect<Plan, ListenError> =>
  Effect.gen(function*() {
    const o = Ref.getUnsafe(live.settings)
    const n = ListenerOptions.resolve({ ...next, name: o.name }, hostname)
    const restartNeeded: Array<string> = []
    if (n.path !== o.path) restartNeeded.push(`${o.name}: socket ${n.path ?? "(none)"}`)
    else if (o.path === undefined && (n.host !== o.host || (next.port !== 0 && next.port !== live.port))) {
      restartNeeded.push(`${o.name}: address ${n.host}:${next.port}`)
    }
    if (n.mode !== o.mode || n.tls.mode !== o.tls.mode || n.allowInsecureAuth !== o.allowInsecureAuth) {
      restartNeeded.push(`${o.name}: mode / TLS mode`)
    }
    // Read and check the certificate now, so a bad file fails the reload before anything changed.
    const certificate = n.tls.mode === o.tls.mode && n.tls.mode !== "disabled" ? yield* Tls.read(n, live.address) : undefined
    const apply = Effect.andThen(
      // Everything but what needs a restart: the address, the mode and the TLS mode stay.
      Ref.update(live.settings, (current) => ({
        ...n,
        name: current.name,
        host: current.host,
        port: current.port,
        path: current.path,
        mode: current.mode,
        allowInsecureAuth: current.allowInsecureAuth,
        tls: certificate === undefined ? current.tls : { ...current.tls, cert: n.tls.cert, key: n.tls.key, sni: n.tls.sni }
      })),
      Effect.sync(() => {
        live.server.limits = engineLimits(n)
        // smtp-server reads these from its own options object per connection / per EHLO: it has
        // no other way to change them.
        live.server.options.size = n.maxSize
        live.server.options.socketTimeout = n.idleTimeoutMs
        live.server.options.name = n.hostname
        if (certificate !== undefined) live.server.updateSecureContext(certificate)
      })
    )
    return { restartNeeded, apply }
  })

/**
 * Applies `inputs` to the running listeners, matched by name; returns what needs a restart. Every
 * listener's plan is made before any is applied, and the plans are applied together without
 * interruption, so a reload is never half done.
 */
export const reconfigure = (
  running: ReadonlyArray<Live>,
  inputs: ReadonlyArray<ListenerOptions.ListenerInput>,
  hostname: string
): Effect.Effect<ReadonlyArray<string>, ListenError> =>
  Effect.gen(function*() {
    const named = inputs.map((i) => ListenerOptions.resolve(i, hostname).name)
    const plans: Array<Plan> = []
    const notes: Array<string> = []
    for (const live of running) {
      const i = named.indexOf(live.name)
      if (i === -1) notes.push(`${live.name}: removed from the configuration (restart to close it)`)
      else plans.push(yield* prepare(live, inputs[i]!, hostname))
    }
    for (const n of named) {
      if (!running.some((live) => live.name === n)) notes.push(`${n}: new listener (restart to bind it)`)
    }
    yield* Effect.uninterruptible(Effect.forEach(plans, (p) => p.apply, { discard: true }))
    return [...notes, ...plans.flatMap((p) => p.restartNeeded.map((x) => `${x} (restart to apply)`))]
  })

/**
 * Re-reads every TLS listener's certificate files as its settings name them now and installs
 * them: the path by which renewed certificates (ACME) reach running listeners. All are read
 * before any is installed; a file that does not load fails the call and changes nothing.
 * Connections already encrypted keep what they negotiated; the next handshake gets the new one.
 */
export const reloadCertificates = (running: ReadonlyArray<Live>): Effect.Effect<void, ListenError> =>
  Effect.gen(function*() {
    const installs: Array<Effect.Effect<void>> = []
    for (const live of running) {
      const o = Ref.getUnsafe(live.settings)
      if (o.tls.mode === "disabled") continue
      const certificate = yield* Tls.read(o, live.address)
      if (certificate !== undefined) installs.push(Effect.sync(() => live.server.updateSecureContext(certificate)))
    }
    yield* Effect.uninterruptible(Effect.all(installs, { discard: true }))
  })
