/**
 * Log output for the runner: JSON lines when stdout is not a terminal (journald, log shippers),
 * pretty lines on a terminal. The level is the CLI's global `--log-level`. Library users keep
 * whatever logger they have.
 */
import { Logger } from "effect"

export type LogFormat = "json" | "pretty" | "auto"

export const layer = (options: { readonly format: LogFormat; readonly isTTY: boolean }) => {
  const json = options.format === "json" || (options.format === "auto" && !options.isTTY)
  return Logger.layer([json ? Logger.consoleJson : Logger.consolePretty()])
}
