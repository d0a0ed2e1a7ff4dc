/**
 * Listeners: bind the configured sockets and run a session per connection.
 *
 * A callback whose hook decides at once (see Session) is answered without a fiber; every other
 * runs as a fiber forked from the captured layer context into a per-connection scope, itself a
 * child of the listeners' scope: closing a connection interrupts what its hooks still run, and
 * closing the layer closes every connection.
 *
 * Drain (closing the layer's scope): stop accepting, answer new commands with 421, let DATA
 * transactions already in progress finish within `drainTimeoutMs`, then interrupt what is left
 * (those clients get 421 and retry), say 421 to idle connections and close them.
 */
import type { AddressInfo } from "node:net"
import { Cause, Context, Effect, Exit, Fiber, FiberSet, Layer, References, Scope } from "effect"
import type { SMTPServerOptions } from "smtp-server"
import type { Relay } from "../policy/Relay.ts"
import type { MailQueue } from "../queue/MailQueue.ts"
import type { Spool } from "../spool/Spool.ts"
import * as Telemetry from "../telemetry/Telemetry.ts"
import * as AuthHandler from "../auth/AuthHandler.ts"
import * as ListenerModes from "../auth/ListenerMode.ts"
import { isDecided } from "../internal/decided.ts"
import { IncomingSmtpServer } from "./internal/engine.ts"
import * as KeyPair from "./internal/keyPair.ts"
import { fromBindError, ListenError } from "./ListenError.ts"
import * as ListenerOptions from "./ListenerOptions.ts"
import * as Session from "./Session.ts"
import * as SmtpReply from "./SmtpReply.ts"

export interface ListenerInfo {
  readonly name: string
  readonly host: string
  /** The bound port (the real one when 0 was configured). */
  readonly port: number
  readonly options: ListenerOptions.ListenerOptions
  readonly connections: Effect.Effect<number>
}

/** The bound listeners of this process. */
export class Listeners extends Context.Service<Listeners, {
  readonly all: ReadonlyArray<ListenerInfo>
  readonly draining: Effect.Effect<boolean>
  /**
   * Applies new settings to the running listeners, matched by name: limits, timeouts and TLS
   * certificates take effect for connections opened afterwards; open connections keep theirs.
   * What cannot change without re-binding (address, mode, TLS mode, listeners added or removed)
   * is left as it is and reported. Everything is validated (certificates read) before anything
   * changes: a failure changes nothing.
   */
  readonly reconfigure: (listeners: ReadonlyArray<ListenerOptions.ListenerInput>) => Effect.Effect<ReadonlyArray<string>, ListenError>
}>()("incoming/Listeners") {}

export interface ListenersOptions {
  readonly listeners: ReadonlyArray<ListenerOptions.ListenerInput>
  readonly hostname: string
  readonly drainTimeoutMs: number
  /** Users and limits for SMTP AUTH; without it no listener offers AUTH (and `submission(s)` cannot start). */
  readonly auth?: AuthHandler.AuthHandlerOptions | undefined
}

type Services = MailQueue | Spool | Telemetry.Telemetry | Relay

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

interface Running {
  readonly info: ListenerInfo
  /** Checks new settings (reads certificates); the effect it returns applies them. */
  readonly prepare: (input: ListenerOptions.ListenerInput) => Effect.Effect<{
    readonly restartNeeded: ReadonlyArray<string>
    readonly apply: Effect.Effect<void>
  }, ListenError>
  /** Phase 1 of drain: stop accepting and refuse new commands. */
  readonly stopAccepting: Effect.Effect<void>
  /** Phase 2: wait for DATA in flight (bounded), then interrupt and close everything. */
  readonly finish: (deadline: number) => Effect.Effect<void>
}

interface TlsFiles {
  readonly cert: Buffer
  readonly key: Buffer
  readonly sniOptions: Readonly<Record<string, { readonly cert: Buffer; readonly key: Buffer }>>
}

const readTls = (o: ListenerOptions.ListenerOptions, address: string) =>
  Effect.try({
    try: (): TlsFiles | undefined => {
      if (o.tls.mode === "disabled") return undefined
      if (o.tls.cert === undefined || o.tls.key === undefined) {
        throw new Error(`tls mode "${o.tls.mode}" needs both a certificate and a key file`)
      }
      // Each pair is checked now (not PEM, mismatched), not at the first STARTTLS; the config
      // preflight runs the same check.
      const pair = (files: KeyPair.KeyPairFiles, label: string) => {
        const read = KeyPair.read(files)
        if (KeyPair.isProblem(read)) throw new Error(`${label}: ${read.message}`)
        return read
      }
      const main = pair({ cert: o.tls.cert, key: o.tls.key }, "certificate")
      const sniOptions = Object.fromEntries(
        Object.entries(o.tls.sni ?? {}).map(([name, files]) => [name.toLowerCase(), pair(files, `sni "${name}"`)])
      )
      return { ...main, sniOptions }
    },
    catch: (cause) =>
      new ListenError({
        listener: o.name,
        address,
        reason: { _tag: "BadCertificate", detail: cause instanceof Error ? cause.message : String(cause) },
        cause
      })
  })

const start = Effect.fnUntraced(function*(
  input: ListenerOptions.ListenerInput,
  shared: {
    readonly hostname: string
    readonly drainTimeoutMs: number
    readonly draining: () => boolean
    readonly connectionsScope: Scope.Scope
    readonly auth: AuthHandler.AuthHandler | undefined
  }
) {
  // Sessions read their limits from this object at each command, so a reload can update it in place.
  const o: Mutable<ListenerOptions.ListenerOptions> = { ...ListenerOptions.resolve(input, shared.hostname) }
  const address = o.host.includes(":") ? `[${o.host}]:${o.port}` : `${o.host}:${o.port}`
  const tls = yield* readTls(o, address)
  const auth = shared.auth
  const setup: ListenerModes.AuthSetup = {
    mode: o.mode,
    tlsAvailable: o.tls.mode !== "disabled",
    methods: auth?.methods ?? [],
    allowInsecureAuth: o.allowInsecureAuth
  }
  const invalid = ListenerModes.validate(setup)
  if (invalid !== undefined) {
    return yield* new ListenError({
      listener: o.name,
      address,
      reason: {
        _tag: "Failed",
        detail: invalid._tag === "TlsRequired"
          ? `mode "${o.mode}" needs TLS: configure tls.mode with a certificate and key`
          : `mode "${o.mode}" needs AUTH: configure users`
      }
    })
  }
  const modeOptions = ListenerModes.engineOptions(setup)
  // On an implicit-TLS listener the connection is encrypted from the start: no STARTTLS to offer.
  const disabledFor = (secure: boolean) => {
    const off = ListenerModes.sessionDisabledCommands(setup, secure)
    return o.tls.mode === "implicit" && !off.includes("STARTTLS") ? [...off, "STARTTLS"] : off
  }
  const context = yield* Effect.context<Services>()
  const runSync = Effect.runSyncWith(context)
  const runFork = Effect.runForkWith(context)

  let server: IncomingSmtpServer | undefined
  const handlers = yield* Session.make(o, {
    auth: setup,
    isDraining: shared.draining,
    enterData: (id) => server?.guards.get(id)?.enterData(),
    leaveData: (id) => server?.guards.get(id)?.leaveData()
  })

  interface Connection {
    readonly run: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
    /** Interrupts what the connection's hooks still run and waits for them to stop. */
    readonly close: Effect.Effect<void>
  }
  const connections = new Map<string, Connection>()
  const dataFibers = new Set<Fiber.Fiber<unknown, unknown>>()
  const tracing = yield* References.TracerEnabled

  // Traced: a scope per connection holding the connection's span and a runtime that captured
  // it, so every hook fiber runs under the "Session" span (ended when the scope closes) and
  // carries the session's log annotations without wrapping each hook.
  const openTraced = (id: string): Connection => {
    const scope = Scope.forkUnsafe(shared.connectionsScope, "parallel")
    const run = runSync(
      Effect.gen(function*() {
        const span = yield* Effect.makeSpanScoped("Session", { attributes: { session: id, listener: o.name } })
        return yield* FiberSet.makeRuntime<never>().pipe(Effect.withParentSpan(span))
      }).pipe(Scope.provide(scope), Effect.annotateLogs({ session: id, listener: o.name }))
    )
    return { run, close: Scope.close(scope, Exit.void) }
  }
  // Untraced: a scope, a span and a runtime per connection cost tens of microseconds a
  // connection for nothing; a set of the hooks' fibers gives the same interruption.
  const openLight = (id: string): Connection => {
    const fibers = new Set<Fiber.Fiber<unknown, unknown>>()
    // The annotations go into the context once per connection: `Effect.annotateLogs` around each
    // hook would copy the whole context per command.
    const annotated = Context.add(context, References.CurrentLogAnnotations, {
      ...Context.get(context, References.CurrentLogAnnotations),
      session: id,
      listener: o.name
    })
    const runConnection = Effect.runForkWith(annotated)
    return {
      run: (effect) => {
        const fiber = runConnection(effect)
        if (fiber.pollUnsafe() === undefined) {
          fibers.add(fiber)
          fiber.addObserver(() => fibers.delete(fiber))
        }
        return fiber
      },
      close: Effect.suspend(() => (fibers.size === 0 ? Effect.void : Fiber.interruptAll([...fibers])))
    }
  }
  const open = (id: string): Connection => {
    const c = tracing ? openTraced(id) : openLight(id)
    connections.set(id, c)
    return c
  }
  const closeConnection = (id: string) => {
    const c = connections.get(id)
    if (c === undefined) return
    connections.delete(id)
    runFork(c.close)
  }

  const metricsContext = Telemetry.metricsContext(context)
  // Command durations, by the command a hook answers (CONNECT is not a command).
  const durations = {
    AUTH: Telemetry.commandDuration("AUTH"),
    MAIL: Telemetry.commandDuration("MAIL"),
    RCPT: Telemetry.commandDuration("RCPT"),
    DATA: Telemetry.commandDuration("DATA")
  }
  /**
   * Runs a hook and answers the engine's callback with its outcome. A hook that decided while
   * being called (an `Exit`, see Session) is answered at once; anything else runs as a fiber of
   * the connection. A hook that throws is a defect, answered like one in a fiber.
   */
  const runHook = <A, E>(
    id: string,
    command: keyof typeof durations | "CONNECT",
    hook: () => Effect.Effect<A, E>,
    callback: (err?: Error | null, value?: A) => void,
    track?: Set<Fiber.Fiber<unknown, unknown>>
  ) => {
    // Timed here rather than with Effect.trackDuration: one clock read on each side of the hook
    // and a direct histogram update, instead of two more effects around every command.
    const started = performance.now()
    const answer = (exit: Exit.Exit<A, E>) => {
      if (command !== "CONNECT") durations[command].updateUnsafe((performance.now() - started) / 1000, metricsContext)
      if (Exit.isSuccess(exit)) return callback(null, exit.value)
      // A defect is our bug: the client gets a 4xx from fromCause, the operator gets the cause.
      if (exit.cause.reasons.some(Cause.isDieReason)) {
        runFork(Effect.logError("session hook defect", Cause.pretty(exit.cause)).pipe(Effect.annotateLogs({ session: id, listener: o.name })))
      }
      callback(SmtpReply.toEngineError(SmtpReply.fromCause(exit.cause)))
    }
    let effect: Effect.Effect<A, E>
    try {
      effect = hook()
    } catch (defect) {
      return answer(Exit.die(defect))
    }
    if (isDecided(effect)) return answer(effect)
    const c = connections.get(id) ?? open(id)
    const fiber = c.run(effect)
    track?.add(fiber)
    fiber.addObserver((exit) => {
      track?.delete(fiber)
      answer(exit)
    })
  }

  const engineOptions: SMTPServerOptions = {
    ...(tls === undefined ? {} : { cert: tls.cert, key: tls.key, sniOptions: tls.sniOptions }),
    name: o.hostname,
    banner: "Incoming",
    size: o.maxSize,
    ...modeOptions,
    secure: o.tls.mode === "implicit" || modeOptions.secure === true,
    disabledCommands: disabledFor(false),
    hideENHANCEDSTATUSCODES: false,
    hideDSN: true,
    hideREQUIRETLS: true,
    disableReverseLookup: true,
    logger: false,
    socketTimeout: o.idleTimeoutMs,
    closeTimeout: shared.drainTimeoutMs,
    onConnect: (session, callback) => {
      // Traced, the connection's span starts now; untraced, its fiber set is made by the first
      // hook that needs a fiber (DATA, or a command that runs a rule or a lookup).
      if (tracing) open(session.id)
      session.disabledCommands = disabledFor(session.secure)
      runHook(
        session.id,
        "CONNECT",
        () => handlers.connect({ id: session.id, remoteAddress: session.remoteAddress, clientHostname: session.clientHostname, secure: session.secure }),
        callback
      )
    },
    onAuth: (authentication, session, callback) => {
      if (auth === undefined) return callback(SmtpReply.toEngineError(SmtpReply.make(502, "5.5.1", "AUTH not available")))
      runHook(session.id, "AUTH", () => auth.onAuth(authentication, session), callback)
    },
    onMailFrom: (address, session, callback) => runHook(session.id, "MAIL", () => handlers.mailFrom(address, session), callback),
    onRcptTo: (address, session, callback) => runHook(session.id, "RCPT", () => handlers.rcptTo(address, session), callback),
    onData: (stream, session, callback) => {
      // A client reset mid-DATA emits 'error' on this stream; without a listener Node would throw.
      stream.on("error", () => undefined)
      runHook(session.id, "DATA", () => handlers.data(stream, session), (err, reply) => callback(err, reply), dataFibers)
    },
    onSecure: (socket, session, callback) => {
      const version = "getProtocol" in socket && typeof socket.getProtocol === "function" ? socket.getProtocol() : null
      runFork(Telemetry.recordTls(o.name, typeof version === "string" ? version : "unknown"))
      // Under TLS now: AUTH may be offered.
      session.disabledCommands = disabledFor(true)
      callback()
    },
    onClose: (session) => {
      runFork(handlers.closePolicy(session))
      handlers.close(session.id)
      closeConnection(session.id)
    }
  }

  const s = new IncomingSmtpServer(engineOptions, {
    greetingDelayMs: o.greetingDelayMs,
    commandTimeoutMs: o.commandTimeoutMs,
    dataTimeoutMs: o.dataTimeoutMs,
    maxConnectionTimeMs: o.maxConnectionTimeMs,
    maxCommands: o.maxCommands,
    maxErrors: o.maxErrors
  })
  server = s
  // Without an 'error' listener a client reset during a command crashes the process.
  s.on("error", (err: Error) => {
    runFork(Effect.logDebug("smtp connection error", err.message).pipe(Effect.annotateLogs({ listener: o.name })))
  })

  const port = yield* Effect.callback<number, ListenError>((resume) => {
    const onError = (err: Error) => resume(Effect.fail(fromBindError(o.name, address, err)))
    s.server.once("error", onError)
    s.server.listen(o.port, o.host, () => {
      s.server.off("error", onError)
      resume(Effect.succeed((s.server.address() as AddressInfo).port))
    })
  })
  yield* Effect.logInfo(`listening on ${o.host.includes(":") ? `[${o.host}]` : o.host}:${port}`).pipe(
    Effect.annotateLogs({ listener: o.name, tls: o.tls.mode })
  )

  let closed: Promise<void> | undefined
  const stopAccepting = Effect.sync(() => {
    closed ??= new Promise<void>((resolve) => s.close(() => resolve()))
  })

  const finish = (deadline: number) =>
    Effect.gen(function*() {
      const inFlight = [...dataFibers]
      if (inFlight.length > 0) {
        yield* Effect.logInfo(`draining ${inFlight.length} DATA transaction(s)`).pipe(Effect.annotateLogs({ listener: o.name }))
        const waited = yield* Fiber.awaitAll(inFlight).pipe(Effect.timeoutOption(Math.max(0, deadline - Date.now())))
        if (waited._tag === "None") {
          yield* Effect.logWarning("drain timeout: interrupting transactions still in progress")
        }
      }
      // Whatever is left (stragglers, idle sessions) is told to come back later.
      for (const c of s.connections) {
        c.send(SmtpReply.shuttingDown.code, `${SmtpReply.shuttingDown.enhanced} ${SmtpReply.shuttingDown.text}`)
      }
      yield* Effect.forEach([...connections.values()], (c) => c.close, { discard: true })
      connections.clear()
      const p = closed
      if (p !== undefined) yield* Effect.promise(() => p).pipe(Effect.timeoutOption(2000))
    })

  const prepare = (next: ListenerOptions.ListenerInput) =>
    Effect.gen(function*() {
      const n = ListenerOptions.resolve({ ...next, name: o.name }, shared.hostname)
      const restartNeeded: Array<string> = []
      if (n.host !== o.host || (next.port !== 0 && next.port !== port)) restartNeeded.push(`${o.name}: address ${n.host}:${next.port}`)
      if (n.mode !== o.mode || n.tls.mode !== o.tls.mode || n.allowInsecureAuth !== o.allowInsecureAuth) {
        restartNeeded.push(`${o.name}: mode / TLS mode`)
      }
      // Read and check the certificate now, so a bad file fails the reload before anything changed.
      const certificate = n.tls.mode === o.tls.mode && n.tls.mode !== "disabled" ? yield* readTls(n, address) : undefined
      const apply = Effect.sync(() => {
        Object.assign(o, {
          maxSize: n.maxSize,
          maxRecipients: n.maxRecipients,
          maxCommands: n.maxCommands,
          maxErrors: n.maxErrors,
          idleTimeoutMs: n.idleTimeoutMs,
          commandTimeoutMs: n.commandTimeoutMs,
          dataTimeoutMs: n.dataTimeoutMs,
          maxConnectionTimeMs: n.maxConnectionTimeMs,
          maxConnections: n.maxConnections,
          maxConnectionsPerIp: n.maxConnectionsPerIp,
          greetingDelayMs: n.greetingDelayMs,
          lineEndings: n.lineEndings,
          hookTimeoutMs: n.hookTimeoutMs,
          hostname: n.hostname
        })
        s.limits = {
          greetingDelayMs: n.greetingDelayMs,
          commandTimeoutMs: n.commandTimeoutMs,
          dataTimeoutMs: n.dataTimeoutMs,
          maxConnectionTimeMs: n.maxConnectionTimeMs,
          maxCommands: n.maxCommands,
          maxErrors: n.maxErrors
        }
        // The engine reads these per connection / per EHLO.
        s.options.size = n.maxSize
        s.options.socketTimeout = n.idleTimeoutMs
        s.options.name = n.hostname
        if (certificate !== undefined) {
          o.tls = { ...o.tls, cert: n.tls.cert, key: n.tls.key, sni: n.tls.sni }
          s.updateSecureContext(certificate)
        }
      })
      return { restartNeeded, apply }
    })

  const info: ListenerInfo = {
    name: o.name,
    host: o.host,
    port,
    options: { ...o, port },
    connections: Effect.sync(() => handlers.connections())
  }
  return { info, prepare, stopAccepting, finish } satisfies Running
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
      const deadline = Date.now() + options.drainTimeoutMs
      yield* Effect.forEach(running, (r) => r.stopAccepting, { discard: true })
      yield* Effect.forEach(running, (r) => r.finish(deadline), { concurrency: "unbounded", discard: true })
      yield* Effect.logInfo("listeners drained")
    })
  )
  for (const l of options.listeners) {
    running.push(
      yield* start(l, {
        hostname: options.hostname,
        drainTimeoutMs: options.drainTimeoutMs,
        draining: () => draining,
        connectionsScope,
        auth
      })
    )
  }
  return Listeners.of({
    all: running.map((r) => r.info),
    draining: Effect.sync(() => draining),
    reconfigure: (inputs) =>
      Effect.gen(function*() {
        const named = inputs.map((i) => ListenerOptions.resolve(i, options.hostname).name)
        const plans: Array<{ readonly restartNeeded: ReadonlyArray<string>; readonly apply: Effect.Effect<void> }> = []
        const notes: Array<string> = []
        for (const r of running) {
          const i = named.indexOf(r.info.name)
          if (i === -1) notes.push(`${r.info.name}: removed from the configuration (restart to close it)`)
          else plans.push(yield* r.prepare(inputs[i]!))
        }
        for (const n of named) {
          if (!running.some((r) => r.info.name === n)) notes.push(`${n}: new listener (restart to bind it)`)
        }
        for (const p of plans) yield* p.apply
        return [...notes, ...plans.flatMap((p) => p.restartNeeded.map((x) => `${x} (restart to apply)`))]
      })
  })
})

export const layer = (options: ListenersOptions): Layer.Layer<Listeners, ListenError, Services> =>
  Layer.effect(Listeners, make(options))
