/**
 * A real SpamAssassin daemon for tests (Debian `spamd`): started on a free loopback port with no
 * user configuration (`-x`), local tests only (`-L`: no network lookups), one child, logging to
 * stderr, ready when it answers `PING` with `PONG`, and stopped by PID with the test's scope.
 * Where spamd is not installed, `hasSpamd` is false and tests skip saying so.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { connect } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, type Scope } from "effect"
import { stop } from "./child.ts"
import { freePort } from "./milters.ts"

export const spamdBinary = "/usr/sbin/spamd"
export const hasSpamd = existsSync(spamdBinary)
export const spamdSkip = `spamd is not installed (${spamdBinary}; Debian packages spamassassin and spamd): the tests against it are skipped`

export interface Spamd {
  readonly port: number
  readonly pid: number
  readonly log: () => string
}

const pong = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(port, "127.0.0.1")
    let got = ""
    s.setTimeout(2_000, () => s.destroy())
    s.on("data", (d: Buffer) => void (got += d.toString()))
    s.on("close", () => resolve(/^SPAMD\/\S+ 0 PONG/.test(got)))
    s.on("error", () => resolve(false))
    s.end("PING SPAMC/1.5\r\n\r\n")
  })

export const start = (readyMs = 120_000): Effect.Effect<Spamd, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const dir = mkdtempSync(join(tmpdir(), "incoming-spamd-"))
        const port = await freePort()
        const args = [
          "-x", "-L", "--max-children=1", `--listen=127.0.0.1:${port}`, "--allowed-ips=127.0.0.1",
          `--pidfile=${join(dir, "spamd.pid")}`, "-s", "stderr",
          // As root, spamd's children run as nobody (it refuses to scan as root).
          ...(process.getuid?.() === 0 ? ["-u", "nobody"] : [])
        ]
        let out = ""
        const child: ChildProcess = spawn(spamdBinary, args, { stdio: ["ignore", "pipe", "pipe"] })
        child.stdout!.on("data", (b: Buffer) => void (out += b.toString()))
        child.stderr!.on("data", (b: Buffer) => void (out += b.toString()))
        const deadline = Date.now() + readyMs
        while (!(await pong(port))) {
          if (child.exitCode !== null || Date.now() > deadline) {
            child.kill("SIGKILL")
            rmSync(dir, { recursive: true, force: true })
            throw new Error(`spamd did not answer PING on 127.0.0.1:${port}:\n${out}`)
          }
          await new Promise((r) => setTimeout(r, 250))
        }
        return { port, pid: child.pid!, log: () => out, child, dir }
      },
      catch: (e) => (e instanceof Error ? e : new Error(String(e)))
    }),
    (d) => Effect.andThen(stop(d.child, 5_000), Effect.sync(() => rmSync(d.dir, { recursive: true, force: true })))
  ).pipe(Effect.map(({ port, pid, log }) => ({ port, pid, log })))
