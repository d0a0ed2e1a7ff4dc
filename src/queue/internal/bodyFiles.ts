/**
 * Durable file operations for message bodies kept outside the database (`<dataDir>/bodies/<id>`).
 *
 * A body file must be on stable storage — its bytes and the directory entry naming it — before
 * the row that points to it commits; otherwise a crash could leave a committed message without
 * its body. The bytes are flushed here by the committing session; the directory is flushed once
 * per group-commit batch by the writer (`syncDir`), so concurrent sessions share that fsync.
 */
import { copyFile, open, readdir, readFile, rename, rm, stat } from "node:fs/promises"
import { join } from "node:path"
import { Effect } from "effect"
import { fromStorageException, type MailQueueError } from "../MailQueueError.ts"

const attempt = <A>(what: string, f: () => Promise<A>): Effect.Effect<A, MailQueueError> =>
  Effect.tryPromise({ try: f, catch: (cause) => fromStorageException(cause, what) })

const fsyncOpen = async (path: string): Promise<number> => {
  const handle = await open(path, "r")
  try {
    await handle.sync()
    return (await handle.stat()).size
  } finally {
    await handle.close()
  }
}

// A spool that miscounted would otherwise be noticed only at the next start-up, as a damaged body.
const checkSize = (path: string, actual: number, expected: number): void => {
  if (actual !== expected) throw new Error(`${path} has ${actual} bytes, expected ${expected}`)
}

/** fsync(2) of a file or directory (Linux flushes a directory's entries through a read-only fd). */
export const syncPath = (path: string): Effect.Effect<void, MailQueueError> =>
  attempt(`fsync ${path}`, async () => {
    await fsyncOpen(path)
  })

/** Writes `chunks` to `tmp`, flushes it, then renames it to `final`. The caller flushes the directory. */
export const writeDurable = (
  tmp: string,
  final: string,
  chunks: ReadonlyArray<Uint8Array>,
  expectedSize: number
): Effect.Effect<void, MailQueueError> =>
  attempt(`write ${final}`, async () => {
    const handle = await open(tmp, "w", 0o600)
    try {
      for (const chunk of chunks) await handle.write(chunk)
      await handle.sync()
      checkSize(tmp, (await handle.stat()).size, expectedSize)
    } finally {
      await handle.close()
    }
    await rename(tmp, final)
  })

/**
 * Moves a spool file to `final`: a rename when both are on one file system (no bytes copied),
 * else a copy through `tmp`. Either way the result is flushed before this returns, because the
 * spool may never have fsync'd its file.
 */
export const adopt = (
  source: string,
  tmp: string,
  final: string,
  expectedSize: number
): Effect.Effect<void, MailQueueError> =>
  attempt(`adopt ${source}`, async () => {
    let renamed = false
    try {
      await rename(source, final)
      renamed = true
    } catch (cause) {
      if (!isCode(cause, "EXDEV")) throw cause
    }
    if (renamed) {
      checkSize(final, await fsyncOpen(final), expectedSize)
      return
    }
    await copyFile(source, tmp)
    checkSize(tmp, await fsyncOpen(tmp), expectedSize)
    await rename(tmp, final)
  })

export const readAll = (path: string): Effect.Effect<Buffer, MailQueueError> => attempt(`read ${path}`, () => readFile(path))

/** Removes a file, tolerating its absence; a failure is logged, never raised (the start-up sweep retries). */
export const removeQuietly = (path: string): Effect.Effect<void> =>
  Effect.tryPromise(() => rm(path, { force: true })).pipe(
    Effect.catch((error) => Effect.logWarning(`queue: could not remove ${path}`, error))
  )

/** Size of a file, or undefined if it does not exist. */
export const sizeOf = (path: string): Effect.Effect<number | undefined, MailQueueError> =>
  attempt(`stat ${path}`, () =>
    stat(path).then(
      (s) => s.size,
      (cause: unknown) => {
        if (isCode(cause, "ENOENT")) return undefined
        throw cause
      }
    ))

/** Removes every entry of `dir` whose name is not in `keep` (orphans and temp files); returns how many. */
export const sweep = (dir: string, keep: ReadonlySet<string>): Effect.Effect<number, MailQueueError> =>
  Effect.gen(function*() {
    const names = yield* attempt(`list ${dir}`, () => readdir(dir))
    const orphans = names.filter((name) => !keep.has(name))
    yield* Effect.forEach(orphans, (name) => removeQuietly(join(dir, name)), { concurrency: 8, discard: true })
    return orphans.length
  })

const isCode = (cause: unknown, code: string): boolean =>
  typeof cause === "object" && cause !== null && "code" in cause && cause.code === code
