/**
 * Prompt return of short-lived I/O buffers on large transfers.
 *
 * Socket and file read buffers die young, but V8 only collects them once about 64 MiB of
 * external memory was allocated since the last GC, so streaming one large message raises RSS by
 * that much although nothing holds the bytes. When the process runs with `--expose-gc` (the
 * `incoming` runner does), a minor GC every 4 MiB streamed returns them: it costs well
 * under a millisecond and happens only on bulk transfers. Without `--expose-gc` this is a no-op.
 */
type MinorGc = (options: { readonly type: "minor"; readonly execution: "sync" }) => void

const gc: MinorGc | undefined = (() => {
  const g: unknown = (globalThis as { gc?: unknown }).gc
  return typeof g === "function" ? (g as MinorGc) : undefined
})()

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
