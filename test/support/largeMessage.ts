/**
 * For the large-message tests: a process's memory from /proc, and a body streamed to an SMTP
 * client's socket with backpressure (the client never holds the message either).
 */
import { readFileSync, writeFileSync } from "node:fs"
import { Effect } from "effect"
import type { SmtpClient } from "../../src/testing/index.ts"

export const procKb = (pid: number, field: "VmRSS" | "VmHWM"): number => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return Number(m?.[1] ?? NaN)
}

/**
 * Resets the process's peak RSS (VmHWM) to its current RSS (Linux's `clear_refs` "5"). A test
 * measuring one message's peak must do this first: the peak otherwise still holds start-up's,
 * which `incoming serve` has since given back (`Reclaim.compact`), and would be charged to the message.
 */
export const resetPeak = (pid: number): void => writeFileSync(`/proc/${pid}/clear_refs`, "5")

const line = Buffer.from(`${"x".repeat(78)}\r\n`)
const chunk = Buffer.concat(Array.from({ length: Math.floor((64 * 1024) / line.length) }, () => line))

/** The body `streamBody` sends for `bytes`: 64 KiB chunks of 78-char lines (a whole chunk past `bytes`). */
export function* bodyChunks(bytes: number): Generator<Buffer> {
  for (let sent = 0; sent < bytes; sent += chunk.length) yield chunk
}

/** `bytes` of 78-char lines + CRLF, written as 64 KiB chunks honouring socket backpressure, then the dot. */
export const streamBody = (client: SmtpClient.SmtpClient, bytes: number) =>
  Effect.callback<void>((resume) => {
    let sent = 0
    const pump = () => {
      while (sent < bytes) {
        sent += chunk.length
        if (!client.socket.write(chunk)) return void client.socket.once("drain", pump)
      }
      client.socket.write(".\r\n", () => resume(Effect.void))
    }
    pump()
  })
