/**
 * Stopping a daemon a test started: SIGTERM to its PID (only the process we spawned), SIGKILL
 * after a grace period, resolved once it has exited.
 */
import type { ChildProcess } from "node:child_process"
import { Effect } from "effect"

export const stop = (child: ChildProcess, graceMs = 2_000): Effect.Effect<void> =>
  Effect.promise(() =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      const kill = setTimeout(() => child.kill("SIGKILL"), graceMs)
      child.once("exit", () => {
        clearTimeout(kill)
        resolve()
      })
      child.kill("SIGTERM")
    })
  )
