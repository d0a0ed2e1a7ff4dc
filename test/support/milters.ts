/**
 * Real milters for tests, each started on a free loopback port in a temporary directory and
 * stopped by PID with the test's scope: OpenDKIM (Debian `opendkim`) signing for one domain
 * with a key the test gives, and rspamd (Debian `rspamd`) with only its proxy worker, in milter
 * mode, scanning itself (`self_scan`), adding its `X-Spamd-Result`, `X-Rspamd-*` and
 * `X-Spam-Status` headers to every message (local clients included), its DNS pointed at a dead loopback port so no lookup
 * leaves the machine. Where a daemon is not installed, `available` is false and tests skip
 * saying so.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { connect, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, type Scope } from "effect"

export const opendkimBinary = "/usr/sbin/opendkim"
export const rspamdBinary = "/usr/bin/rspamd"
export const hasOpenDkim = existsSync(opendkimBinary)
export const hasRspamd = existsSync(rspamdBinary)
export const openDkimSkip = `OpenDKIM is not installed (${opendkimBinary}; Debian package opendkim): the tests against it are skipped`
export const rspamdSkip = `rspamd is not installed (${rspamdBinary}; Debian package rspamd): the tests against it are skipped`

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port
      server.close(() => resolve(port))
    })
  })

const accepts = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(port, "127.0.0.1")
    s.once("connect", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
  })

export interface Daemon {
  readonly port: number
  readonly pid: number
  readonly dir: string
  /** `inet:127.0.0.1:PORT` */
  readonly address: string
  readonly log: () => string
}

const stop = (child: ChildProcess) =>
  Effect.promise(() =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      const kill = setTimeout(() => child.kill("SIGKILL"), 5_000)
      child.once("exit", () => {
        clearTimeout(kill)
        resolve()
      })
      child.kill("SIGTERM")
    })
  )

/** Spawns `binary`, waits until `port` accepts connections (or `readyMs`), stops it and removes `dir` with the scope. */
const daemon = (
  what: string,
  binary: string,
  args: (dir: string, port: number) => Array<string>,
  setup: (dir: string, port: number) => void,
  logFile: (dir: string) => string | undefined,
  readyMs: number
): Effect.Effect<Daemon, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const dir = mkdtempSync(join(tmpdir(), `incoming-${what}-`))
        const port = await freePort()
        setup(dir, port)
        let out = ""
        const child = spawn(binary, args(dir, port), { stdio: ["ignore", "pipe", "pipe"] })
        child.stdout!.on("data", (b: Buffer) => void (out += b.toString()))
        child.stderr!.on("data", (b: Buffer) => void (out += b.toString()))
        const log = () => {
          const file = logFile(dir)
          return out + (file !== undefined && existsSync(file) ? readFileSync(file, "utf8") : "")
        }
        const deadline = Date.now() + readyMs
        while (!(await accepts(port))) {
          const problem = child.exitCode !== null
            ? `${what} exited (${child.exitCode}) before listening`
            : Date.now() > deadline
            ? `${what} did not listen on ${port} within ${readyMs} ms`
            : undefined
          if (problem !== undefined) {
            const text = log().slice(-3000)
            child.kill("SIGKILL")
            rmSync(dir, { recursive: true, force: true })
            throw new Error(`${problem}:\n${text}`)
          }
          await new Promise((r) => setTimeout(r, 200))
        }
        return { child, port, dir, log }
      },
      catch: (e) => (e instanceof Error ? e : new Error(String(e)))
    }),
    ({ child, dir }) => Effect.andThen(stop(child), Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
  ).pipe(Effect.map(({ child, dir, log, port }) => ({ port, pid: child.pid!, dir, address: `inet:127.0.0.1:${port}`, log })))

/** OpenDKIM signing mail from `domain` (any client on 127.0.0.1 is internal) with `privateKey` under `selector`. */
export const openDkim = (options: {
  readonly domain: string
  readonly selector: string
  readonly privateKey: string
  readonly canonicalization?: string
}): Effect.Effect<Daemon, Error, Scope.Scope> =>
  daemon(
    "opendkim",
    opendkimBinary,
    (dir) => ["-f", "-x", join(dir, "opendkim.conf")],
    (dir, port) => {
      writeFileSync(join(dir, "key.pem"), options.privateKey, { mode: 0o600 })
      writeFileSync(
        join(dir, "opendkim.conf"),
        [
          "Syslog no",
          "Background no",
          "Mode sv",
          `Domain ${options.domain}`,
          `Selector ${options.selector}`,
          `KeyFile ${join(dir, "key.pem")}`,
          `Socket inet:${port}@127.0.0.1`,
          `PidFile ${join(dir, "opendkim.pid")}`,
          "InternalHosts 127.0.0.1",
          "RequireSafeKeys no",
          `Canonicalization ${options.canonicalization ?? "simple/simple"}`,
          ""
        ].join("\n")
      )
    },
    () => undefined,
    15_000
  )

/**
 * rspamd's proxy worker in milter mode, scanning itself. It compiles its TLD list and regexps at
 * every start: 15 s on an idle machine, over two minutes at load 16 on two cores.
 */
export const rspamd = (): Effect.Effect<Daemon, Error, Scope.Scope> => rspamdWith("milter")

/** rspamd's normal worker alone, answering HTTP (`/checkv2`, `/ping`) on a free loopback port. */
export const rspamdHttp = (): Effect.Effect<Daemon, Error, Scope.Scope> => rspamdWith("http")

const rspamdWith = (mode: "milter" | "http"): Effect.Effect<Daemon, Error, Scope.Scope> =>
  daemon(
    "rspamd",
    rspamdBinary,
    (dir) => [
      "-f",
      "-u",
      "root",
      "-g",
      "root",
      "-i",
      "-c",
      join(dir, "rspamd.conf"),
      ...["RUNDIR", "DBDIR", "LOGDIR"].map((v) => `--var=${v}=${dir}`),
      `--var=LOCAL_CONFDIR=${join(dir, "local")}`
    ],
    (dir, port) => {
      // The headers rspamd adds to every message, for us too (a client on 127.0.0.1 is "local").
      mkdirSync(join(dir, "local", "local.d"), { recursive: true })
      writeFileSync(
        join(dir, "local", "local.d", "milter_headers.conf"),
        `use = ["x-spamd-result", "x-rspamd-server", "x-rspamd-queue-id", "x-spam-status"];\nskip_local = false;\nskip_authenticated = false;\n`
      )
      writeFileSync(
        join(dir, "rspamd.conf"),
        `.include "$CONFDIR/common.conf"
options {
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }
}
logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "info"; }
${mode === "milter" ? `worker "rspamd_proxy" {
  bind_socket = "127.0.0.1:${port}";
  milter = yes;
  timeout = 120s;
  upstream "local" { default = yes; self_scan = yes; }
  count = 1;
}` : `worker "normal" {
  bind_socket = "127.0.0.1:${port}";
  .include "$CONFDIR/worker-normal.inc"
  count = 1;
}`}
`
      )
    },
    (dir) => join(dir, "rspamd.log"),
    240_000
  )
