/**
 * Listeners: bind the configured sockets and run a session per connection.
 *
 * Starting one is three steps: check what it needs (certificates, the AUTH its mode requires),
 * wire the engine's callbacks to the session's hooks through the bridge (smtp/internal/bridge.ts,
 * where every fiber gets its owner), and bind. Its settings live in a `Ref` that a reload swaps
 * (ListenerReload.ts).
 *
 * Drain (closing the layer's scope): stop accepting, answer new commands with 421, let DATA
 * transactions already in progress finish within `drainTimeoutMs`, then interrupt what is left
 * (those clients get 421 and retry), say 421 to idle connections, close them, and wait for the
 * work their closing started (policy `close` hooks, log lines). Deadlines read the `Clock`.
 */
import { chmodSync, lstatSync, rmSync } from "node:fs"
import { type AddressInfo, connect } from "node:net"
import { Clock, Context, Deferred, Effect, Exit, Layer, Ref, References, Scope } from "effect"
import type { SMTPServerOptions } from "smtp-server"
import { Relay } from "../policy/Relay.ts"
import * as Priority from "../protocol/Priority.ts"
import type { MailQueue } from "../queue/MailQueue.ts"
import type { Spool } from "../spool/Spool.ts"
import * as Telemetry from "../telemetry/Telemetry.ts"
import * as AuthHandler from "../auth/AuthHandler.ts"
import * as ListenerModes from "../auth/ListenerMode.ts"
import { type Bridge, makeBridge } from "./internal/bridge.ts"
import * as Commands from "./internal/commands.ts"
import * as Proxy from "./internal/proxy.ts"
import type * as ProxyHeader from "../protocol/ProxyHeader.ts"
import { IncomingSmtpServer } from "./internal/engine.ts"
import * as Tls from "./internal/tls.ts"
import { fromBindError, ListenError } from "./ListenError.ts"
import * as ListenerOptions from "./ListenerOptions.ts"
import * as ListenerReload from "./ListenerReload.ts"
import * as Session from "./Session.ts"
import * as SmtpReply from "../protocol/SmtpReply.ts"

/** Why a listener could not start, exported beside the service that raises it. */
export { ListenError, type ListenErrorReason } from "./ListenError.ts"
export type { ListenerInput, ListenerOptions, TlsOptions } from "./ListenerOptions.ts"

export interface ListenerInfo {
  readonly name: string
  readonly host: string
  /** The bound port (the real one when 0 was configured). */
  readonly port: number
  /** The settings in force (a reload may have changed them since the start). */
  readonly options: ListenerOptions.ListenerOptions
  readonly connections: Effect.Effect<number>
}

/** The bound listeners of this process. */
export class Listeners extends Context.Service<Listeners, {
  readonly all: ReadonlyArray<ListenerInfo>
  readonly draining: Effect.Effect<boolean>
  /**
   * Applies new settings to the running listeners, matched by name: timeouts, command budgets
   * and TLS certificates take effect for connections opened afterwards; the session's limits
   * (size, recipients, connection counts, hook deadline) from each session's next command.
   * What cannot change without re-binding (address, mode, TLS mode, listeners added or removed)
   * is left as it is and reported. Everything is validated (certificates read) before anything
   * changes: a failure changes nothing.
   */
  readonly reconfigure: (listeners: ReadonlyArray<ListenerOptions.ListenerInput>) => Effect.Effect<ReadonlyArray<string>, ListenError>
  /**
   * Re-reads the certificate files the listeners are configured with and installs them (a
   * renewed certificate): new handshakes get them, open connections keep theirs. A file that
   * does not load fails the call and changes nothing.
   */
  readonly reloadCertificates: Effect.Effect<void, ListenError>
}>()("incoming/Listeners") {}

export interface ListenersOptions {
  readonly listeners: ReadonlyArray<ListenerOptions.ListenerInput>
  readonly hostname: string
  readonly drainTimeoutMs: number
  /** Users and limits for SMTP AUTH; without it no listener offers AUTH (and `submission(s)` cannot start). */
  readonly auth?: AuthHandler.AuthHandlerOptions | undefined
}

type Services = MailQueue | Spool | Telemetry.Telemetry | Relay

interface Running extends ListenerReload.Live {
  readonly info: ListenerInfo
  /** Phase 1 of drain: stop accepting and refuse new commands. */
  readonly stopAccepting: Effect.Effect<void>
  /** Phase 2: wait for DATA in flight until `deadline` (Clock millis), then interrupt and close everything. */
  readonly finish: (deadline: number) => Effect.Effect<void>
}

interface Shared {
  readonly hostname: string
  readonly drainTimeoutMs: number
  readonly draining: () => boolean
  readonly connectionsScope: Scope.Scope
  readonly auth: AuthHandler.AuthHandler | undefined
}

const priorityExtension: ReadonlyArray<string> = [Priority.ehloKeyword]
const noExtensions: ReadonlyArray<string> = []

/** After the drain deadline, how long closing sockets and the work they start may still take. */
const closeGraceMs = 2_000

const formatAddress = (host: string, port: number) => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)
const addressOf = (o: ListenerOptions.ListenerOptions, port: number) => (o.path !== undefined ? `unix:${o.path}` : formatAddress(o.host, port))

/** What the listener's mode needs (TLS, AUTH), checked against what is configured. */
const authSetup = (o: ListenerOptions.ListenerOptions, auth: AuthHandler.AuthHandler | undefined, address: string) => {
  const setup: ListenerModes.AuthSetup = {
    mode: o.mode,
    tlsAvailable: o.tls.mode !== "disabled",
    methods: auth?.methods ?? [],
    allowInsecureAuth: o.allowInsecureAuth
  }
  const invalid = ListenerModes.validate(setup)
  if (invalid === undefined) return Effect.succeed(setup)
  return Effect.fail(
    new ListenError({
      listener: o.name,
      address,
      reason: {
        _tag: "Failed",
        detail: invalid._tag === "TlsRequired"
          ? `mode "${o.mode}" needs TLS: configure tls.mode with a certificate and key`
          : `mode "${o.mode}" needs AUTH: configure users`
      }
    })
  )
}

/** smtp-server's options: our settings, and each callback answered by a session hook through the bridge. */
const engineOptions = (
  o: ListenerOptions.ListenerOptions,
  tls: Tls.TlsFiles | undefined,
  setup: ListenerModes.AuthSetup,
  handlers: Session.SessionHandlers,
  bridge: Bridge,
  shared: Shared,
  metrics: Context.Context<never>,
  proxyOf: (id: string) => ProxyHeader.ProxyHeader | undefined
): SMTPServerOptions => {
  const modeOptions = ListenerModes.engineOptions(setup)
  // On an implicit-TLS listener the connection is encrypted from the start: no STARTTLS to offer.
  const disabledFor = (secure: boolean) => {
    const off = ListenerModes.sessionDisabledCommands(setup, secure)
    return o.tls.mode === "implicit" && !off.includes("STARTTLS") ? [...off, "STARTTLS"] : off
  }
  const auth = shared.auth
  return {
    ...(tls === undefined ? {} : { cert: tls.cert, key: tls.key, sniOptions: tls.sniOptions }),
    name: o.hostname,
    banner: "Incoming",
    lmtp: o.mode === "lmtp",
    size: o.maxSize,
    ...modeOptions,
    secure: o.tls.mode === "implicit" || modeOptions.secure === true,
    disabledCommands: disabledFor(false),
    hideENHANCEDSTATUSCODES: false,
    // DSN (RFC 3461) is advertised; its parameters are parsed and kept by us (protocol/Dsn.ts).
    hideDSN: false,
    hideREQUIRETLS: true,
    disableReverseLookup: true,
    logger: false,
    socketTimeout: o.idleTimeoutMs,
    closeTimeout: shared.drainTimeoutMs,
    onConnect: (session, callback) => {
      bridge.open(session.id)
      session.disabledCommands = disabledFor(session.secure)
      const proxy = proxyOf(session.id)
      if (proxy !== undefined) {
        bridge.fork(Effect.logDebug(`PROXY ${Proxy.describe(proxy)}`).pipe(Effect.annotateLogs({ listener: o.name, session: session.id })))
      }
      bridge.run(
        session.id,
        "CONNECT",
        () =>
          handlers.connect({
            id: session.id,
            remoteAddress: session.remoteAddress,
            clientHostname: session.clientHostname,
            secure: session.secure,
            proxy
          }),
        callback
      )
    },
    onAuth: (authentication, session, callback) => {
      if (auth === undefined) return callback(SmtpReply.toEngineError(ListenerModes.authNotAvailable))
      bridge.run(session.id, "AUTH", () => auth.onAuth(authentication, session), callback)
    },
    onMailFrom: (address, session, callback) => bridge.run(session.id, "MAIL", () => handlers.mailFrom(address, session), callback),
    onRcptTo: (address, session, callback) => bridge.run(session.id, "RCPT", () => handlers.rcptTo(address, session), callback),
    onData: (stream, session, callback) => {
      // A client reset mid-DATA emits 'error' on this stream; without a listener Node would throw.
      stream.on("error", () => undefined)
      bridge.run(session.id, "DATA", () => handlers.data(stream, session), (err, reply) =>
        callback(
          err,
          // LMTP: one reply per recipient, refusals as errors carrying their code.
          typeof reply === "string" || reply === undefined
            ? reply
            : reply.map((r) => (r.code < 400 ? `${r.enhanced} ${r.text}` : SmtpReply.toEngineError(r)))
        ))
    },
    onSecure: (socket, session, callback) => {
      const version = "getProtocol" in socket && typeof socket.getProtocol === "function" ? socket.getProtocol() : null
      Telemetry.recordTlsUnsafe(o.name, typeof version === "string" ? version : "unknown", metrics)
      // Under TLS now: AUTH may be offered.
      session.disabledCommands = disabledFor(true)
      callback()
    },
    onClose: (session) => {
      bridge.fork(handlers.closePolicy(session))
      handlers.close(session.id)
      bridge.close(session.id)
    }
  }
}

/**
 * Binds the listener: its port, or its Unix socket (port 0). A socket file left by a process
 * that is gone (nothing accepts on it) is replaced; one in use is `address in use`. The socket
 * is made `0660`: the MTA that delivers into it must run as its owner or group.
 */
const bind = (s: IncomingSmtpServer, o: ListenerOptions.ListenerOptions, address: string) =>
  Effect.callback<number, ListenError>((resume) => {
    const onError = (err: Error) => resume(Effect.fail(fromBindError(o.name, address, err)))
    const path = o.path
    const listen = () => {
      s.server.once("error", onError)
      const done = () => {
        s.server.off("error", onError)
        if (path !== undefined) chmodSync(path, 0o660)
        resume(Effect.succeed(path === undefined ? (s.server.address() as AddressInfo).port : 0))
      }
      if (path === undefined) s.server.listen(o.port, o.host, done)
      else s.server.listen(path, done)
    }
    if (path === undefined || !isSocketFile(path)) return listen()
    const probe = connect(path)
    probe.once("connect", () => {
      probe.destroy()
      onError(Object.assign(new Error(`${path} is in use`), { code: "EADDRINUSE" }))
    })
    probe.once("error", () => {
      rmSync(path, { force: true })
      listen()
    })
  })

const isSocketFile = (path: string): boolean => {
  try {
    return lstatSync(path).isSocket()
  } catch {
    return false
  }
}

const start = Effect.fnUntraced(function*(input: ListenerOptions.ListenerInput, shared: Shared) {
  const settings = yield* Ref.make(ListenerOptions.resolve(input, shared.hostname))
  // As started: the address, mode and TLS mode never change while bound.
  const o = Ref.getUnsafe(settings)
  const address = addressOf(o, o.port)
  const badNetworks = ListenerReload.badProxyNetworks(o)
  if (badNetworks.length > 0) {
    return yield* new ListenError({
      listener: o.name,
      address,
      reason: { _tag: "Failed", detail: `proxy_protocol.trusted: not an IP address or CIDR range: ${badNetworks.join(", ")}` }
    })
  }
  const tls = yield* Tls.read(o, address)
  const setup = yield* authSetup(o, shared.auth, address)

  // Hooks: the session's handlers, reached through the bridge.
  const context = yield* Effect.context<Services>()
  const tracing = yield* References.TracerEnabled
  const bridge = yield* makeBridge(context, shared.connectionsScope, { tracing, listener: o.name })
  let server: IncomingSmtpServer | undefined
  const relay = Context.get(context, Relay)
  const handlers = yield* Session.make(settings, {
    auth: setup,
    isDraining: shared.draining,
    enterData: (id) => server?.guards.get(id)?.enterData(),
    leaveData: (id) => server?.guards.get(id)?.leaveData()
  })
  const s = new IncomingSmtpServer(
    engineOptions(o, tls, setup, handlers, bridge, shared, Telemetry.metricsContext(context), (id) => server?.guards.get(id)?.proxy),
    ListenerReload.engineLimits(o),
    {
      unavailable: (name, session) =>
        o.mode === "lmtp" && (name === "HELO" || name === "EHLO")
          ? Commands.lmtpNeedsLhlo
          : ListenerModes.unavailableReply(setup, name, session) ?? Commands.unimplemented(name),
      // MT-PRIORITY (RFC 6710) only to clients whose priority is honoured: trusted networks, and
      // clients that can authenticate here (AUTH comes after EHLO, so it is offered to them all).
      ehloExtensions: ({ remoteAddress }) =>
        setup.methods.length > 0 || relay.isTrusted(remoteAddress) ? priorityExtension : noExtensions
    },
    {
      proxyRefused: (peer, reason) =>
        bridge.fork(Effect.logInfo(`PROXY header from ${peer} refused: ${reason}`).pipe(Effect.annotateLogs({ listener: o.name })))
    }
  )
  server = s
  // Without an 'error' listener a client reset during a command crashes the process.
  s.on("error", (err: Error) => {
    bridge.fork(Effect.logDebug("smtp connection error", err.message).pipe(Effect.annotateLogs({ listener: o.name })))
  })

  // Bind.
  const port = yield* bind(s, o, address)
  yield* Effect.logInfo(`listening on ${addressOf(o, port)}`).pipe(Effect.annotateLogs({ listener: o.name, tls: o.tls.mode }))

  // Drain.
  const closed = Deferred.makeUnsafe<void>()
  let stopped = false
  const stopAccepting = Effect.sync(() => {
    if (stopped) return
    stopped = true
    s.close(() => Deferred.doneUnsafe(closed, Exit.void))
  })
  const finish = (deadline: number) =>
    Effect.gen(function*() {
      const inFlight = bridge.transactions()
      if (inFlight > 0) {
        yield* Effect.logInfo(`draining ${inFlight} DATA transaction(s)`).pipe(Effect.annotateLogs({ listener: o.name }))
        const left = deadline - (yield* Clock.currentTimeMillis)
        const waited = yield* bridge.transactionsDone.pipe(Effect.timeoutOption(Math.max(0, left)))
        if (waited._tag === "None") {
          yield* Effect.logWarning("drain timeout: interrupting transactions still in progress")
        }
      }
      // Whatever is left (stragglers, idle sessions) is told to come back later.
      for (const c of s.connections) {
        c.send(SmtpReply.shuttingDown.code, `${SmtpReply.shuttingDown.enhanced} ${SmtpReply.shuttingDown.text}`)
      }
      yield* bridge.closeAll
      // The sockets close (each close forks its policy `close` hooks), then that work ends.
      yield* Deferred.await(closed).pipe(Effect.andThen(bridge.settled), Effect.timeoutOption(closeGraceMs))
    })

  const info: ListenerInfo = {
    name: o.name,
    host: o.host,
    port,
    get options() {
      return { ...Ref.getUnsafe(settings), port }
    },
    connections: Effect.sync(() => handlers.connections())
  }
  return { name: o.name, address, port, settings, server: s, info, stopAccepting, finish } satisfies Running
})

export const make = Effect.fnUntraced(function*(options: ListenersOptions) {
  let draining = false
  const running: Array<Running> = []
  // Finalizers run in reverse order. The connections' parent scope is forked first so that it
  // closes last, after the drain below has let in-flight DATA finish; the drain is registered
  // before any listener binds so that a later bind failure still closes the earlier ones.
  const connectionsScope = yield* Scope.fork(yield* Effect.scope, "parallel")
  // One handler for every listener: failed AUTH attempts from an IP count across ports.
  const auth = options.auth === undefined ? undefined : AuthHandler.make(options.auth)
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      draining = true
      const deadline = (yield* Clock.currentTimeMillis) + options.drainTimeoutMs
      yield* Effect.forEach(running, (r) => r.stopAccepting, { discard: true })
      yield* Effect.forEach(running, (r) => r.finish(deadline), { concurrency: "unbounded", discard: true })
      yield* Effect.logInfo("listeners drained")
    })
  )
  const shared: Shared = {
    hostname: options.hostname,
    drainTimeoutMs: options.drainTimeoutMs,
    draining: () => draining,
    connectionsScope,
    auth
  }
  for (const l of options.listeners) running.push(yield* start(l, shared))
  return Listeners.of({
    all: running.map((r) => r.info),
    draining: Effect.sync(() => draining),
    reconfigure: (inputs) => ListenerReload.reconfigure(running, inputs, options.hostname),
    reloadCertificates: ListenerReload.reloadCertificates(running)
  })
})

export const layer = (options: ListenersOptions): Layer.Layer<Listeners, ListenError, Services> =>
  Layer.effect(Listeners, make(options))
