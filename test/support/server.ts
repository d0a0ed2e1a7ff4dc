/**
 * Runs `incoming serve` as a child process for whole-process tests: finds the bound port from
 * its JSON log, collects its output, and stops it by PID (only the process we started).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Effect, type Scope } from "effect"

const root = new URL("../../", import.meta.url).pathname

export interface Served {
  readonly proc: ChildProcess
  readonly port: number
  readonly output: () => string
  /** Resolves with the first log line matching `re` (or fails after `timeoutMs`). */
  readonly waitFor: (re: RegExp, timeoutMs?: number) => Effect.Effect<string, Error>
  readonly exitCode: Effect.Effect<number | null>
  readonly signal: (sig: NodeJS.Signals) => Effect.Effect<void>
}

/** `env` is added to this process's environment (for `${VAR}` references in a config file). */
export const serve = (args: ReadonlyArray<string>, cwd = root, env: Readonly<Record<string, string>> = {}): Effect.Effect<Served, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Served, Error>((resume) => {
      const proc = spawn(process.execPath, [`${root}src/bin/incoming.ts`, "serve", "--log-format", "json", ...args], {
        cwd,
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let out = ""
      const watchers: Array<{ re: RegExp; hit: (line: string) => void }> = []
      let exit: number | null | undefined
      const exitWaiters: Array<(c: number | null) => void> = []
      const onChunk = (chunk: Buffer) => {
        out += chunk.toString()
        for (const w of [...watchers]) {
          const m = out.split("\n").find((l) => w.re.test(l))
          if (m !== undefined) {
            watchers.splice(watchers.indexOf(w), 1)
            w.hit(m)
          }
        }
      }
      proc.stdout!.on("data", onChunk)
      proc.stderr!.on("data", onChunk)
      proc.on("exit", (code) => {
        exit = code
        for (const w of exitWaiters.splice(0)) w(code)
      })
      const waitFor = (re: RegExp, timeoutMs = 10_000) =>
        Effect.callback<string, Error>((r) => {
          const m = out.split("\n").find((l) => re.test(l))
          if (m !== undefined) return r(Effect.succeed(m))
          watchers.push({ re, hit: (line) => r(Effect.succeed(line)) })
        }).pipe(Effect.timeoutOrElse({
          duration: timeoutMs,
          orElse: () => Effect.fail(new Error(`timed out waiting for ${re} in server output:\n${out}`))
        }))
      const exitCode = Effect.callback<number | null>((r) => {
        if (exit !== undefined) return r(Effect.succeed(exit))
        exitWaiters.push((c) => r(Effect.succeed(c)))
      })
      const served = (port: number): Served => ({
        proc,
        port,
        output: () => out,
        waitFor,
        exitCode,
        signal: (sig) => Effect.sync(() => void proc.kill(sig))
      })
      proc.once("exit", (code) => {
        if (!out.includes("listening on")) resume(Effect.fail(new Error(`server exited (${code}) before listening:\n${out}`)))
      })
      watchers.push({
        re: /listening on /,
        hit: (line) => {
          const port = Number(/listening on (?:\[[^\]]+\]|[^\s":]+):(\d+)/.exec(line)?.[1])
          resume(Effect.succeed(served(port)))
        }
      })
    }).pipe(Effect.timeoutOrElse({ duration: 45_000, orElse: () => Effect.fail(new Error("server did not start")) })),
    (s) =>
      Effect.gen(function*() {
        if (s.proc.exitCode === null && s.proc.signalCode === null) {
          s.proc.kill("SIGKILL")
          yield* s.exitCode
        }
      })
  )

export interface Ran {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly cwd: string
  readonly env?: Record<string, string>
  /** Past it the command is killed (SIGKILL, by its PID) and `code` is null: for a `serve` expected to exit. */
  readonly timeoutMs?: number
  /** Run as another user (the test runs as root: how a permission problem can be shown at all). */
  readonly uid?: number
  readonly gid?: number
}

/** Runs one `incoming ...` command to completion (check-config, queue, users) and collects its output. */
export const runCli = (args: ReadonlyArray<string>, options: RunOptions) => runScript(`${root}src/bin/incoming.ts`, args, options)

/** Runs a script of ours (`.ts`, with this Node) to completion and collects its output. */
export const runScript = (file: string, args: ReadonlyArray<string>, options: RunOptions) =>
  Effect.callback<Ran>((resume) => {
    const child = spawn(process.execPath, [file, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
      ...(options.uid !== undefined ? { uid: options.uid } : {}),
      ...(options.gid !== undefined ? { gid: options.gid } : {})
    })
    let stdout = ""
    let stderr = ""
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), options.timeoutMs)
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()))
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()))
    child.on("close", (code) => {
      if (timer !== undefined) clearTimeout(timer)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => {
      if (timer !== undefined) clearTimeout(timer)
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    })
  })

/** Files delivered into `<maildir>/<rcpt>/new` (none when the folder does not exist yet). */
export const maildirFiles = (maildir: string, rcpt: string): Array<string> => {
  try {
    return readdirSync(join(maildir, rcpt, "new")).map((f) => join(maildir, rcpt, "new", f))
  } catch {
    return []
  }
}

/** Waits (bounded, ~10 s) until `<maildir>/<rcpt>/new` holds files matching `enough`, and returns them. */
export const waitForMaildir = (
  maildir: string,
  rcpt: string,
  enough: (files: ReadonlyArray<string>) => boolean
): Effect.Effect<Array<string>> =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      const files = maildirFiles(maildir, rcpt)
      if (enough(files)) return files
      yield* Effect.sleep("50 millis")
    }
    return maildirFiles(maildir, rcpt)
  })

/**
 * Writes `<dir>/incoming.toml` for a standalone server: `mx.test` for `example.test`, one listener
 * on a free port, Maildir delivery under `<dir>/mail`, data under `<dir>/data`, the given DNS
 * server, then `sections` (TOML text, e.g. `[[policies]]` tables). Returns the file and the Maildir.
 */
export const writeStandaloneConfig = (
  dir: string,
  options: { readonly dnsServer?: string; readonly listener?: string; readonly sections: ReadonlyArray<string> }
): { readonly config: string; readonly maildir: string } => {
  const maildir = join(dir, "mail")
  const config = join(dir, "incoming.toml")
  writeFileSync(
    config,
    [
      `hostname = "mx.test"`,
      `domains = ["example.test"]`,
      `data_dir = "${join(dir, "data")}"`,
      `[[listeners]]\nhost = "127.0.0.1"\nport = 0${options.listener === undefined ? "" : `\n${options.listener}`}`,
      `[delivery]\nadapter = "maildir"\nmaildir = { root = "${maildir}" }`,
      ...(options.dnsServer === undefined ? [] : [`[dns]\nservers = ["${options.dnsServer}"]\ntimeout = "1s"`]),
      ...options.sections
    ].join("\n\n")
  )
  return { config, maildir }
}
