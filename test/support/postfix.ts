/**
 * A private Postfix for tests: its own config and queue directories in a temporary directory, an
 * SMTP listener on a free loopback port, every message sent on over LMTP to `lmtp` (Postfix's
 * `default_transport`), its log in a file the test reads. Started with `postfix -c DIR start`,
 * stopped with `postfix -c DIR stop` when the scope closes. Postfix needs root to start; `usable`
 * says whether it can run here and, if not, why.
 */
import { execFileSync } from "node:child_process"
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, type Scope } from "effect"

const postfix = "/usr/sbin/postfix"

export const usable: string | undefined = !existsSync(postfix)
  ? "Postfix is not installed (apt-get install postfix)"
  : process.getuid?.() !== 0
  ? "Postfix needs root to start its private instance"
  : undefined

export interface Postfix {
  readonly smtpPort: number
  /** Postfix's log so far. */
  readonly log: () => string
  readonly dir: string
}

export const freePort: Effect.Effect<number> = Effect.callback<number>((resume) => {
  const s = createServer()
  s.listen(0, "127.0.0.1", () => {
    const port = (s.address() as { port: number }).port
    s.close(() => resume(Effect.succeed(port)))
  })
})

const id = (flag: string, name: string) => Number(execFileSync("id", [flag, name], { encoding: "utf8" }).trim())

/** Only the services a relay needs, none chrooted, none on port 25. */
const masterCf = (smtpPort: number) =>
  [
    `127.0.0.1:${smtpPort} inet n - n - - smtpd`,
    "pickup unix n - n 60 1 pickup",
    "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr",
    "rewrite unix - - n - - trivial-rewrite",
    "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce",
    "trace unix - - n - 0 bounce",
    "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush",
    "proxymap unix - - n - - proxymap",
    "smtp unix - - n - - smtp",
    "showq unix n - n - - showq",
    "error unix - - n - - error",
    "retry unix - - n - - error",
    "discard unix - - n - - discard",
    "lmtp unix - - n - - lmtp",
    "anvil unix - - n - 1 anvil",
    "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd"
  ].join("\n") + "\n"

/** `lmtp`: Postfix's next-hop syntax, `inet:127.0.0.1:PORT` or `unix:/path`. */
export const start = (lmtp: string): Effect.Effect<Postfix, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const smtpPort = yield* freePort
      const dir = mkdtempSync(join(tmpdir(), "incoming-postfix-"))
      chmodSync(dir, 0o755)
      for (const d of ["config", "queue", "data"]) mkdirSync(join(dir, d))
      chownSync(join(dir, "data"), id("-u", "postfix"), id("-g", "postfix"))
      writeFileSync(join(dir, "config", "main.cf"), [
        "compatibility_level = 3.6",
        `queue_directory = ${dir}/queue`,
        `data_directory = ${dir}/data`,
        "command_directory = /usr/sbin",
        "daemon_directory = /usr/lib/postfix/sbin",
        "meta_directory = /etc/postfix",
        "shlib_directory = /usr/lib/postfix",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "inet_interfaces = loopback-only",
        "inet_protocols = ipv4",
        "myhostname = postfix.test",
        "mydomain = postfix.test",
        "myorigin = postfix.test",
        "mydestination =",
        "relay_domains =",
        "mynetworks = 127.0.0.0/8",
        `default_transport = lmtp:${lmtp}`,
        "alias_maps =",
        "alias_database =",
        "smtputf8_enable = no",
        "biff = no",
        `maillog_file = ${dir}/maillog`,
        `maillog_file_prefixes = ${dir}`,
        // Retry soon: a test waits for its outcome.
        "minimal_backoff_time = 5s",
        "queue_run_delay = 5s"
      ].join("\n") + "\n")
      writeFileSync(join(dir, "config", "master.cf"), masterCf(smtpPort))
      yield* Effect.try({
        try: () => execFileSync(postfix, ["-c", join(dir, "config"), "start"], { stdio: "pipe" }),
        catch: (e) => new Error(`postfix start failed: ${String(e)}\n${readLog(dir)}`)
      })
      return { smtpPort, dir, log: () => readLog(dir) }
    }),
    (p) =>
      Effect.sync(() => {
        try {
          execFileSync(postfix, ["-c", join(p.dir, "config"), "stop"], { stdio: "ignore" })
        } catch {
          // Already stopped.
        }
        rmSync(p.dir, { recursive: true, force: true })
      })
  )

const readLog = (dir: string): string => {
  try {
    return readFileSync(join(dir, "maillog"), "utf8")
  } catch {
    return ""
  }
}

/** Waits (bounded) until Postfix's log matches `re`. */
export const awaitLog = (p: Postfix, re: RegExp, timeoutMs = 60_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!re.test(p.log())) {
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`Postfix log never matched ${re}:\n${p.log()}`))
      yield* Effect.sleep(100)
    }
    return p.log()
  })
