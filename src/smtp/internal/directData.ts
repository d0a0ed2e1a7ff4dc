/**
 * The direct DATA path, answered from callbacks: the session's fast path for the common
 * transaction (SMTP, no DATA rules, no synchronous delivery, tracing off; Session decides).
 *
 * The stream goes into the spool's callback core (`Spool.receiveUnsafe`), the message is
 * committed by one fiber in the connection's scope — the queue's contract is an effect — and the
 * outcome goes back to the engine's callback through the bridge (`Pending`). The general path
 * runs the same steps as a DATA fiber that waits for the spool, then forks the commit under a
 * deadline (`HotPath.timeout`): two fibers, a suspension and a dozen combinators per message,
 * measured at 2–8 µs of the memory queue's ~75 µs of main-thread CPU per message
 * (docs/benchmark.md, issue 20, "A/B per change").
 *
 * What it trades, against the general path: the steps are written out as callbacks, so the
 * guarantees the fiber gave are kept by hand here — the 250 only after the commit's fiber
 * succeeded; a closed connection (or a drain past its deadline) stops the spool and gives its
 * memory or file back, or interrupts the commit's fiber (the bridge calls the interruption
 * `start` returned, and closes the connection's scope); the deadline interrupts the commit and
 * answers 451 4.4.2 only if it did not succeed meanwhile; and the same telemetry events as the
 * general path, published without an effect. The deadline's timer is Node's, not the `Clock`
 * (as in `HotPath.timeout`).
 */
import { Cause, Clock, type Context, Effect, Exit } from "effect"
import type { Readable } from "node:stream"
import type { MailQueue, MailQueueError, NewMessage } from "../../queue/MailQueue.ts"
import type { ReceiveOptions, Spool } from "../../spool/Spool.ts"
import type { SpooledBody } from "../../spool/SpooledBody.ts"
import type { SpoolError } from "../../spool/SpoolError.ts"
import * as Telemetry from "../../telemetry/Telemetry.ts"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import * as CauseText from "../../internal/causeText.ts"
import { Pending } from "./bridge.ts"

/** What the direct path uses of the listener's services, fixed for its life. */
export interface DirectData<Reject> {
  readonly listener: string
  readonly spool: Spool["Service"]
  readonly queue: MailQueue["Service"]
  readonly telemetry: Telemetry.Telemetry["Service"]
  /** The context metric updates and events without an effect go through (`Telemetry.metricsContext`). */
  readonly metrics: Context.Context<never>
  readonly clock: Clock.Clock
  /** Whether "message queued" is logged (the log level is fixed for the process's life). */
  readonly debug: boolean
  /** The session's refusal when the commit missed its deadline. */
  readonly timedOut: () => Reject
}

/** One transaction. */
export interface Transaction {
  readonly stream: Readable
  readonly receive: ReceiveOptions
  /** The transaction left its DATA phase (the spool is done, or was stopped). */
  readonly leave: () => void
  /** The message to commit, from its received body, at `now` (epoch ms). */
  readonly message: (body: SpooledBody, now: number) => NewMessage
  readonly timeoutMs: number
}

type Failure<Reject> = Reject | SpoolError | MailQueueError

export const transaction = <Reject extends { readonly reply: SmtpReply.SmtpReply; readonly reason: string }>(
  d: DirectData<Reject>,
  tx: Transaction
): Pending<string, Failure<Reject>> =>
  new Pending<string, Failure<Reject>>((done, runtime) => {
    // "spool" until the body is received, "commit" while the commit's fiber runs, then "over".
    let phase: "spool" | "commit" | "over" = "spool"
    const finish = (exit: Exit.Exit<string, Failure<Reject>>) => {
      phase = "over"
      done(exit)
    }
    const refused = (reason: string, code: number) =>
      d.telemetry.publishUnsafe({ _tag: "SessionRejected", reason, stage: "data", code, listener: d.listener }, d.metrics)

    const committed = (message: NewMessage, exit: Exit.Exit<void, MailQueueError>, timedOut: boolean) => {
      const { id, body } = message
      if (Exit.isSuccess(exit)) {
        d.telemetry.publishUnsafe({ _tag: "MessageQueued", id, size: body.size, queueDepth: d.queue.depthUnsafe() }, d.metrics)
        d.telemetry.publishUnsafe({ _tag: "SessionAccepted", id, listener: d.listener }, d.metrics)
        if (d.debug) {
          runtime.fork(Effect.logDebug("message queued").pipe(Effect.annotateLogs({ message: id, size: body.size, listener: d.listener })))
        }
        const queued = SmtpReply.queued(id)
        return finish(Exit.succeed(`${queued.enhanced} ${queued.text}`))
      }
      const cause = timedOut && Cause.hasInterruptsOnly(exit.cause)
        ? Cause.fail(new Cause.TimeoutError(`Operation timed out after ${tx.timeoutMs} millis`))
        : exit.cause
      runtime.fork(Effect.andThen(body.release, d.telemetry.publish(enqueueError(message, cause))))
      if (cause !== exit.cause) {
        const reject = d.timedOut()
        refused(reject.reason, reject.reply.code)
        return finish(Exit.fail(reject))
      }
      const failure = exit.cause.reasons.find(Cause.isFailReason)
      if (failure !== undefined) refused(`queue_${failure.error.reason._tag}`, failure.error.reply.code)
      finish(Exit.failCause(exit.cause))
    }

    const commit = (body: SpooledBody) => {
      phase = "commit"
      let message: NewMessage
      try {
        message = tx.message(body, d.clock.currentTimeMillisUnsafe())
      } catch (defect) {
        runtime.fork(body.release)
        return finish(Exit.die(defect))
      }
      // Started at once: a commit that does not suspend (the memory queue's) is answered now.
      const fiber = runtime.runFork(d.queue.commit(message))
      const exit = fiber.pollUnsafe()
      if (exit !== undefined) return committed(message, exit, false)
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        fiber.interruptUnsafe()
      }, tx.timeoutMs)
      // Interrupted with its connection's scope (closed, drained): answered here too.
      fiber.addObserver((exit) => {
        clearTimeout(timer)
        committed(message, exit, timedOut)
      })
    }

    const stopSpool = d.spool.receiveUnsafe(tx.stream, tx.receive, (received) => {
      tx.leave()
      if (Exit.isSuccess(received)) return commit(received.value)
      const failure = received.cause.reasons.find(Cause.isFailReason)
      if (failure !== undefined) refused(`spool_${failure.error.reason._tag}`, failure.error.reply.code)
      finish(Exit.failCause(received.cause))
    })
    // The bridge answers the interruption itself; the commit's fiber stops with its scope.
    return () => {
      if (phase !== "spool") return
      phase = "over"
      stopSpool()
      tx.leave()
    }
  })

/** The `EnqueueError` event of a failed commit. */
export const enqueueError = (message: NewMessage, cause: Cause.Cause<MailQueueError | Cause.TimeoutError>): Telemetry.TelemetryEvent => ({
  _tag: "EnqueueError",
  id: message.id,
  reason: enqueueReason(cause),
  detail: `${SmtpReply.format(SmtpReply.fromCause(cause))}: ${CauseText.oneLine(cause)}`,
  attemptedSize: message.body.size
})

/** A bounded key for why a commit failed: the queue error's reason, or timeout / defect / interrupted. */
const enqueueReason = (cause: Cause.Cause<MailQueueError | Cause.TimeoutError>): string => {
  const fail = cause.reasons.find(Cause.isFailReason)
  if (fail === undefined) return cause.reasons.some(Cause.isDieReason) ? "defect" : "interrupted"
  return fail.error._tag === "TimeoutError" ? "timeout" : fail.error.reason._tag
}
