/**
 * Group commit for the SQLite queue: the one writer of the database.
 *
 * Every write — commit, claim, settle, admin operation — is an op (plain data, see
 * `writerProtocol.ts`) handed to the writer. The writer takes every op that is waiting and sends
 * them as ONE batch to the writer thread (`writerThread.ts`), which owns the write connection and
 * applies them inside ONE transaction made durable with ONE `COMMIT`; then each caller resumes.
 * Concurrent sessions share each transaction and its fsync, writes never interleave, and the
 * statement work and the fsync run off the event loop: while one batch is being written, the
 * main thread keeps serving sessions, and what they submit meanwhile forms the next batch.
 *
 * An op decides its own outcome and checks its preconditions before writing, so a refused op
 * (queue full, lease lost) leaves nothing behind and does not disturb its batch. An op that
 * throws — the database refused a write (disk full, I/O error) — aborts the whole batch: it is
 * rolled back and every op in it fails, so a batch is all or nothing.
 */
import { extname } from "node:path"
import { Worker } from "node:worker_threads"
import { Deferred, Effect, Exit, Fiber, Result } from "effect"
import type { Scope } from "effect"
import { fromStorageException, MailQueueError } from "../MailQueueError.ts"
import type { Op, Reply, Request, WriterConfig } from "./writerProtocol.ts"

export interface SubmitOptions<A = unknown> {
  /** The op's rows name a body file: flush the body directory before this batch commits. */
  readonly syncBodies?: boolean | undefined
  /**
   * Whether the op's effect must be on stable storage when its caller resumes (default true).
   * A batch of only non-durable ops commits with `synchronous=NORMAL`: written to the WAL in
   * order but not flushed, so it survives a process crash and becomes durable with the next
   * flushed batch. Claims and settles use it: losing one to a power cut only redelivers a message
   * whose delivery was in flight, which at-least-once allows; a commit (the 250) never does.
   */
  readonly durable?: boolean | undefined
  /** Undoes work done before submitting (an adopted body file) when the op does not commit. */
  readonly onFailure?: Effect.Effect<void> | undefined
  /**
   * Runs synchronously with the op's value once its batch committed, after `committed` and
   * before any caller resumes: state it sets up (a handed-off lease) is in place before the
   * worker it wakes runs.
   */
  readonly onCommitted?: ((value: A) => void) | undefined
}

export interface BatchInfo {
  /** Ops in the batch (commits, claims, settles...). */
  readonly jobs: number
  /** Whether the batch transaction committed. */
  readonly committed: boolean
}

export interface Committed {
  /** Set when another connection changed the database: the pending count before the batch. */
  readonly recount: number | undefined
  readonly depthDelta: number
  readonly dueFrom: number
  readonly firstDue: { readonly at: number; readonly rowid: number } | null | undefined
  readonly removeFiles: ReadonlyArray<string>
}

export interface Options extends WriterConfig {
  /** The pending count as known now (sent with each batch for the depth check of commits). */
  readonly depth: () => number
  /** Runs synchronously once a batch committed, before any caller resumes. */
  readonly committed: (batch: Committed) => void
  /** Runs after `committed` (file removals...), still before any caller resumes. */
  readonly afterCommit: (batch: Committed) => Effect.Effect<void>
  /** Flushes the body directory; run before the batch is sent when an op of it asked for it. */
  readonly syncBodies: Effect.Effect<void, MailQueueError>
  readonly onBatch?: ((info: BatchInfo) => void) | undefined
}

export interface GroupCommit {
  /**
   * Queues an op and returns the deferred its outcome lands in. Enqueueing is synchronous, so
   * a caller that must not lose track of an op (an adopted body file) can enqueue inside an
   * uninterruptible region and only wait interruptibly.
   */
  readonly enqueue: <A>(op: Op, options?: SubmitOptions<A>) => Effect.Effect<Deferred.Deferred<A, MailQueueError>>
  /** Queues a non-durable op nobody waits for (a recount riding with the next batch); dropped once the writer stopped. */
  readonly requestUnsafe: (op: Op) => void
  /** Queues an op and waits until its batch committed (or failed); the value is the op's result. */
  readonly submit: <A>(op: Op, options?: SubmitOptions<A>) => Effect.Effect<A, MailQueueError>
}

interface Entry {
  readonly op: Op
  readonly deferred: Deferred.Deferred<unknown, MailQueueError>
  readonly syncBodies: boolean
  readonly durable: boolean
  readonly onFailure: Effect.Effect<void> | undefined
  readonly onCommitted: ((value: unknown) => void) | undefined
}

/**
 * The inline bodies of a batch's commits that own their whole buffer: moved to the writer thread
 * instead of copied (the queue keeps what it needs of a body separately). A 100 KiB body cloned
 * per commit was a 100 KiB allocation on each side, which drove V8's external-memory GCs; a small
 * one is as cheap to copy (measured: transferring 1 KiB bodies was not faster).
 */
const minTransferBytes = 16 * 1024

const transferable = (ops: ReadonlyArray<Op>): Array<ArrayBuffer> => {
  const out: Array<ArrayBuffer> = []
  for (const op of ops) {
    if (op.op !== "commit" || op.inline === null) continue
    const buffer = op.inline.buffer
    if (op.inline.byteLength < minTransferBytes || !(buffer instanceof ArrayBuffer)) continue
    if (op.inline.byteOffset === 0 && op.inline.byteLength === buffer.byteLength) out.push(buffer)
  }
  return out
}

// The writer thread's file, from the same tree as this module: writerThread.ts in src/ (tests,
// `npm start`), writerThread.js in the compiled dist/ (tsc rewrites imports, not this URL).
const writerThreadUrl = new URL(`./writerThread${extname(new URL(import.meta.url).pathname)}`, import.meta.url)

const closedError = new MailQueueError({ reason: { _tag: "StorageFailed", detail: "queue is closed" } })

const errorFrom = (message: string, code: string | undefined, what: string): MailQueueError =>
  fromStorageException(Object.assign(new Error(message), code === undefined ? {} : { code }), what)

export const make = (options: Options): Effect.Effect<GroupCommit, MailQueueError, Scope.Scope> =>
  Effect.gen(function*() {
    let pending: Array<Entry> = []
    let wake: (() => void) | undefined
    let closing = false
    let broken: MailQueueError | undefined
    // The reply to the batch in flight (at most one).
    let onReply: ((reply: Reply | MailQueueError) => void) | undefined

    const config: WriterConfig = { path: options.path, busyTimeoutMs: options.busyTimeoutMs, maxPageCount: options.maxPageCount }
    const worker = yield* Effect.acquireRelease(
      Effect.callback<Worker, MailQueueError>((resume) => {
        const w = new Worker(writerThreadUrl, { workerData: config })
        const early = (error: unknown) => {
          w.off("message", started)
          resume(Effect.fail(fromStorageException(error, `start the writer thread for ${options.path}`)))
        }
        const started = (reply: Reply) => {
          w.off("message", started)
          if (reply.type === "ready") {
            w.off("error", early)
            resume(Effect.succeed(w))
          } else if (reply.type === "openFailed") {
            resume(Effect.fail(errorFrom(reply.message, reply.code, `open ${options.path}`)))
          } else resume(Effect.fail(errorFrom(`unexpected reply ${reply.type}`, undefined, "writer thread")))
        }
        w.on("message", started)
        w.once("error", early)
      }),
      (w) =>
        Effect.callback<void>((resume) => {
          w.once("exit", () => resume(Effect.void))
          w.postMessage({ type: "close" } satisfies Request)
        }).pipe(Effect.timeoutOption(5_000), Effect.andThen(Effect.promise(() => w.terminate())), Effect.ignore)
    )
    const lost = (error: unknown) => {
      broken ??= fromStorageException(error, "writer thread")
      const resume = onReply
      onReply = undefined
      resume?.(broken)
    }
    worker.on("message", (reply: Reply) => {
      const resume = onReply
      onReply = undefined
      resume?.(reply)
    })
    worker.on("error", lost)
    worker.on("exit", (code) => lost(new Error(`writer thread exited (code ${code})`)))
    // Idle, the writer thread does not keep the process alive; a batch in flight does.
    worker.unref()

    /** Queues an op and returns its deferred; undefined when the writer takes no more ops. */
    const push = <A>(op: Op, submit: SubmitOptions<A>): Deferred.Deferred<A, MailQueueError> | undefined => {
      if (closing || broken !== undefined) return undefined
      const deferred = Deferred.makeUnsafe<A, MailQueueError>()
      pending.push({
        op,
        deferred: deferred as Deferred.Deferred<unknown, MailQueueError>,
        syncBodies: submit.syncBodies === true,
        durable: submit.durable !== false,
        onFailure: submit.onFailure,
        // The writer thread's value for this op is the op's A (see the op's definition).
        onCommitted: submit.onCommitted as ((value: unknown) => void) | undefined
      })
      wake?.()
      return deferred
    }

    const enqueue = <A>(op: Op, submit: SubmitOptions<A> = {}) =>
      Effect.suspend(() => {
        const deferred = push(op, submit)
        if (deferred !== undefined) return Effect.succeed(deferred)
        const refused = Deferred.makeUnsafe<A, MailQueueError>()
        Deferred.doneUnsafe(refused, Exit.fail(broken ?? closedError))
        return Effect.as(submit.onFailure ?? Effect.void, refused)
      })

    const requestUnsafe = (op: Op): void => {
      push(op, { durable: false })
    }

    const waitForWork = Effect.callback<void>((resume) => {
      if (pending.length > 0 || closing) {
        resume(Effect.void)
        return
      }
      wake = () => {
        wake = undefined
        resume(Effect.void)
      }
      return Effect.sync(() => {
        wake = undefined
      })
    })

    const send = (request: Request) =>
      Effect.callback<Reply, MailQueueError>((resume) => {
        if (broken !== undefined) {
          resume(Effect.fail(broken))
          return
        }
        onReply = (reply) => {
          worker.unref()
          resume(reply instanceof MailQueueError ? Effect.fail(reply) : Effect.succeed(reply))
        }
        worker.ref()
        worker.postMessage(request, request.type === "batch" ? transferable(request.ops) : [])
      })

    // Cleanups run before any caller resumes, so a caller sees the state its outcome describes.
    const fail = (batch: ReadonlyArray<Entry>, error: MailQueueError) =>
      Effect.gen(function*() {
        yield* Effect.forEach(batch, (entry) => entry.onFailure ?? Effect.void, { discard: true })
        options.onBatch?.({ jobs: batch.length, committed: false })
        for (const entry of batch) Deferred.doneUnsafe(entry.deferred, Exit.fail(error))
      })

    const runBatch = (batch: ReadonlyArray<Entry>) =>
      Effect.gen(function*() {
        if (batch.some((entry) => entry.syncBodies)) {
          const synced = yield* Effect.result(options.syncBodies)
          if (Result.isFailure(synced)) return yield* fail(batch, synced.failure)
        }
        const sent = yield* Effect.result(send({
          type: "batch",
          durable: batch.some((entry) => entry.durable),
          depth: options.depth(),
          ops: batch.map((entry) => entry.op)
        }))
        if (Result.isFailure(sent)) return yield* fail(batch, sent.failure)
        const reply = sent.success
        if (reply.type === "failed") return yield* fail(batch, errorFrom(reply.message, reply.code, "write batch"))
        if (reply.type !== "committed") {
          return yield* fail(batch, errorFrom(`unexpected reply ${reply.type}`, undefined, "writer thread"))
        }
        options.committed(reply)
        yield* options.afterCommit(reply)
        const outcomes = reply.outcomes
        yield* Effect.forEach(
          batch,
          (entry, i) => (outcomes[i]?.ok === false ? entry.onFailure ?? Effect.void : Effect.void),
          { discard: true }
        )
        for (let i = 0; i < batch.length; i++) {
          const outcome = outcomes[i]
          if (outcome?.ok === true) batch[i]!.onCommitted?.(outcome.value)
        }
        options.onBatch?.({ jobs: batch.length, committed: true })
        for (let i = 0; i < batch.length; i++) {
          const outcome = outcomes[i]
          Deferred.doneUnsafe(
            batch[i]!.deferred,
            outcome === undefined
              ? Exit.die(new Error("group commit: op did not run"))
              : outcome.ok
              ? Exit.succeed(outcome.value)
              : Exit.fail(new MailQueueError({ reason: outcome.reason }))
          )
        }
      }).pipe(
        // A batch that was taken must complete every waiter, whatever happens to the writer.
        Effect.uninterruptible
      )

    const loop = Effect.gen(function*() {
      while (true) {
        yield* waitForWork
        if (pending.length === 0 && closing) return
        const batch = pending
        pending = []
        yield* runBatch(batch)
      }
    })

    // If the writer ever stops (a defect, or the scope closing), nobody may be left waiting on it.
    const stopped = Effect.gen(function*() {
      closing = true
      const left = pending
      pending = []
      yield* Effect.forEach(left, (entry) => entry.onFailure ?? Effect.void, { discard: true })
      for (const entry of left) Deferred.doneUnsafe(entry.deferred, Exit.fail(closedError))
    })

    const writer = yield* Effect.forkScoped(loop.pipe(Effect.ensuring(stopped)))
    // Registered after the fork, so it runs before the fork's own interruption: ops already
    // queued are written, later ones are refused, then the writer stops by itself.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        wake?.()
        yield* Fiber.await(writer)
      })
    )

    const submit = <A>(op: Op, submitOptions?: SubmitOptions<A>): Effect.Effect<A, MailQueueError> =>
      Effect.flatMap(enqueue<A>(op, submitOptions), Deferred.await)

    return { enqueue, requestUnsafe, submit } satisfies GroupCommit
  })
