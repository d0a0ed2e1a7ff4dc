/**
 * The callback → fiber bridge between smtp-server and the session's hooks, and the one place in
 * the listener that starts fibers. Every fiber it starts has an owner in the listeners' scope
 * (`connectionsScope`), so a drain interrupts and awaits all of them:
 *
 * - A hook that decides while being called (an `Exit`, see Session) is answered at once, without
 *   a fiber: measured, this is most commands, and it matters for throughput.
 * - A hook that answers by callback (a `Pending`: the session's direct DATA path,
 *   internal/directData.ts) runs without a fiber of its own; what of it must be a fiber runs in
 *   its connection's scope, and closing the connection calls its interruption.
 * - Any other hook runs as a fiber of its connection. A connection is a scope, a child of
 *   `connectionsScope`: closing it (the client left) interrupts what its hooks still run, and
 *   closing `connectionsScope` closes every connection.
 * - Work nobody waits for (a connection's close, the policy `close` hooks, log lines) runs in a
 *   `FiberSet` of `connectionsScope`, which the drain awaits before it closes the scope.
 *
 * Traced, a connection also holds the "Session" span and a runtime that captured it, so every hook
 * fiber runs under that span (ended when the connection closes) and carries the session's log
 * annotations without wrapping each hook. Untraced, a span and a runtime per connection would
 * cost tens of microseconds for nothing: the connection is a bare scope and a context with the
 * annotations, made by the first hook that needs a fiber.
 */
import { Cause, Context, Deferred, Effect, Exit, Fiber, FiberSet, References, Scope } from "effect"
import * as Telemetry from "../../telemetry/Telemetry.ts"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import { isDecided } from "../../internal/decided.ts"

/** The engine's callbacks this bridge answers; CONNECT is not timed (it is not a command). */
export type Command = "CONNECT" | "AUTH" | "MAIL" | "RCPT" | "DATA"

type EngineCallback<A> = (err?: Error | null, value?: A) => void

/** What a `Pending` hook may run: a fiber in its connection's scope, or background work. */
export interface PendingRuntime {
  /** Runs `effect` at once as a fiber of the connection: interrupted when the connection closes. */
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
  /** Runs `effect` in the background, owned by the listeners' scope (`Bridge.fork`). */
  readonly fork: (effect: Effect.Effect<void>) => void
}

/**
 * A hook's outcome that arrives by callback instead of from a fiber. `start` begins the work,
 * calls `done` once with the outcome and returns the interruption: called when the connection
 * closes before `done` was (the bridge then answers with the interruption itself).
 */
export class Pending<A, E> {
  readonly start: (done: (exit: Exit.Exit<A, E>) => void, runtime: PendingRuntime) => () => void
  constructor(start: (done: (exit: Exit.Exit<A, E>) => void, runtime: PendingRuntime) => () => void) {
    this.start = start
  }
}

export interface Bridge {
  /** A session starts (traced, so does its scope and span, before its first hook). */
  readonly open: (id: string) => void
  /**
   * Runs a hook and answers the engine's callback with its outcome. A hook that throws is a
   * defect, answered like one in a fiber: a 4xx for the client, the cause in the log.
   */
  readonly run: <A, E>(id: string, command: Command, hook: () => Effect.Effect<A, E> | Pending<A, E>, callback: EngineCallback<A>) => void
  /** A session ended: what its hooks still run is interrupted. */
  readonly close: (id: string) => void
  /** Runs `effect` in the background, owned by the listeners' scope; the drain awaits it. */
  readonly fork: (effect: Effect.Effect<void>) => void
  /** DATA transactions in progress. */
  readonly transactions: () => number
  /** Completes when no DATA transaction is in progress. */
  readonly transactionsDone: Effect.Effect<void>
  /** Closes every connection and waits for their fibers to stop. */
  readonly closeAll: Effect.Effect<void>
  /**
   * Completes when every session opened so far has been closed and the background work is done
   * (the engine reports a close a little after the socket's, so a closed server is not enough).
   */
  readonly settled: Effect.Effect<void>
}

interface Connection {
  readonly scope: Scope.Closeable
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
  /** The interruption of the `Pending` hook in progress, if any. */
  interrupt: (() => void) | undefined
}

export const makeBridge = Effect.fnUntraced(function*<R>(
  context: Context.Context<R>,
  connectionsScope: Scope.Scope,
  options: { readonly tracing: boolean; readonly listener: string }
) {
  const { listener, tracing } = options
  const runSync = Effect.runSyncWith(context)
  const background = yield* FiberSet.make<void>().pipe(Scope.provide(connectionsScope))
  const runBackground = yield* FiberSet.runtime(background)<R>().pipe(Effect.provideContext(context))
  const fork = (effect: Effect.Effect<void>): void => {
    runBackground(effect)
  }

  // Sessions between `open` and `close`, and who waits for the last one to close.
  const sessions = new Set<string>()
  let lastClosed: Deferred.Deferred<void> | undefined
  const connections = new Map<string, Connection>()
  const transactions = new Set<Fiber.Fiber<unknown, unknown>>()
  // DATA transactions answered by callback, and who waits for the last transaction to end.
  let pendingData = 0
  let noTransactions: Deferred.Deferred<void> | undefined
  const transactionEnded = () => {
    if (noTransactions === undefined || transactions.size > 0 || pendingData > 0) return
    Deferred.doneUnsafe(noTransactions, Exit.void)
    noTransactions = undefined
  }

  const openTraced = (id: string): Connection => {
    const scope = Scope.forkUnsafe(connectionsScope, "parallel")
    const runFork = runSync(
      Effect.gen(function*() {
        const span = yield* Effect.makeSpanScoped("Session", { attributes: { session: id, listener } })
        return yield* FiberSet.makeRuntime<R>().pipe(Effect.withParentSpan(span))
      }).pipe(Scope.provide(scope), Effect.annotateLogs({ session: id, listener }))
    )
    return { scope, runFork, interrupt: undefined }
  }
  const openLight = (id: string): Connection => {
    const scope = Scope.forkUnsafe(connectionsScope, "parallel")
    // The annotations go into the context once per connection: `Effect.annotateLogs` around each
    // hook would copy the whole context per command.
    const annotated = Context.add(context, References.CurrentLogAnnotations, {
      ...Context.get(context, References.CurrentLogAnnotations),
      session: id,
      listener
    })
    const runFork = Effect.runForkWith(annotated)
    // In the connection's scope: interrupted when it closes, or at once if it already has.
    return { scope, runFork: (effect) => Fiber.runIn(runFork(effect), scope), interrupt: undefined }
  }
  const open = (id: string): Connection => {
    const c = tracing ? openTraced(id) : openLight(id)
    connections.set(id, c)
    return c
  }
  const close = (id: string) => {
    sessions.delete(id)
    if (sessions.size === 0 && lastClosed !== undefined) {
      Deferred.doneUnsafe(lastClosed, Exit.void)
      lastClosed = undefined
    }
    const c = connections.get(id)
    if (c === undefined) return
    connections.delete(id)
    c.interrupt?.()
    // Synchronous when nothing runs (the common case); otherwise interrupting and awaiting the
    // connection's fibers is background work the drain waits for.
    const closing = Scope.closeUnsafe(c.scope, Exit.void)
    if (closing !== undefined) fork(closing)
  }

  const metricsContext = Telemetry.metricsContext(context)
  // Command durations, by the command a hook answers.
  const durations = {
    AUTH: Telemetry.commandDuration("AUTH"),
    MAIL: Telemetry.commandDuration("MAIL"),
    RCPT: Telemetry.commandDuration("RCPT"),
    DATA: Telemetry.commandDuration("DATA")
  }

  const run = <A, E>(id: string, command: Command, hook: () => Effect.Effect<A, E> | Pending<A, E>, callback: EngineCallback<A>): void => {
    // Timed here rather than with Effect.trackDuration: one clock read on each side of the hook
    // and a direct histogram update, instead of two more effects around every command.
    const started = performance.now()
    const answer = (exit: Exit.Exit<A, E>) => {
      if (command !== "CONNECT") durations[command].updateUnsafe((performance.now() - started) / 1000, metricsContext)
      if (Exit.isSuccess(exit)) return callback(null, exit.value)
      // A defect is our bug: the client gets a 4xx from fromCause, the operator gets the cause.
      if (exit.cause.reasons.some(Cause.isDieReason)) {
        fork(Effect.logError("session hook defect", Cause.pretty(exit.cause)).pipe(Effect.annotateLogs({ session: id, listener })))
      }
      callback(SmtpReply.toEngineError(SmtpReply.fromCause(exit.cause)))
    }
    let effect: Effect.Effect<A, E> | Pending<A, E>
    try {
      effect = hook()
    } catch (defect) {
      return answer(Exit.die(defect))
    }
    if (effect instanceof Pending) return runPending(connections.get(id) ?? open(id), command, effect, answer)
    if (isDecided(effect)) return answer(effect)
    const fiber = (connections.get(id) ?? open(id)).runFork(effect)
    if (command === "DATA") {
      transactions.add(fiber)
      fiber.addObserver((exit) => {
        transactions.delete(fiber)
        // Answered first: a drain waiting for this transaction sends 421 to everyone once woken.
        answer(exit)
        transactionEnded()
      })
    } else {
      fiber.addObserver(answer)
    }
  }

  const runPending = <A, E>(c: Connection, command: Command, pending: Pending<A, E>, answer: (exit: Exit.Exit<A, E>) => void) => {
    const data = command === "DATA"
    if (data) pendingData++
    let over = false
    const end = (exit: Exit.Exit<A, E>) => {
      if (over) return
      over = true
      c.interrupt = undefined
      answer(exit)
      if (data) {
        pendingData--
        transactionEnded()
      }
    }
    const stop = pending.start(end, { runFork: c.runFork, fork })
    // `start` may have answered already (an outcome decided at once).
    if (over) return
    c.interrupt = () => {
      if (over) return
      stop()
      end(Exit.interrupt())
    }
  }

  return {
    open: (id) => {
      sessions.add(id)
      // Untraced, a connection is made by the first hook that needs a fiber (DATA, or a command
      // that runs a rule or a lookup).
      if (tracing) open(id)
    },
    run,
    close,
    fork,
    transactions: () => transactions.size + pendingData,
    transactionsDone: Effect.suspend(() => {
      if (transactions.size === 0 && pendingData === 0) return Effect.void
      noTransactions ??= Deferred.makeUnsafe<void>()
      return Deferred.await(noTransactions)
    }),
    closeAll: Effect.suspend(() => {
      const all = [...connections.values()]
      connections.clear()
      for (const c of all) c.interrupt?.()
      return Effect.forEach(all, (c) => Scope.close(c.scope, Exit.void), { concurrency: "unbounded", discard: true })
    }),
    settled: Effect.suspend(() => {
      if (sessions.size === 0) return FiberSet.awaitEmpty(background)
      lastClosed ??= Deferred.makeUnsafe<void>()
      return Effect.andThen(Deferred.await(lastClosed), FiberSet.awaitEmpty(background))
    })
  } satisfies Bridge
})
