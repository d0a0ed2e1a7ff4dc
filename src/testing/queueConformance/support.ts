/**
 * What the queue conformance kit's tests share: fixed test time, message and body builders
 * (in memory and in spool files), and small claim/settle helpers over the two contracts.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert } from "@effect/vitest"
import { Effect, type Layer, Option, type Scope } from "effect"
import type { Envelope } from "../../protocol/Envelope.ts"
import type { SpooledBody } from "../../spool/SpooledBody.ts"
import * as BodyStream from "../../queue/internal/bodyStream.ts"
import { delivered, type Lease, type MailQueue, type MessageBody, type NewMessage, type QueueOptions } from "../../queue/MailQueue.ts"
import type { MailQueueError, MailQueueErrorReason } from "../../queue/MailQueueError.ts"
import type { QueueAdmin } from "../../queue/QueueAdmin.ts"
import * as MessageId from "../../queue/MessageId.ts"

/** Builds a fresh, empty backend (both contracts) with these options (the rest at their defaults). */
export type MakeQueueLayer<E> = (options: Partial<QueueOptions>) => Layer.Layer<MailQueue | QueueAdmin, E>

export type Queue = MailQueue["Service"]
export type Admin = QueueAdmin["Service"]

/** Declares one test against a fresh backend: `q` is its `MailQueue`, `a` its `QueueAdmin`. */
export type ConformanceTest = <A, E2>(
  title: string,
  body: (q: Queue, a: Admin) => Effect.Effect<A, E2, Scope.Scope>,
  options?: Partial<QueueOptions>
) => void

/** Test time starts here (not at 0) so that time arithmetic bugs cannot hide behind zeros. */
export const T0 = Date.UTC(2026, 0, 1)

export const SECOND = 1000
export const HOUR = 3600 * SECOND

export const envelope = (rcptTo: ReadonlyArray<string>): Envelope => ({
  mailFrom: "sender@example.net",
  rcptTo,
  helo: "client.example.net",
  clientAddress: "192.0.2.10",
  secure: false,
  listener: "mx"
})

/** A body plus a count of how often the queue released it. */
export interface BodyProbe {
  readonly body: SpooledBody
  readonly released: () => number
}

export const memoryBody = (chunks: ReadonlyArray<string | Uint8Array>): BodyProbe => {
  let released = 0
  const bytes = chunks.map((c) => (typeof c === "string" ? Buffer.from(c, "utf8") : c))
  return {
    body: {
      _tag: "InMemory",
      size: bytes.reduce((n, c) => n + c.byteLength, 0),
      chunks: bytes,
      release: Effect.sync(() => {
        released++
      })
    },
    released: () => released
  }
}

/** A spool file in a temp directory removed with the scope; releasing removes the file, as the spool does. */
export const fileBody = (content: Uint8Array, parent: string = tmpdir()): Effect.Effect<BodyProbe, never, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(parent, "incoming-spool-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const path = join(dir, "body.spool")
    writeFileSync(path, content)
    let released = 0
    return {
      body: {
        _tag: "File",
        size: content.byteLength,
        path,
        release: Effect.sync(() => {
          released++
          rmSync(path, { force: true })
        })
      },
      released: () => released
    }
  })

export const message = (options: {
  readonly rcpts?: ReadonlyArray<string>
  readonly receivedAt?: number
  readonly body?: SpooledBody
  readonly trace?: string
  readonly id?: string
} = {}): NewMessage => {
  const receivedAt = options.receivedAt ?? T0
  return {
    id: options.id ?? MessageId.make(receivedAt),
    envelope: envelope(options.rcpts ?? ["rcpt@example.com"]),
    trace: options.trace ?? "Received: from client.example.net by mx.example.com; test\r\n",
    body: options.body ?? memoryBody(["Subject: test\r\n\r\nhello\r\n"]).body,
    receivedAt
  }
}

export const readAll = (body: MessageBody): Effect.Effect<Buffer> => Effect.promise(() => BodyStream.collect(body.stream()))

export const claimOne = (q: Queue, owner = "worker-1", leaseMs = 60 * SECOND) =>
  Effect.gen(function*() {
    const claimed = yield* q.claim({ owner, leaseMs })
    if (Option.isNone(claimed)) return assert.fail("expected a message to claim")
    return claimed.value
  })

export const assertNothingToClaim = (q: Queue) =>
  Effect.gen(function*() {
    const claimed = yield* q.claim({ owner: "worker-x", leaseMs: 60 * SECOND })
    assert.isTrue(Option.isNone(claimed), `expected nothing to claim, got ${Option.isSome(claimed) ? claimed.value.id : ""}`)
  })

export const failureReason = <A>(effect: Effect.Effect<A, MailQueueError>): Effect.Effect<MailQueueErrorReason> =>
  Effect.matchEffect(effect, {
    onSuccess: () => Effect.sync(() => assert.fail("expected the operation to fail")),
    onFailure: (e) => Effect.succeed(e.reason)
  })

export const deliverAll = (q: Queue, lease: Lease) => q.settle(lease, lease.recipients.map((r) => delivered(r.rcpt, "250 ok")))

export const ids = (infos: ReadonlyArray<{ readonly id: string }>) => infos.map((i) => i.id)

export const randomBytes = (n: number, seed: number): Buffer => {
  const out = Buffer.alloc(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    out[i] = x >> 16
  }
  return out
}

