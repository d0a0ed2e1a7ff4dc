/**
 * Delivery into Maildir folders, one per recipient under a root: `<root>/<folder>/{tmp,new,cur}`.
 *
 * The message is written to `tmp/` under a unique name, fsync'd, then renamed into `new/` and the
 * directory fsync'd — the Maildir protocol, so a reader never sees a partial file and an
 * acknowledged delivery survives a crash. Each file name carries the message's queue id
 * (`messageIdOf`), which is how a reader tells a redelivery (at-least-once) from a new message.
 *
 * Folder names (`folderFor`, internal/maildirFolder.ts) are a reversible escape of the address:
 * distinct mailboxes never share a folder, and no address can escape the root.
 *
 * Recovery (`recover`, run when the adapter is built): a delivery cut by the process's death
 * leaves its partial file in `tmp/` (a write interrupted in-process removes its own). At start
 * the adapter removes the files in each `<root>/<folder>/tmp/` that carry its own name pattern
 * and that no live process is writing: from this host, those whose writer's pid is gone (or is
 * this process, which is not writing them); from another host (a shared root, a container's new
 * host name), those untouched for 36 hours, the age after which Maildir readers clean `tmp/`
 * anyway. Files of other programs are never touched.
 */
import { open, mkdir, readdir, rename, stat, unlink } from "node:fs/promises"
import { hostname } from "node:os"
import { join } from "node:path"
import { Effect, Layer, Stream } from "effect"
import * as DA from "./DeliveryAdapter.ts"
import * as Folder from "./internal/maildirFolder.ts"

export interface MaildirOptions {
  readonly root: string
}

export const { addressOf, folderFor, legacyFolderFor } = Folder

let sequence = 0
const host = hostname().replace(/[/:]/g, "_")

const uniqueName = (id: string, size: number): string => {
  const now = Date.now()
  return `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${++sequence}_${id}.${host},S=${size}`
}

const ourName = /^\d+\.M\d+P(\d+)Q\d+_[^./]+\.(.+),S=\d+$/

/**
 * The queue id of the message in a file this adapter wrote (in `new/`, or in `cur/` after a mail
 * reader added its `:2,` flags), or `undefined` for a name it did not make. Delivery is
 * at-least-once: a crash between the write and the queue's record of it delivers again, under a
 * new file name with the same id, so two files of one folder with the same id are one message.
 */
export const messageIdOf = (fileName: string): string | undefined => /^\d+\.M\d+P\d+Q\d+_([^./]+)\./.exec(fileName)?.[1]

/** Paths in `tmp/` this process is writing right now: recovery (a reload rebuilds the adapter) leaves them. */
const writing = new Set<string>()

/** A filesystem call as an Effect; its failure is the error itself (its message is the reason). */
const io = <A>(f: () => Promise<A>): Effect.Effect<A, unknown> => Effect.tryPromise({ try: f, catch: (cause) => cause })

const fsyncDir = (dir: string) =>
  Effect.acquireUseRelease(io(() => open(dir, "r")), (fd) => io(() => fd.sync()), (fd) => Effect.promise(() => fd.close().catch(() => undefined)))

/** Mail for this address went to a shared folder before names were made injective: say so once per folder. */
const warnedLegacy = new Set<string>()
const noteLegacyFolder = (root: string, rcpt: string, folder: string): Effect.Effect<void> => {
  const legacy = legacyFolderFor(rcpt)
  if (legacy === folder || warnedLegacy.has(legacy)) return Effect.void
  return io(() => stat(join(root, legacy))).pipe(
    Effect.flatMap((s) => {
      if (!s.isDirectory()) return Effect.void
      warnedLegacy.add(legacy)
      return Effect.logWarning(
        `maildir: mail for ${rcpt} is filed in ${folder}; earlier versions filed it in ${legacy}, a folder it may share with other addresses`
      )
    }),
    Effect.ignore
  )
}

const deliverOne = (root: string, delivery: DA.Delivery, rcpt: string): Effect.Effect<string, unknown> =>
  Effect.gen(function*() {
    const folder = folderFor(rcpt)
    const base = join(root, folder)
    yield* noteLegacyFolder(root, rcpt, folder)
    yield* io(() => Promise.all(["tmp", "new", "cur"].map((d) => mkdir(join(base, d), { recursive: true }))))
    const name = uniqueName(delivery.id, delivery.size)
    const tmp = join(base, "tmp", name)
    writing.add(tmp)
    yield* Effect.acquireUseRelease(
      io(() => open(tmp, "wx", 0o600)),
      (fd) => Stream.runForEach(delivery.body, (chunk) => io(() => fd.write(chunk))).pipe(Effect.andThen(io(() => fd.sync()))),
      (fd) => Effect.promise(() => fd.close().catch(() => undefined))
    ).pipe(
      Effect.andThen(io(() => rename(tmp, join(base, "new", name)))),
      // Failed or interrupted half-way: no partial file is left behind in tmp/.
      Effect.onError(() => Effect.promise(() => unlink(tmp).catch(() => undefined))),
      Effect.ensuring(Effect.sync(() => writing.delete(tmp)))
    )
    yield* fsyncDir(join(base, "new"))
    return join(base, "new", name)
  })

export interface Recovered {
  /** Partial files removed from `tmp/` folders. */
  readonly removed: ReadonlyArray<string>
  readonly bytes: number
}

/** How long a file of another host's writer must sit untouched before it counts as abandoned. */
export const foreignTmpAgeMs = 36 * 3600 * 1000

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (cause) {
    // EPERM: it exists but belongs to someone else.
    return typeof cause === "object" && cause !== null && "code" in cause && cause.code === "EPERM"
  }
}

const listOrEmpty = (dir: string): Effect.Effect<ReadonlyArray<string>> =>
  Effect.tryPromise(() => readdir(dir)).pipe(Effect.orElseSucceed((): ReadonlyArray<string> => []))

/** Whether a file in `tmp/` is a partial delivery of ours that nobody is writing; its size when it is. */
const abandoned = (path: string, name: string, now: number): Effect.Effect<number | undefined> => {
  const m = ourName.exec(name)
  if (m === null) return Effect.succeed(undefined)
  const pid = Number(m[1])
  return Effect.tryPromise(() => stat(path)).pipe(
    Effect.map((s) => {
      if (!s.isFile()) return undefined
      const dead = m[2] === host
        ? (pid === process.pid ? !writing.has(path) : !isAlive(pid))
        : now - s.mtimeMs > foreignTmpAgeMs
      return dead ? s.size : undefined
    }),
    Effect.orElseSucceed(() => undefined)
  )
}

/** Removes the partial files of dead deliveries from every folder's `tmp/` under `root` (see the module comment). */
export const recover = (root: string): Effect.Effect<Recovered> =>
  Effect.gen(function*() {
    const now = Date.now()
    const removed: Array<string> = []
    let bytes = 0
    for (const folder of yield* listOrEmpty(root)) {
      const tmp = join(root, folder, "tmp")
      for (const name of yield* listOrEmpty(tmp)) {
        const path = join(tmp, name)
        const size = yield* abandoned(path, name, now)
        if (size === undefined) continue
        const gone = yield* Effect.tryPromise(() => unlink(path)).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
        if (!gone) continue
        removed.push(path)
        bytes += size
      }
    }
    if (removed.length > 0) {
      yield* Effect.logInfo(`maildir recovery: removed ${removed.length} partial file(s), ${bytes} bytes, left in tmp/ by deliveries that died`).pipe(
        Effect.annotateLogs({ root })
      )
    }
    return { removed, bytes }
  })

export const make = (options: MaildirOptions): DA.DeliveryAdapter["Service"] =>
  DA.DeliveryAdapter.of({
    name: "maildir",
    deliver: (delivery) =>
      Effect.forEach(delivery.recipients, ({ rcpt }) =>
        deliverOne(options.root, delivery, rcpt).pipe(
          Effect.map((path) => DA.ok(rcpt, `250 2.0.0 stored in ${path}`)),
          // A full disk or a permissions problem may clear up: retry rather than bounce.
          Effect.catch((cause) => Effect.succeed(DA.retry(rcpt, `maildir write failed: ${cause instanceof Error ? cause.message : String(cause)}`)))
        ))
  })

/** The adapter, after `recover` cleaned the root's `tmp/` folders. */
export const makeRecovered = (options: MaildirOptions): Effect.Effect<DA.DeliveryAdapter["Service"]> =>
  Effect.as(recover(options.root), make(options))

export const layer = (options: MaildirOptions): Layer.Layer<DA.DeliveryAdapter> => Layer.effect(DA.DeliveryAdapter, makeRecovered(options))
