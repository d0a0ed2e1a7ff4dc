/**
 * Prompt return of short-lived I/O buffers on large transfers.
 *
 * Socket and file read buffers die young, but V8 only collects them once about 64 MiB of
 * external memory was allocated since the last GC, so streaming one large message raises RSS by
 * that much although nothing holds the bytes. With V8's `gc` function — `--expose-gc`, or
 * `enable()`, which the `incoming` command calls at start — a minor GC every 4 MiB streamed
 * returns them: it costs well under a millisecond and happens only on bulk transfers. Without it
 * (a host app that did neither) this is a no-op.
 *
 * `compact()` is the same idea once, at the end of start-up: loading the modules allocates
 * ~100 MiB that dies at once, and V8 keeps the young generation it grew for it (up to 64 MiB
 * resident) for as long as nothing shrinks it. One memory-reducing full GC returns it.
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

type MinorGc = (options: {
  readonly type: "minor" | "major"
  readonly execution: "sync"
  readonly flavor?: "regular" | "last-resort"
}) => void

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

/**
 * One full, memory-reducing GC ("last resort": it also shrinks the young generation) that returns
 * what start-up allocated and left behind. Measured: RSS at rest of `incoming serve` ~195 → see
 * docs/benchmark.md. Costs tens of milliseconds once; a no-op without V8's `gc`.
 */
export const compact = (): void => {
  gc?.({ type: "major", execution: "sync", flavor: "last-resort" })
}
