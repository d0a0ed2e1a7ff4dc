/**
 * Crash safety of the durable queue: `incoming serve` with the SQLite queue is SIGKILLed at
 * random moments while concurrent sessions send mail, and restarted, for CYCLES cycles. Every
 * message that got a 250 must end up delivered (Maildir) — zero lost. Duplicates are allowed
 * only for deliveries in flight at a kill; their number is reported.
 *
 * Bounded: CYCLES × (up to ~0.8 s of load) plus a final drain. Runnable alone:
 * `npm run test:crash` (CRASH_CYCLES / CRASH_SESSIONS override the size).
 */
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Random } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { serve } from "../support/server.ts"

const CYCLES = Number(process.env["CRASH_CYCLES"] ?? 10)
const SESSIONS = Number(process.env["CRASH_SESSIONS"] ?? 6)

const tokensIn = (maildir: string): Map<string, number> => {
  const seen = new Map<string, number>()
  let boxes: Array<string> = []
  try {
    boxes = readdirSync(maildir)
  } catch {
    return seen
  }
  for (const box of boxes) {
    const dir = join(maildir, box, "new")
    for (const f of readdirSync(dir)) {
      const m = /X-Token: (\S+)/.exec(readFileSync(join(dir, f), "utf8"))
      if (m !== null) seen.set(m[1]!, (seen.get(m[1]!) ?? 0) + 1)
    }
  }
  return seen
}

/** One session sending messages back to back until the server dies; returns tokens that got 250. */
const sender = (port: number, prefix: string, accepted: Set<string>) =>
  Effect.gen(function*() {
    let n = 0
    while (true) {
      const token = `${prefix}-${n++}`
      const reply = yield* SmtpClient.send({
        port,
        from: "load@remote.test",
        to: [`user${n % 3}@localhost`],
        data: `Subject: crash test\r\nX-Token: ${token}\r\n\r\n${"x".repeat(200 + (n % 5) * 1000)}\r\n`
      })
      if (reply.code === 250) accepted.add(token)
    }
  }).pipe(Effect.ignore)

describe("crash safety (SIGKILL)", () => {
  it.live(`no message that got 250 is lost across ${CYCLES} kill/restart cycles`, () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-crash-")
      const maildir = join(dir, "mail")
      const args = ["--listen", "127.0.0.1:0", "--maildir", maildir, "--data-dir", join(dir, "data"), "--queue", "sqlite", "--workers", "2"]
      const accepted = new Set<string>()
      let kills = 0

      for (let cycle = 0; cycle < CYCLES; cycle++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const server = yield* serve(args)
          // Forked one after another from this fiber, so they are its children and live until joined.
          const senders = yield* Effect.forEach(
            Array.from({ length: SESSIONS }, (_, i) => i),
            (i) => Effect.forkChild(sender(server.port, `c${cycle}s${i}`, accepted))
          )
          yield* Effect.sleep(`${yield* Random.nextIntBetween(150, 800)} millis`)
          yield* server.signal("SIGKILL")
          yield* server.exitCode
          kills++
          yield* Fiber.joinAll(senders)
        }))
      }

      // A last start delivers whatever the crashes left in the queue.
      yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* serve(args)
        for (let i = 0; i < 400; i++) {
          const seen = tokensIn(maildir)
          if ([...accepted].every((t) => seen.has(t))) break
          yield* Effect.sleep("50 millis")
        }
        yield* server.signal("SIGTERM")
        assert.strictEqual(yield* server.exitCode, 0)
      }))

      const seen = tokensIn(maildir)
      const lost = [...accepted].filter((t) => !seen.has(t))
      const duplicated = [...seen.values()].filter((c) => c > 1).length
      console.log(
        `crash test: ${kills} SIGKILLs, ${accepted.size} messages got 250, ${lost.length} lost, ` +
          `${duplicated} delivered twice, ${seen.size - accepted.size} delivered without a 250 seen by the client`
      )
      assert.isAbove(accepted.size, CYCLES * 5, "the load generator barely sent anything")
      assert.deepStrictEqual(lost, [])
    }), { timeout: 240_000 })
})
