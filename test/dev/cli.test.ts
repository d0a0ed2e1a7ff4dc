/**
 * `incoming dev` as a process, the way a developer runs it: it prints the SMTP and inbox
 * addresses, catches mail, warns when the inbox is reachable from other machines, reports bad
 * flags one line each, and exits 0 on SIGTERM after draining.
 */
import { spawn } from "node:child_process"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { InboxClient, TestIncoming } from "../../src/testing/index.ts"
import { runCli } from "../support/server.ts"
import { sendMail } from "./helpers.ts"

const root = new URL("../../", import.meta.url).pathname

/** Starts `incoming dev ARGS`; resolves once both addresses are printed. Killed (by PID) with the scope. */
const startDev = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.callback<{ smtpPort: number; url: string; output: () => string; stop: (signal: NodeJS.Signals) => Effect.Effect<number | null> }, Error>((resume) => {
      const proc = spawn(process.execPath, [`${root}src/bin/incoming.ts`, "dev", "--log-format", "json", ...args], { stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      let done = false
      const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)))
      const check = () => {
        const smtp = /incoming dev: SMTP {2}smtp:\/\/[^:]+:(\d+)/.exec(out)
        const inbox = /incoming dev: inbox (http:\/\/\S+)/.exec(out)
        if (!done && smtp !== null && inbox !== null) {
          done = true
          resume(Effect.succeed({
            smtpPort: Number(smtp[1]),
            url: inbox[1]!,
            output: () => out,
            stop: (signal) => Effect.promise(() => (proc.kill(signal), exited))
          }))
        }
      }
      proc.stdout!.on("data", (c: Buffer) => ((out += c.toString()), check()))
      proc.stderr!.on("data", (c: Buffer) => (out += c.toString()))
      proc.once("exit", (code) => {
        if (!done) resume(Effect.fail(new Error(`incoming dev exited (${code}) before printing its addresses:\n${out}`)))
      })
    }).pipe(Effect.timeoutOrElse({ duration: 30_000, orElse: () => Effect.fail(new Error("incoming dev did not start")) })),
    (d) => Effect.asVoid(d.stop("SIGKILL"))
  )

describe("incoming dev (process)", () => {
  it.live("prints both addresses, catches mail, and exits 0 on SIGTERM", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const dev = yield* startDev(["--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "dev"), "--max-messages", "10"])
      assert.match(dev.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      yield* sendMail(dev.smtpPort, { from: "app@app.test", to: "someone@anywhere.test", subject: "From the process", text: "hi" }, { auth: { user: "x", pass: "y" } })
      const m = yield* InboxClient.make(dev.url).wait("subject:\"from the process\"")
      assert.deepStrictEqual(m.envelope.to, ["someone@anywhere.test"])
      const page = yield* Effect.promise(() => fetch(dev.url).then((r) => r.text()))
      assert.include(page, "<title>incoming dev</title>")
      // An open event stream and a pending wait do not hold the shutdown up: both end.
      const waiting = yield* Effect.forkChild(
        Effect.promise(() => fetch(`${dev.url}/api/messages/wait?query=never&timeout=60s`).then((r) => r.status))
      )
      const stream = yield* Effect.promise(() => fetch(`${dev.url}/api/events`))
      const reader = stream.body!.getReader()
      // The first frame is `ready`: the stream is open (and the wait, sent before it, is waiting).
      assert.include(new TextDecoder().decode((yield* Effect.promise(() => reader.read())).value), "event: ready")
      const streamEnded = yield* Effect.forkChild(Effect.promise(async () => {
        while (!(await reader.read()).done) { /* keep-alives */ }
        return true
      }))
      const stoppedAt = Date.now()
      assert.strictEqual(yield* dev.stop("SIGTERM"), 0)
      assert.isBelow(Date.now() - stoppedAt, 10_000)
      assert.isTrue(yield* Fiber.join(streamEnded))
      assert.strictEqual(yield* Fiber.join(waiting), 503)
      assert.notInclude(dev.output(), "WARN")
    }))

  it.live("warns when the inbox listens beyond loopback", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const dev = yield* startDev(["--smtp", "127.0.0.1:0", "--http", "0.0.0.0:0", "--data-dir", dir])
      assert.match(dev.url, /^http:\/\/localhost:\d+$/)
      assert.match(dev.output(), /"message":"the dev inbox web server listens on 0\.0\.0\.0: anyone who can reach [^"]*","level":"WARN"/)
      assert.strictEqual(yield* dev.stop("SIGINT"), 0)
    }))

  it.live("reports bad flags one line each, naming the flag", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const ran = yield* runCli(["dev", "--smtp", "nowhere", "--tls-cert", "x.pem", "--release-smtp", "127.0.0.1:25", "--basic-auth", "nopassword"], { cwd: dir })
      assert.strictEqual(ran.code, 1)
      const lines = ran.stderr.trim().split("\n")
      assert.deepStrictEqual(lines, [
        "--smtp: \"nowhere\" is not HOST:PORT (IPv6 as [::1]:PORT)",
        "--tls-cert: give both --tls-cert and --tls-key",
        "--basic-auth: expected USER:PASSWORD",
        "--release-allow: --release-smtp needs at least one --release-allow (who messages may be released to)"
      ])
    }))
})
