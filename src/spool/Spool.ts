/**
 * Receives one DATA stream under the size cap, the line-ending rule and a global memory budget.
 *
 * Small messages stay in memory; once a message passes the per-message threshold, or the bytes
 * held in memory by all sessions would pass the budget, it spills to a file in the spool
 * directory and the memory it held is returned. The size cap is counted while bytes arrive:
 * past it nothing more is kept, the rest of the stream is read and dropped (so the engine can
 * answer after the final dot), and the transaction fails with 552 5.3.4.
 */
import { createWriteStream, mkdirSync, readdirSync, unlinkSync, type WriteStream } from "node:fs"
import { unlink } from "node:fs/promises"
import { join } from "node:path"
import type { Readable } from "node:stream"
import { Context, Effect, Exit, Layer } from "effect"
import * as Reclaim from "../internal/reclaim.ts"
import * as LineEndings from "./LineEndings.ts"
import type { SpooledBody } from "./SpooledBody.ts"
import { SpoolError } from "./SpoolError.ts"

export interface SpoolOptions {
  /** Directory for spilled bodies; created if missing. */
  readonly dir: string
  /**
   * Remove `*.spool` files left in `dir` at start. Only for the process that owns the directory
   * alone (it holds the data dir lock, see `DataDir.ts`): any other process's files there belong
   * to transactions in flight. Default false.
   */
  readonly sweep: boolean
  /** A message larger than this spills to disk. */
  readonly inMemoryThreshold: number
  /** Upper bound of message bytes held in memory by all sessions together. */
  readonly memoryBudget: number
}

export const defaultSpoolOptions = {
  inMemoryThreshold: 128 * 1024,
  memoryBudget: 64 * 1024 * 1024,
  sweep: false
}

export interface ReceiveOptions {
  readonly id: string
  readonly maxSize: number
  readonly lineEndings: "reject" | "normalize"
}

export class Spool extends Context.Service<Spool, {
  readonly dir: string
  readonly receive: (source: Readable, options: ReceiveOptions) => Effect.Effect<SpooledBody, SpoolError>
  /**
   * `receive` without a fiber: `done` is called once with the outcome, unless the returned
   * function (the interruption: it gives everything back) is called first. For the session's
   * direct DATA path (smtp/internal/directData.ts).
   */
  readonly receiveUnsafe: (source: Readable, options: ReceiveOptions, done: (exit: Exit.Exit<SpooledBody, SpoolError>) => void) => () => void
  /** Bytes currently held in memory by received bodies (for tests and metrics). */
  readonly memoryInUse: Effect.Effect<number>
}>()("incoming/Spool") {}

const ignoreError = (): void => undefined

/** A spilled body: its file goes when it is released. */
const fileBody = (size: number, path: string): SpooledBody => ({
  _tag: "File",
  size,
  path,
  release: Effect.promise(() => unlink(path).catch(() => undefined))
})

const storageError = (cause: unknown, what?: string): SpoolError => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : ""
  const detail = `${what === undefined ? "" : `${what}: `}${cause instanceof Error ? cause.message : String(cause)}`
  return new SpoolError({
    reason: code === "ENOSPC" || code === "EDQUOT" ? { _tag: "StorageFull", detail } : { _tag: "StorageFailed", detail },
    cause
  })
}

export const make = Effect.fnUntraced(function*(options: Partial<SpoolOptions> & { readonly dir: string }) {
  const opts: SpoolOptions = { ...defaultSpoolOptions, ...options }
  yield* Effect.try({
    try: () => {
      mkdirSync(opts.dir, { recursive: true })
      // Spool files are only referenced by transactions in flight: when this process owns the
      // directory alone, any found at start were left by a predecessor that died.
      if (opts.sweep) {
        for (const name of readdirSync(opts.dir)) {
          if (name.endsWith(".spool")) unlinkSync(join(opts.dir, name))
        }
      }
    },
    catch: (cause) => storageError(cause, `spool directory ${opts.dir}`)
  })
  let inMemory = 0

  // The bodies are made here, outside `receive`'s callback, and the lingering error listener is
  // a module constant: a closure made inside the callback would keep its whole context alive —
  // the source stream, the fiber's `resume`, the scanner — for as long as the body sits in a
  // queue, and the source stream for as long as the engine keeps it (issue #20: what a message
  // keeps alive past a scavenge is promoted to old space and costs GC work later).
  const inMemoryBody = (size: number, chunks: ReadonlyArray<Buffer>, held: number): SpooledBody => {
    let released = false
    return {
      _tag: "InMemory",
      size,
      chunks,
      release: Effect.sync(() => {
        if (released) return
        released = true
        inMemory -= held
      })
    }
  }

  const receiveUnsafe = (source: Readable, ro: ReceiveOptions, resume: (exit: Exit.Exit<SpooledBody, SpoolError>) => void) => {
    const scanner = LineEndings.make(ro.lineEndings)
    let chunks: Array<Buffer> = []
    let held = 0 // bytes of `chunks` counted against the memory budget
    let received = 0 // bytes from the client, counted against the cap
    let size = 0 // bytes kept (after normalisation)
    let file: WriteStream | undefined
    let path: string | undefined
    let failure: SpoolError | undefined
    let ended = false
    let done = false
    // Interrupted after the end while the spilled file was still closing: nobody takes the body.
    let abandoned = false

    const dropMemory = () => {
      inMemory -= held
      held = 0
      chunks = []
    }
    const removeFile = () => {
      const p = path
      // The file is opened asynchronously: unlinking before the open completes would miss it and
      // leave it behind. A destroyed stream closes (after its open, if one is pending), then goes.
      if (file !== undefined && p !== undefined) file.once("close", () => void unlink(p).catch(() => undefined)).destroy()
      else if (p !== undefined) unlink(p).catch(() => undefined)
      file = undefined
      path = undefined
    }
    const fail = (e: SpoolError) => {
      if (failure !== undefined) return
      failure = e
      dropMemory()
      removeFile()
      // Keep reading and dropping so the engine sees the end of DATA and can send the reply.
      source.resume()
    }
    const finish = () => {
      if (done) return
      done = true
      cleanup()
      if (failure !== undefined) return resume(Exit.fail(failure))
      if (file === undefined) return resume(Exit.succeed(inMemoryBody(size, chunks, held)))
      const p = path!
      file.end(() => {
        if (abandoned) return void unlink(p).catch(() => undefined)
        resume(failure !== undefined ? Exit.fail(failure) : Exit.succeed(fileBody(size, p)))
      })
    }

    const spill = () => {
      path = join(opts.dir, `${ro.id}.spool`)
      const ws = createWriteStream(path, { flags: "wx", mode: 0o600, highWaterMark: 256 * 1024 })
      ws.on("error", (e) => {
        fail(storageError(e))
        if (ended) finish()
      })
      ws.on("drain", () => source.resume())
      for (const c of chunks) ws.write(c)
      dropMemory()
      file = ws
    }

    const onData = (raw: Buffer) => {
      if (failure !== undefined) return
      received += raw.length
      Reclaim.note(raw.length)
      if (received > ro.maxSize) return fail(new SpoolError({ reason: { _tag: "SizeExceeded", limit: ro.maxSize } }))
      const kept = scanner.push(raw)
      if (kept === "LF" || kept === "CR") {
        return fail(new SpoolError({ reason: { _tag: "BareLineEnding", kind: kept } }))
      }
      size += kept.length
      if (file === undefined) {
        chunks.push(kept)
        held += kept.length
        inMemory += kept.length
        if (held > opts.inMemoryThreshold || inMemory > opts.memoryBudget) spill()
      } else if (!file.write(kept)) {
        source.pause()
      }
    }
    const onEnd = () => {
      ended = true
      if (failure === undefined) {
        const tail = scanner.end()
        if (tail === "CR") {
          fail(new SpoolError({ reason: { _tag: "BareLineEnding", kind: "CR" } }))
        } else if (tail !== undefined) {
          size += tail.length
          if (file === undefined) {
            chunks.push(tail)
            held += tail.length
            inMemory += tail.length
          } else file.write(tail)
        }
      }
      finish()
    }
    const onError = (e: Error) => {
      fail(new SpoolError({ reason: { _tag: "StreamFailed", detail: e.message }, cause: e }))
      finish()
    }
    const cleanup = () => {
      source.off("data", onData)
      source.off("end", onEnd)
      source.off("error", onError)
      // An error listener must stay: a late client reset would otherwise crash the process.
      source.on("error", ignoreError)
    }
    source.on("data", onData)
    source.once("end", onEnd)
    source.on("error", onError)

    return () => {
      // Interrupted (connection closed, drain): give everything back.
      if (done) {
        abandoned = true
        return
      }
      done = true
      cleanup()
      dropMemory()
      removeFile()
    }
  }

  const receive = (source: Readable, ro: ReceiveOptions) =>
    Effect.callback<SpooledBody, SpoolError>((resume) => Effect.sync(receiveUnsafe(source, ro, resume)))

  return Spool.of({
    dir: opts.dir,
    receive,
    receiveUnsafe,
    memoryInUse: Effect.sync(() => inMemory)
  })
})

export const layer = (options: Partial<SpoolOptions> & { readonly dir: string }): Layer.Layer<Spool, SpoolError> =>
  Layer.effect(Spool, make(options))
