/**
 * `incoming-smtp/testing/crash`: the kill -9 harness. It starts any SMTP server command, sends
 * mail to it from concurrent sessions, SIGKILLs it at a random moment, restarts it, N times, then
 * lets a last run deliver what is left and counts: every message that got a 250 must be
 * delivered (none lost); a message delivered twice is reported as a duplicate (at-least-once
 * allows one for a delivery in flight at a kill).
 *
 * The harness knows nothing of the server: it picks a free loopback port and hands it to
 * `command`, waits for the 220 greeting, and learns what was delivered from `delivered` — by
 * default it reads a Maildir root, where each message is found by the `X-Crash-Token` header the
 * harness put in it. Use it to check a queue backend of your own the way Incoming checks its own
 * (`test/e2e/crash.test.ts`): the SQLite queue must lose nothing, the memory queue is caught
 * losing mail.
 *
 * Only the processes it started are killed, by their PID.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"
import { Data, Effect, Fiber, Random, type Scope } from "effect"
import * as SmtpClient from "./SmtpClient.ts"

export interface CrashOptions {
  /** The server command line, listening on `127.0.0.1:port`: `[executable, ...args]`. */
  readonly command: (port: number) => readonly [string, ...Array<string>]
  readonly cwd?: string | undefined
  /** Added to this process's environment. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /**
   * What has been delivered: token → how many times. Default: `maildirTokens(maildir)`.
   * Give one of the two.
   */
  readonly delivered?: Effect.Effect<ReadonlyMap<string, number>> | undefined
  /** A Maildir root the server delivers into (one folder per recipient), read by the default `delivered`. */
  readonly maildir?: string | undefined
  /** SIGKILLs (default 5). */
  readonly kills?: number | undefined
  /** Concurrent sending sessions (default 6). */
  readonly sessions?: number | undefined
  /** Load runs for a random time in this range before each kill, in ms (default [150, 800]). */
  readonly killAfterMs?: readonly [number, number] | undefined
  /** Recipients, in turn (default `user@localhost`). */
  readonly recipients?: ReadonlyArray<string> | undefined
  readonly from?: string | undefined
  /** How long the last run may take to deliver every acknowledged message, in ms (default 20 000). */
  readonly settleMs?: number | undefined
  /** How long a start may take until the greeting, in ms (default 20 000). */
  readonly startTimeoutMs?: number | undefined
}

export interface CrashReport {
  readonly kills: number
  /** Messages that got a 250 after DATA. */
  readonly acknowledged: number
  /** Distinct messages delivered (by token). */
  readonly delivered: number
  /** Tokens acknowledged and never delivered: must be empty for a durable queue. */
  readonly lost: ReadonlyArray<string>
  /** Tokens delivered more than once (allowed by at-least-once for deliveries in flight at a kill). */
  readonly duplicated: ReadonlyArray<string>
  /** Delivered although the client never saw the 250 (the kill came between the commit and the reply). */
  readonly deliveredUnacknowledged: number
  /** Exit code of the last run after SIGTERM (null: it had to be killed). */
  readonly finalExitCode: number | null
}

export class CrashHarnessError extends Data.TaggedError("CrashHarnessError")<{ readonly message: string }> {}

/** The header carrying each message's token. */
export const tokenHeader = "X-Crash-Token"

const tokenPattern = new RegExp(`^${tokenHeader}: (\\S+)\\r?$`, "m")

/** Tokens found in the messages of a Maildir root (`ROOT/<recipient>/{new,cur}/*`), with their counts. */
export const maildirTokens = (root: string): Effect.Effect<ReadonlyMap<string, number>> =>
  Effect.sync(() => {
    const seen = new Map<string, number>()
    const list = (dir: string): ReadonlyArray<string> => {
      try {
        return readdirSync(dir)
      } catch {
        return []
      }
    }
    for (const box of list(root)) {
      for (const sub of ["new", "cur"]) {
        const dir = join(root, box, sub)
        for (const file of list(dir)) {
          const m = tokenPattern.exec(readFileSync(join(dir, file), "latin1"))
          if (m !== null) seen.set(m[1]!, (seen.get(m[1]!) ?? 0) + 1)
        }
      }
    }
    return seen
  })

/** One line for a test log. */
export const format = (r: CrashReport): string =>
  `crash harness: ${r.kills} SIGKILLs, ${r.acknowledged} messages got 250, ${r.lost.length} lost, ` +
  `${r.duplicated.length} delivered twice, ${r.deliveredUnacknowledged} delivered without a 250 seen by the client`

const freePort = Effect.callback<number, CrashHarnessError>((resume) => {
  const probe = createServer()
  probe.once("error", (e) => resume(Effect.fail(new CrashHarnessError({ message: `no free port: ${e.message}` }))))
  probe.listen(0, "127.0.0.1", () => {
    const address = probe.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    probe.close(() => resume(Effect.succeed(port)))
  })
})

interface Running {
  readonly child: ChildProcess
  readonly output: () => string
  readonly exited: Effect.Effect<number | null>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
}

/** Starts the command; the scope kills it (SIGKILL, by PID) if it is still running. */
const start = (options: CrashOptions, port: number): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const [file, ...args] = options.command(port)
      const child = spawn(file, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      // Only the tail is kept: enough to say why a start failed.
      const keep = (chunk: Buffer) => {
        out = (out + chunk.toString()).slice(-8_000)
      }
      child.stdout!.on("data", keep)
      child.stderr!.on("data", keep)
      let code: number | null | undefined
      const waiters: Array<() => void> = []
      child.on("error", (e) => keep(Buffer.from(`spawn failed: ${e.message}\n`)))
      child.on("close", (c) => {
        code = c
        for (const w of waiters.splice(0)) w()
      })
      const exited = Effect.callback<number | null>((resume) => {
        if (code !== undefined) return resume(Effect.succeed(code))
        waiters.push(() => resume(Effect.succeed(code ?? null)))
      })
      return {
        child,
        output: () => out,
        exited,
        kill: (signal: NodeJS.Signals) => Effect.sync(() => void child.kill(signal))
      } satisfies Running
    }),
    (r) => (r.child.exitCode === null && r.child.signalCode === null ? Effect.andThen(r.kill("SIGKILL"), r.exited) : Effect.void)
  )

/** Waits until the server greets on `port` (it is then listening), or fails with its output. */
const ready = (server: Running, port: number, timeoutMs: number) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (server.child.exitCode !== null || server.child.signalCode !== null) break
      const greeted = yield* Effect.scoped(SmtpClient.connect({ port, timeoutMs: 2_000 })).pipe(
        Effect.map((c) => c.greeting.code === 220),
        Effect.orElseSucceed(() => false)
      )
      if (greeted) return
      yield* Effect.sleep("50 millis")
    }
    return yield* new CrashHarnessError({ message: `the server did not greet on 127.0.0.1:${port}:\n${server.output()}` })
  })

/**
 * Runs the kill/restart cycles and the final delivery, and reports. Fails only when the server
 * cannot be started; losing mail is a result (`lost`), for the caller to judge.
 */
export const run = Effect.fnUntraced(function*(options: CrashOptions) {
  const delivered = options.delivered ?? (options.maildir !== undefined ? maildirTokens(options.maildir) : undefined)
  if (delivered === undefined) return yield* new CrashHarnessError({ message: "give `delivered` or `maildir`: the harness must see what was delivered" })
  const kills = options.kills ?? 5
  const sessions = options.sessions ?? 6
  const [minMs, maxMs] = options.killAfterMs ?? [150, 800]
  const recipients = options.recipients ?? ["user@localhost"]
  const from = options.from ?? "load@crash.test"
  const startTimeoutMs = options.startTimeoutMs ?? 20_000
  const port = yield* freePort
  const acknowledged = new Set<string>()

  /** One session sending back to back until the server dies. */
  const sender = (prefix: string) =>
    Effect.gen(function*() {
      for (let n = 0; ; n++) {
        const token = `${prefix}-${n}`
        const reply = yield* SmtpClient.send({
          port,
          from,
          to: [recipients[n % recipients.length]!],
          data: `Subject: crash harness\r\n${tokenHeader}: ${token}\r\n\r\n${"x".repeat(200 + (n % 5) * 1000)}\r\n`
        })
        if (reply.code === 250) acknowledged.add(token)
      }
    }).pipe(Effect.ignore)

  for (let cycle = 0; cycle < kills; cycle++) {
    yield* Effect.scoped(Effect.gen(function*() {
      const server = yield* start(options, port)
      yield* ready(server, port, startTimeoutMs)
      const senders = yield* Effect.forEach(
        Array.from({ length: sessions }, (_, i) => i),
        (i) => Effect.forkChild(sender(`k${cycle}s${i}`))
      )
      yield* Effect.sleep(`${yield* Random.nextIntBetween(minMs, maxMs)} millis`)
      yield* server.kill("SIGKILL")
      yield* server.exited
      yield* Fiber.joinAll(senders)
    }))
  }

  // A last run delivers whatever the kills left queued; then a clean stop.
  const finalExitCode = yield* Effect.scoped(Effect.gen(function*() {
    const server = yield* start(options, port)
    yield* ready(server, port, startTimeoutMs)
    const deadline = Date.now() + (options.settleMs ?? 20_000)
    while (Date.now() < deadline) {
      const seen = yield* delivered
      if ([...acknowledged].every((t) => seen.has(t))) break
      yield* Effect.sleep("100 millis")
    }
    yield* server.kill("SIGTERM")
    return yield* server.exited.pipe(Effect.timeoutOrElse({ duration: 30_000, orElse: () => Effect.succeed(null) }))
  }))

  const seen = yield* delivered
  return {
    kills,
    acknowledged: acknowledged.size,
    delivered: seen.size,
    lost: [...acknowledged].filter((t) => !seen.has(t)),
    duplicated: [...seen].filter(([, count]) => count > 1).map(([t]) => t),
    deliveredUnacknowledged: [...seen.keys()].filter((t) => !acknowledged.has(t)).length,
    finalExitCode
  } satisfies CrashReport
})
