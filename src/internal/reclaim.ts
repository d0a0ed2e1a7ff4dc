/**
 * Prompt return of short-lived I/O buffers on large transfers.
 *
 * Socket and file read buffers die young, but V8 only collects them once about 64 MiB of
 * external memory was allocated since the last GC, so streaming one large message raises RSS by
 * that much although nothing holds the bytes. With V8's `gc` function — `--expose-gc`, or
 * `enable()`, which the `incoming` command calls at start — a minor GC every 4 MiB streamed
 * returns them: it costs well under a millisecond and happens only on bulk transfers. Without it
 * (a host app that did neither) this is a no-op.
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

type MinorGc = (options: { readonly type: "minor"; readonly execution: "sync" }) => void

const asGc = (g: unknown): MinorGc | undefined => (typeof g === "function" ? (g as MinorGc) : undefined)

let gc: MinorGc | undefined = asGc((globalThis as { gc?: unknown }).gc)

/**
 * Obtains V8's `gc` function without `--expose-gc` on the command line, so the installed bin
 * can start with a plain `#!/usr/bin/env node` (a shebang passes at most one argument, and
 * `env -S` is not everywhere). The flag only decides whether a new context gets a `gc` global:
 * set now, the next context has one, and it is the same function the command-line flag gives.
 */
export const enable = (): void => {
  if (gc !== undefined) return
  setFlagsFromString("--expose-gc")
  gc = asGc(runInNewContext("gc"))
}

const everyBytes = 4 * 1024 * 1024
let since = 0

/** Counts bytes that went through a transient buffer. */
export const note = (bytes: number): void => {
  if (gc === undefined) return
  since += bytes
  if (since >= everyBytes) {
    since = 0
    gc({ type: "minor", execution: "sync" })
  }
}
