/**
 * Delivery into Maildir folders, one per recipient under a root: `<root>/<recipient>/{tmp,new,cur}`.
 *
 * The message is written to `tmp/` under a unique name, fsync'd, then renamed into `new/` and the
 * directory fsync'd — the Maildir protocol, so a reader never sees a partial file and an
 * acknowledged delivery survives a crash. Recipient folder names are derived from the address
 * with everything outside a safe alphabet replaced, so an address cannot escape the root. Each
 * file name carries the message's queue id (`messageIdOf`), which is how a reader tells a
 * redelivery (at-least-once) from a new message.
 */
import { open, mkdir, rename, unlink } from "node:fs/promises"
import { hostname } from "node:os"
import { join } from "node:path"
import { Effect, Layer, Stream } from "effect"
import * as DA from "./DeliveryAdapter.ts"

export interface MaildirOptions {
  readonly root: string
}

/** The folder name for a recipient: lower-cased, safe characters only, never `.`/`..`. */
export const folderFor = (rcpt: string): string => {
  const safe = rcpt.toLowerCase().replace(/[^a-z0-9@._+=-]/g, "_")
  return safe.startsWith(".") ? `_${safe.slice(1)}` : safe
}

let sequence = 0
const host = hostname().replace(/[/:]/g, "_")

const uniqueName = (id: string, size: number): string => {
  const now = Date.now()
  return `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${++sequence}_${id}.${host},S=${size}`
}

/**
 * The queue id of the message in a file this adapter wrote (in `new/`, or in `cur/` after a mail
 * reader added its `:2,` flags), or `undefined` for a name it did not make. Delivery is
 * at-least-once: a crash between the write and the queue's record of it delivers again, under a
 * new file name with the same id, so two files of one folder with the same id are one message.
 */
export const messageIdOf = (fileName: string): string | undefined => /^\d+\.M\d+P\d+Q\d+_([^./]+)\./.exec(fileName)?.[1]

/** A filesystem call as an Effect; its failure is the error itself (its message is the reason). */
const io = <A>(f: () => Promise<A>): Effect.Effect<A, unknown> => Effect.tryPromise({ try: f, catch: (cause) => cause })

const fsyncDir = (dir: string) =>
  Effect.acquireUseRelease(io(() => open(dir, "r")), (fd) => io(() => fd.sync()), (fd) => Effect.promise(() => fd.close().catch(() => undefined)))

const deliverOne = (root: string, delivery: DA.Delivery, rcpt: string): Effect.Effect<string, unknown> =>
  Effect.gen(function*() {
    const base = join(root, folderFor(rcpt))
    yield* io(() => Promise.all(["tmp", "new", "cur"].map((d) => mkdir(join(base, d), { recursive: true }))))
    const name = uniqueName(delivery.id, delivery.size)
    const tmp = join(base, "tmp", name)
    yield* Effect.acquireUseRelease(
      io(() => open(tmp, "wx", 0o600)),
      (fd) => Stream.runForEach(delivery.body, (chunk) => io(() => fd.write(chunk))).pipe(Effect.andThen(io(() => fd.sync()))),
      (fd) => Effect.promise(() => fd.close().catch(() => undefined))
    ).pipe(
      // Failed or interrupted half-way: no partial file is left behind in tmp/.
      Effect.onError(() => Effect.promise(() => unlink(tmp).catch(() => undefined)))
    )
    yield* io(() => rename(tmp, join(base, "new", name)))
    yield* fsyncDir(join(base, "new"))
    return join(base, "new", name)
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

export const layer = (options: MaildirOptions): Layer.Layer<DA.DeliveryAdapter> =>
  Layer.succeed(DA.DeliveryAdapter, make(options))
