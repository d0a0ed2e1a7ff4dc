/**
 * Group commit for the SQLite queue: the one writer of the database.
 *
 * Every write — commit, claim, settle, admin operation — is a job handed to one writer fiber.
 * The writer takes every job that is waiting (after letting the event loop deliver whatever else
 * is ready), applies them all inside ONE transaction and makes them durable with ONE `COMMIT`,
 * then resumes each caller. So concurrent sessions share one fsync, and writes never interleave:
 * a transaction is a synchronous block between `BEGIN` and `COMMIT`, nothing else runs inside it.
 *
 * A job decides its own outcome (`Exit`) and must check its preconditions before writing, so a
 * refused job (queue full, lease lost) leaves nothing behind and does not disturb its batch. A job
 * that throws — the database refused a write (disk full, I/O error) — aborts the whole batch: it
 * is rolled back and every job in it fails, so a batch is all or nothing.
 */
import type { DatabaseSync } from "node:sqlite"
import { Deferred, Effect, Exit, Fiber, Result } from "effect"
import type { Scope } from "effect"
import { fromStorageException, MailQueueError } from "../MailQueueError.ts"

/** A synchronous unit of work run inside the batch transaction. Throwing aborts the batch. */
export type Job<A, Ctx> = (ctx: Ctx) => Exit.Exit<A, MailQueueError>

export interface SubmitOptions {
  /** The job's rows name a body file: flush the body directory before this batch commits. */
  readonly syncBodies?: boolean | undefined
  /**
   * Whether the job's effect must be on stable storage when its caller resumes (default true).
   * A batch of only non-durable jobs commits with `synchronous=NORMAL`: written to the WAL in
   * order but not flushed, so it survives a process crash and becomes durable with the next
   * flushed batch. Claims and settles use it: losing one to a power cut only redelivers a message
   * whose delivery was in flight, which at-least-once allows; a commit (the 250) never does.
   */
  readonly durable?: boolean | undefined
  /** Undoes work done before submitting (an adopted body file) when the job does not commit. */
  readonly onFailure?: Effect.Effect<void> | undefined
}

export interface BatchInfo {
  /** Jobs in the batch (commits, claims, settles...). */
  readonly jobs: number
  /** Whether the batch transaction committed. */
  readonly committed: boolean
}

export interface Options<Ctx> {
  readonly db: DatabaseSync
  /** Fresh per-batch state handed to every job of the batch. */
  readonly context: () => Ctx
  /** Runs synchronously right after `COMMIT` returned, before any caller resumes. */
  readonly committed: (ctx: Ctx) => void
  /** Runs after `committed` (file removals...), still before any caller resumes. */
  readonly afterCommit: (ctx: Ctx) => Effect.Effect<void>
  /** Flushes the body directory; run before `BEGIN` when a job of the batch asked for it. */
  readonly syncBodies: Effect.Effect<void, MailQueueError>
  readonly onBatch?: ((info: BatchInfo) => void) | undefined
}

export interface GroupCommit<Ctx> {
  /**
   * Queues a job and returns the deferred its outcome lands in. Enqueueing is synchronous, so
   * a caller that must not lose track of a job (an adopted body file) can enqueue inside an
   * uninterruptible region and only wait interruptibly.
   */
  readonly enqueue: <A>(job: Job<A, Ctx>, options?: SubmitOptions) => Effect.Effect<Deferred.Deferred<A, MailQueueError>>
  /** Queues a job and waits until its batch committed (or failed). */
  readonly submit: <A>(job: Job<A, Ctx>, options?: SubmitOptions) => Effect.Effect<A, MailQueueError>
}

interface Entry<Ctx> {
  readonly run: (ctx: Ctx) => void
  /** Whether the job ran and refused (its outcome is a failure). */
  readonly refused: () => boolean
  /** Completes the caller with the job's outcome. */
  readonly finish: () => void
  readonly abort: (error: MailQueueError) => void
  readonly syncBodies: boolean
  readonly durable: boolean
  readonly onFailure: Effect.Effect<void> | undefined
}

const closedError = new MailQueueError({ reason: { _tag: "StorageFailed", detail: "queue is closed" } })

export const make = <Ctx>(options: Options<Ctx>): Effect.Effect<GroupCommit<Ctx>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { db } = options
    let pending: Array<Entry<Ctx>> = []
    let wake: (() => void) | undefined
    let closing = false

    const enqueue = <A>(job: Job<A, Ctx>, submit: SubmitOptions = {}) =>
      Effect.suspend(() => {
        const deferred = Deferred.makeUnsafe<A, MailQueueError>()
        if (closing) {
          Deferred.doneUnsafe(deferred, Exit.fail(closedError))
          return Effect.as(submit.onFailure ?? Effect.void, deferred)
        }
        let outcome: Exit.Exit<A, MailQueueError> | undefined
        pending.push({
          run: (ctx) => {
            outcome = job(ctx)
          },
          refused: () => outcome !== undefined && Exit.isFailure(outcome),
          finish: () => {
            Deferred.doneUnsafe(deferred, outcome ?? Exit.die(new Error("group commit: job did not run")))
          },
          abort: (error) => {
            Deferred.doneUnsafe(deferred, Exit.fail(error))
          },
          syncBodies: submit.syncBodies === true,
          durable: submit.durable !== false,
          onFailure: submit.onFailure
        })
        wake?.()
        return Effect.succeed(deferred)
      })

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

    // One turn of the event loop (not of the fiber scheduler): socket data that arrived while the
    // previous batch was being written gets processed, and the commits it triggers join this batch.
    const gather = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

    // The connection starts with synchronous=FULL; switch only when a batch needs the other mode.
    let flushing = true
    const transact = (batch: ReadonlyArray<Entry<Ctx>>, ctx: Ctx): MailQueueError | undefined => {
      try {
        const durable = batch.some((entry) => entry.durable)
        if (durable !== flushing) {
          db.exec(durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
          flushing = durable
        }
        db.exec("BEGIN IMMEDIATE")
      } catch (cause) {
        return fromStorageException(cause, "begin transaction")
      }
      try {
        for (const entry of batch) entry.run(ctx)
        db.exec("COMMIT")
      } catch (cause) {
        // SQLite rolls back by itself after some errors (SQLITE_FULL); only roll back what is left.
        if (db.isTransaction) {
          try {
            db.exec("ROLLBACK")
          } catch {
            // The next BEGIN reports a broken connection; nothing more to undo here.
          }
        }
        return fromStorageException(cause, "write batch")
      }
      options.committed(ctx)
      return undefined
    }

    // Cleanups run before any caller resumes, so a caller sees the state its outcome describes.
    const fail = (batch: ReadonlyArray<Entry<Ctx>>, error: MailQueueError) =>
      Effect.gen(function*() {
        yield* Effect.forEach(batch, (entry) => entry.onFailure ?? Effect.void, { discard: true })
        for (const entry of batch) entry.abort(error)
        options.onBatch?.({ jobs: batch.length, committed: false })
      })

    const runBatch = (batch: ReadonlyArray<Entry<Ctx>>) =>
      Effect.gen(function*() {
        if (batch.some((entry) => entry.syncBodies)) {
          const synced = yield* Effect.result(options.syncBodies)
          if (Result.isFailure(synced)) return yield* fail(batch, synced.failure)
        }
        const ctx = options.context()
        const error = transact(batch, ctx)
        if (error !== undefined) return yield* fail(batch, error)
        yield* options.afterCommit(ctx)
        const refused = batch.filter((entry) => entry.refused())
        yield* Effect.forEach(refused, (entry) => entry.onFailure ?? Effect.void, { discard: true })
        for (const entry of batch) entry.finish()
        options.onBatch?.({ jobs: batch.length, committed: true })
      }).pipe(
        // A batch that was taken must complete every waiter, whatever happens to the writer.
        Effect.uninterruptible
      )

    const loop = Effect.gen(function*() {
      while (true) {
        yield* waitForWork
        if (pending.length === 0 && closing) return
        yield* gather
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
      for (const entry of left) entry.abort(closedError)
    })

    const writer = yield* Effect.forkScoped(loop.pipe(Effect.ensuring(stopped)))
    // Registered after the fork, so it runs before the fork's own interruption: jobs already
    // queued are written, later ones are refused, then the writer stops by itself.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        wake?.()
        yield* Fiber.await(writer)
      })
    )

    const submit = <A>(job: Job<A, Ctx>, submitOptions?: SubmitOptions): Effect.Effect<A, MailQueueError> =>
      Effect.flatMap(enqueue(job, submitOptions), Deferred.await)

    return { enqueue, submit } satisfies GroupCommit<Ctx>
  })
