/**
 * Logging for a background loop that retries while a dependency is away (the PostgreSQL queue's
 * LISTEN connection, heartbeat and maintenance): the first failure of an outage is a warning
 * with the cause's message, the retries that follow are debug lines (with the full cause), and
 * the first success after it says the dependency is back. Without this a database restart
 * printed a stack trace per loop per second until it came back.
 */
import { Cause, Effect } from "effect"

export interface Outage {
  /** Logs a failure: a warning on the first of an outage, debug after. */
  readonly failed: (cause: Cause.Cause<unknown>) => Effect.Effect<void>
  /** Marks a success: logs the recovery when an outage was under way. */
  readonly ok: Effect.Effect<void>
}

const messageOf = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause)
  return e instanceof Error ? e.message : String(e)
}

/** `what` names the loop in the log lines ("LISTEN connection", "queue maintenance"). */
export const make = (what: string, whileDown: string): Outage => {
  let down = false
  return {
    failed: (cause) =>
      Effect.suspend(() => {
        if (down) return Effect.logDebug(`${what} still failing`, Cause.pretty(cause))
        down = true
        return Effect.logWarning(`${what} failed: ${messageOf(cause)}; ${whileDown}`)
      }),
    ok: Effect.suspend(() => {
      if (!down) return Effect.void
      down = false
      return Effect.logInfo(`${what} is back`)
    })
  }
}
