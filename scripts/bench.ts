/**
 * `npm run bench`: Incoming's throughput benchmark. In one run it starts the servers under test
 * on 127.0.0.1 — "bare" (nodemailer smtp-server draining DATA, the ceiling of our stack),
 * "memory" (Incoming with the memory queue) and "sqlite" (Incoming with the durable SQLite queue)
 * — and drives each with the same load generator (scripts/bench/load.ts, in its own process) over
 * a matrix of message size × concurrent sessions × connection mode. Each cell is calibrated per
 * target to a run of about --seconds, then repeated --reps times with the targets' order rotated
 * in every repetition, so that ratios between targets are taken from runs that sat next to each
 * other in time. It prints median msgs/s per target, per-repetition ratios (median), errors and
 * CPU costs, and writes every run as a key=value line to .bench/results-<timestamp>.txt.
 *
 * "auth" is Incoming with the memory queue and the spf, dkim and dmarc rules on, asking a dnsmasq
 * the bench starts on loopback (SPF, DMARC p=reject and the DKIM key of load.test); while it is
 * among the targets every target gets the same DKIM-signed message, and the summary prints the
 * server CPU the rules add per message (auth − memory, per repetition, median).
 *
 * "milter" is Incoming with the memory queue and one `milter` rule talking to a local OpenDKIM
 * (Debian `opendkim`, started by the bench on loopback) that signs the load generator's domain:
 * at --sessions 1 the milter/memory ratio gives the latency a local filter adds per message.
 *
 *   npm run bench -- --targets memory,auth --sizes 1024 --sessions 10 --modes persist
 *
 * Optional: --targets may add "lean" (scripts/bench/lean-server.ts: smtp-server with plain
 * callbacks and the same SQLite group commit on a writer thread — how fast the durable design can
 * go with nothing else around it); --peers adds Postfix from the peer kit (/work/shared/bench, if set up), --check-gen
 * also drives "bare" with Postfix's smtp-source to show whether our generator reaches the same
 * ceiling. Everything is bounded (message counts, a hard cap per run) and stops by itself; only
 * processes this script started are stopped, on exit and on SIGINT/SIGTERM.
 *
 *   npm run bench -- --quick --targets bare
 *   npm run bench -- --reps 5 --sizes 1024 --sessions 10 --modes persist,conn
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, statfsSync, writeFileSync } from "node:fs"
import { stripTypeScriptTypes } from "node:module"
import net from "node:net"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { openIdle } from "./bench/idle.ts"
import type { LoadResult } from "./bench/load.ts"
import {
  type Started,
  assertListenerIs,
  groupCpuSeconds,
  groupRssKiB,
  machineCpu,
  pidsCpuSeconds,
  reapedChildrenCpuSeconds,
  startServer,
  stopAll,
  stopServer,
  stopAllSync,
  waitIdle,
  waitListening
} from "./bench/procs.ts"
import { type Cell, type Column, type RunRecord, cpuTable, flagged, median, rawLine, summaryTable } from "./bench/report.ts"

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const LOAD_SCRIPT = path.join(REPO, "scripts/bench/load.ts")
const BARE_SCRIPT = path.join(REPO, "scripts/bench/bare-server.ts")
const LEAN_SCRIPT = path.join(REPO, "scripts/bench/lean-server.ts")
const INCOMING_CLI = path.join(REPO, "src/bin/incoming.ts")
const SMTP_SOURCE = "/usr/sbin/smtp-source"
const TMPFS_MAGIC = 0x01021994
const KNOWN_TARGETS = ["bare", "memory", "sqlite", "lean", "auth", "postgres", "milter"] as const
const DNSMASQ = "/usr/sbin/dnsmasq"
type TargetName = (typeof KNOWN_TARGETS)[number]
type Mode = "persist" | "conn"

// ---- options ---------------------------------------------------------------------------------

const { values: argv } = parseArgs({
  options: {
    reps: { type: "string" },
    sizes: { type: "string", default: "1024,102400" },
    sessions: { type: "string", default: "1,10" },
    modes: { type: "string", default: "persist,conn" },
    targets: { type: "string", default: "bare,memory,sqlite" },
    seconds: { type: "string" },
    "max-seconds": { type: "string", default: "20" },
    warm: { type: "string" },
    "memory-reducer": { type: "boolean", default: false },
    quick: { type: "boolean", default: false },
    peers: { type: "boolean", default: false },
    "check-gen": { type: "boolean", default: false },
    helo: { type: "boolean", default: false },
    "base-port": { type: "string", default: "2560" },
    "data-root": { type: "string" },
    "keep-data": { type: "boolean", default: false },
    out: { type: "string" },
    base: { type: "string" },
    kit: { type: "string", default: "/work/shared/bench" },
    "pg-url": { type: "string", default: "postgres://postgres@127.0.0.1:5432/test" },
    rss: { type: "string" },
    js: { type: "boolean", default: false },
    "rss-only": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false }
  },
  strict: true
})

if (argv.help) {
  process.stdout.write(`usage: npm run bench -- [options]
  --targets bare,memory,sqlite   servers under test (memory/sqlite need src/bin/incoming.ts); also "lean":
                                 callback-only smtp-server + the same SQLite group commit, no Effect
                                 (scripts/bench/lean-server.ts), the ceiling of the durable design;
                                 "postgres": Incoming with the shared PostgreSQL queue on a database
                                 the bench creates (and drops) on --pg-url's server
  --pg-url URL                   PostgreSQL for the postgres target (default postgres://postgres@127.0.0.1:5432/test)
  --sizes 1024,102400            message body sizes in bytes
  --sessions 1,10                concurrent sessions
  --modes persist,conn           persist = many messages per connection, conn = one per connection
  --reps N                       repetitions per cell (default 3; 1 with --quick)
  --seconds S                    target length of one run (default 5; 1 with --quick)
  --max-seconds S                hard cap of one run (default 20)
  --warm N                       before a server's first measured run, N messages of warm-up in runs like
                                 the measured ones (default 60000; 0 with --quick), a quarter of that
                                 before each later cell (new code paths); at most 60 s per server and
                                 cell. A fresh Node server runs part of its first tens of thousands of
                                 messages unoptimized while V8 compiles (docs/benchmark.md, issue 20)
  --memory-reducer               keep V8's memory reducer in our Node servers (bare, lean, Incoming). By
                                 default they run with --no-memory-reducer: a server idle while the other
                                 targets run (10-20 s) is shrunk by it and loses its compiled code, and its
                                 next run pays V8's warm-up again (a busy server never idles into it)
  --quick                        smoke test: one repetition, short runs
  --peers                        also Postfix from the peer kit (--kit, default /work/shared/bench), if set up
  --check-gen                    also drive "bare" with Postfix's smtp-source (${SMTP_SOURCE}) for comparison
  --helo                         send HELO instead of EHLO (as smtp-source does)
  --base-port P                  first port to try for our servers (2500-2599, default 2560)
  --data-root DIR                where the Incoming targets' fresh data dirs go (default .bench/data)
  --keep-data                    do not delete those data dirs at the end
  --out FILE                     raw results file (default .bench/results-<timestamp>.txt)
  --rss N                        before the matrix: resident set of each of our targets (all its processes)
                                 fresh at rest, then with N idle connections from 10 loopback addresses
  --rss-only                     only that (no matrix)
  --js                           run our servers as plain JavaScript, as the installed package runs: Incoming
                                 from dist/ (\`npm run build\` first; refused if src/ is newer), bare and lean
                                 from copies of their scripts with the types stripped (.bench/js/). From .ts,
                                 every Node isolate (the SQLite writer thread too) loads Node's type stripper
                                 (~8 MiB resident each): resident sets are not the product's without --js
  --base DIR                     A/B: also run memory/sqlite (those among --targets) from another checkout
                                 DIR (e.g. \`git worktree add DIR HEAD~1\` with node_modules), as targets
                                 "memory-base"/"sqlite-base", interleaved with this tree's; ratios X/X-base
`)
  process.exit(0)
}

const fail = (msg: string): never => {
  process.stderr.write(`bench: ${msg}\n`)
  process.exit(2)
}

const intList = (name: string, raw: string): Array<number> => {
  const xs = raw.split(",").map((s) => Number(s.trim()))
  if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x <= 0)) fail(`--${name} wants positive integers, got "${raw}"`)
  return xs
}

const quick = argv.quick
const reps = argv.reps !== undefined ? intList("reps", argv.reps)[0] ?? 1 : quick ? 1 : 3
const sizes = intList("sizes", argv.sizes)
const sessionsList = intList("sessions", argv.sessions)
const modes = argv.modes.split(",").map((m) => m.trim())
for (const m of modes) if (m !== "persist" && m !== "conn") fail(`--modes: unknown mode "${m}"`)
const requestedTargets = argv.targets.split(",").map((t) => t.trim())
for (const t of requestedTargets) if (!(KNOWN_TARGETS as ReadonlyArray<string>).includes(t)) fail(`--targets: unknown target "${t}" (known: ${KNOWN_TARGETS.join(", ")})`)
/** The checkout of the A/B baseline (--base): its memory/sqlite/postgres targets run as "<name>-base". */
const baseDir = argv.base === undefined ? undefined : path.resolve(argv.base)
if (baseDir !== undefined && !existsSync(path.join(baseDir, "src/bin/incoming.ts"))) fail(`--base: ${baseDir}/src/bin/incoming.ts does not exist`)
const BASE_SUFFIX = "-base"
const targetNames = baseDir === undefined
  ? requestedTargets
  : requestedTargets.flatMap((t) => (t === "memory" || t === "sqlite" || t === "postgres" ? [t, `${t}${BASE_SUFFIX}`] : [t]))
const runSeconds = argv.seconds !== undefined ? Number(argv.seconds) : quick ? 1 : 5
const maxSeconds = Number(argv["max-seconds"])
if (!(runSeconds > 0 && maxSeconds > 0 && maxSeconds <= 120 && runSeconds < maxSeconds)) fail("need 0 < --seconds < --max-seconds <= 120")
const basePort = Number(argv["base-port"])
if (!Number.isInteger(basePort) || basePort < 2500 || basePort > 2599) fail("--base-port must be in 2500-2599")
// Bounds on a run's message count: at least a few per session, at most what a capped run could use.
const MAX_COUNT = 300_000
const calibSeconds = quick ? 0.3 : 1
const warmMessages = argv.warm !== undefined ? Number(argv.warm) : quick ? 0 : 60_000
if (!(Number.isInteger(warmMessages) && warmMessages >= 0)) fail("--warm wants a count of messages (0: none)")
// A cap on each server's warm-up in one cell, for slow cells (100 KiB, one message per connection).
const warmCapSeconds = 60
// V8 flags of every Node server under test; see --memory-reducer.
const nodeFlags: ReadonlyArray<string> = argv["memory-reducer"] ? [] : ["--no-memory-reducer"]

// ---- output ----------------------------------------------------------------------------------

const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "")
const outFile = path.resolve(argv.out ?? path.join(REPO, ".bench", `results-${stamp}.txt`))
mkdirSync(path.dirname(outFile), { recursive: true })
const out = (line: string): void => appendFileSync(outFile, line + "\n")
const say = (line: string): void => {
  process.stderr.write(line + "\n")
}

// ---- cleanup: only what we started -----------------------------------------------------------

let currentGen: ChildProcess | undefined
const dataDirs: Array<string> = []
/** Databases the postgres target created, dropped on exit (psql, by name: only ours). */
const pgDatabases: Array<string> = []
let stopPostfix: (() => void) | undefined

const cleanupSync = (): void => {
  if (currentGen !== undefined && currentGen.exitCode === null) currentGen.kill("SIGKILL")
  stopAllSync()
  stopPostfix?.()
  stopPostfix = undefined
  if (!argv["keep-data"]) for (const d of dataDirs.splice(0)) rmSync(d, { recursive: true, force: true })
  for (const db of pgDatabases.splice(0)) spawnSync("psql", [argv["pg-url"], "-q", "-c", `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`], { stdio: "ignore" })
}
process.on("exit", cleanupSync)
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    say(`\nbench: ${sig}, stopping the servers it started; partial results in ${outFile}`)
    cleanupSync()
    process.exit(130)
  })
}

// ---- targets ---------------------------------------------------------------------------------

interface Target {
  readonly name: string
  readonly port: number
  /** CPU seconds used so far by the server (all its processes). */
  readonly cpu: () => number
  /** Resident set of the server (all its processes), KiB; undefined where we do not own it. */
  readonly rss?: () => number
  /** Leaves the server idle and empty before a run; false if it did not get there in time. */
  readonly settle: () => Promise<boolean>
  /** Whether its speed depends on a JIT warming up (our Node servers; not Postfix). */
  readonly jit: boolean
  readonly describe: string
}

const portFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const srv = net.createServer()
    srv.once("error", () => resolve(false))
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)))
  })

let nextPort = basePort
const allocPort = async (): Promise<number> => {
  for (; nextPort <= 2599; nextPort++) {
    if (await portFree(nextPort)) return nextPort++
  }
  return fail("no free port left in 2500-2599")
}

/**
 * --js: a reference server's script as plain JavaScript in .bench/js/ (types stripped, relative
 * `.ts` specifiers pointing at the stripped copies), so that it runs without Node's type stripper.
 */
const jsDir = path.join(REPO, ".bench", "js")
const strippedScript = (script: string): string => {
  mkdirSync(jsDir, { recursive: true })
  const name = path.basename(script, ".ts")
  const code = stripTypeScriptTypes(readFileSync(script, "utf8"), { mode: "strip" })
    .replace(/(["'])(\.\.?\/[^"']+)\.ts\1/g, "$1$2.js$1")
  writeFileSync(path.join(jsDir, `${name}.js`), code)
  // Its relative imports, likewise (only siblings in scripts/bench/ are used).
  for (const m of code.matchAll(/["']\.\/([^"']+)\.js["']/g)) {
    const dep = path.join(path.dirname(script), `${m[1]}.ts`)
    if (m[1] !== undefined && existsSync(dep) && !existsSync(path.join(jsDir, `${m[1]}.js`))) strippedScript(dep)
  }
  return path.join(jsDir, `${name}.js`)
}

/** The Incoming command of a checkout: src/bin/incoming.ts, or with --js its compiled dist/bin/incoming.js. */
const incomingCli = (root: string): string | { readonly error: string } => {
  if (!argv.js) return path.join(root, "src/bin/incoming.ts")
  const cli = path.join(root, "dist/bin/incoming.js")
  if (!existsSync(cli)) return { error: `--js: ${cli} does not exist (npm run build in ${root})` }
  const built = statSync(cli).mtimeMs
  const newer = readdirSync(path.join(root, "src"), { recursive: true, withFileTypes: true })
    .find((e) => e.isFile() && e.name.endsWith(".ts") && statSync(path.join(e.parentPath, e.name)).mtimeMs > built)
  if (newer !== undefined) return { error: `--js: ${path.join(newer.parentPath, newer.name)} is newer than ${cli} (npm run build in ${root})` }
  return cli
}

const nodeBin = existsSync(path.join(REPO, "node_modules/.bin/node")) ? path.join(REPO, "node_modules/.bin/node") : process.execPath

const dataRoot = path.resolve(argv["data-root"] ?? path.join(REPO, ".bench", "data"))

/** The DKIM key of load.test and the dnsmasq that publishes it, started once for the "auth" target. */
let authSetup: { readonly keyFile: string; readonly dnsServer: string } | undefined

const startAuthDns = async (): Promise<{ readonly keyFile: string; readonly dnsServer: string } | string> => {
  if (authSetup !== undefined) return authSetup
  if (!existsSync(DNSMASQ)) return `${DNSMASQ} is not installed (Debian dnsmasq-base)`
  const { generateKeyPairSync } = await import("node:crypto")
  mkdirSync(dataRoot, { recursive: true })
  const dir = mkdtempSync(path.join(dataRoot, "auth-dns-"))
  dataDirs.push(dir)
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 })
  const keyFile = path.join(dir, "dkim.pem")
  writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }).toString(), { mode: 0o600 })
  const p = publicKey.export({ type: "spki", format: "der" }).toString("base64")
  const key = `v=DKIM1; k=rsa; p=${p}`
  const port = await allocPort()
  const logPath = outFile.replace(/\.txt$/, "") + ".dnsmasq.log"
  const s = startServer("dnsmasq", DNSMASQ, [
    "--keep-in-foreground", `--port=${port}`, "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
    "--conf-file=/dev/null", "--pid-file=", "--user=root", "--log-facility=-", "--local=/test/", "--local-ttl=300",
    "--txt-record=load.test,v=spf1 ip4:127.0.0.1 -all",
    "--txt-record=_dmarc.load.test,v=DMARC1; p=reject",
    `--txt-record=bench._domainkey.load.test,${(key.match(/.{1,255}/g) ?? []).join(",")}`,
    "--host-record=load.test,127.0.0.1"
  ], { cwd: REPO, logPath })
  await waitListening(s, port, 10_000)
  authSetup = { keyFile, dnsServer: `127.0.0.1:${port}` }
  return authSetup
}

const OPENDKIM = "/usr/sbin/opendkim"

/** A local OpenDKIM signing load.test, for the "milter" target; its milter address. */
const startOpenDkim = async (): Promise<string> => {
  if (!existsSync(OPENDKIM)) return `!${OPENDKIM} is not installed (Debian opendkim)`
  const { generateKeyPairSync } = await import("node:crypto")
  mkdirSync(dataRoot, { recursive: true })
  const dir = mkdtempSync(path.join(dataRoot, "opendkim-"))
  dataDirs.push(dir)
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 })
  writeFileSync(path.join(dir, "key.pem"), privateKey.export({ type: "pkcs8", format: "pem" }).toString(), { mode: 0o600 })
  const port = await allocPort()
  writeFileSync(path.join(dir, "opendkim.conf"), [
    "Syslog no", "Background no", "Mode s", "Domain load.test", "Selector bench", `KeyFile ${path.join(dir, "key.pem")}`,
    `Socket inet:${port}@127.0.0.1`, `PidFile ${path.join(dir, "opendkim.pid")}`, "InternalHosts 127.0.0.1", "RequireSafeKeys no", ""
  ].join("\n"))
  const s = startServer("opendkim", OPENDKIM, ["-f", "-x", path.join(dir, "opendkim.conf")], { cwd: REPO, logPath: outFile.replace(/\.txt$/, "") + ".opendkim.log" })
  await waitListening(s, port, 15_000)
  return `inet:127.0.0.1:${port}`
}

const startOwn = async (label: string): Promise<Target | string> => {
  // "<target>-base" is the same target run from the --base checkout.
  const fromBase = baseDir !== undefined && label.endsWith(BASE_SUFFIX)
  const name = (fromBase ? label.slice(0, -BASE_SUFFIX.length) : label) as TargetName
  const cliOf = incomingCli(fromBase ? baseDir : REPO)
  if (typeof cliOf !== "string" && name !== "bare" && name !== "lean") return cliOf.error
  const cli = typeof cliOf === "string" ? cliOf : INCOMING_CLI
  const auth = name === "auth" ? await startAuthDns() : undefined
  if (typeof auth === "string") return auth
  const milter = name === "milter" ? await startOpenDkim() : undefined
  if (milter?.startsWith("!") === true) return milter.slice(1)
  const port = await allocPort()
  const logPath = outFile.replace(/\.txt$/, "") + `.${label}.log`
  let s: Started
  let describe: string
  if (name === "bare") {
    s = startServer(name, process.execPath, [...nodeFlags, argv.js ? strippedScript(BARE_SCRIPT) : BARE_SCRIPT, "--port", String(port)], { cwd: REPO, logPath })
    describe = `smtp-server drain, greeting without the 100 ms delay (${path.relative(REPO, BARE_SCRIPT)})`
  } else if (name === "lean") {
    mkdirSync(dataRoot, { recursive: true })
    const dir = mkdtempSync(path.join(dataRoot, "lean-"))
    dataDirs.push(dir)
    s = startServer(name, nodeBin, [...nodeFlags, argv.js ? strippedScript(LEAN_SCRIPT) : LEAN_SCRIPT, "--port", String(port), "--db", path.join(dir, "lean.db")], { cwd: REPO, logPath })
    describe = `callback-only smtp-server + SQLite group commit on a writer thread, no Effect (${path.relative(REPO, LEAN_SCRIPT)}); data ${dir}`
  } else {
    if (!existsSync(cli)) return `${path.relative(REPO, cli)} does not exist yet`
    mkdirSync(dataRoot, { recursive: true })
    const fsType = statfsSync(dataRoot).type
    if (fsType === TMPFS_MAGIC) say(`bench: warning: ${dataRoot} is on tmpfs, fsync costs nothing there; use --data-root on disk`)
    const dir = mkdtempSync(path.join(dataRoot, `${label}-`))
    dataDirs.push(dir)
    const queue = name === "auth" || name === "milter" ? "memory" : name
    // The rules and their resolver come from a file; the flags below win over it for the rest.
    const config = path.join(dir, name === "postgres" ? "postgres.toml" : "auth.toml")
    if (auth !== undefined) {
      writeFileSync(config, [`[dns]\nservers = ["${auth.dnsServer}"]`, ...["spf", "dkim", "dmarc"].map((r) => `[[policies]]\nrule = "${r}"`)].join("\n\n") + "\n")
    }
    if (milter !== undefined) writeFileSync(config, `[[policies]]\nrule = "milter"\nname = "opendkim"\naddress = "${milter}"\n`)
    let pgUrl: string | undefined
    if (name === "postgres") {
      // A database of its own, created here and dropped on exit.
      const db = `incoming_bench_${process.pid}_${Date.now().toString(36)}`
      const created = spawnSync("psql", [argv["pg-url"], "-q", "-c", `CREATE DATABASE ${db}`], { encoding: "utf8" })
      if (created.status !== 0) return `cannot create a database on ${argv["pg-url"]}: ${(created.stderr ?? "").trim() || "psql failed"}`
      pgDatabases.push(db)
      const u = new URL(argv["pg-url"])
      u.pathname = `/${db}`
      pgUrl = u.toString()
      writeFileSync(config, `[queue]\nbackend = "postgres"\nurl = "${pgUrl}"\npool_size = 10\n`)
    }
    const useConfig = auth !== undefined || pgUrl !== undefined || milter !== undefined
    // As `npm start` and the installed bin run it (the bin obtains V8's gc itself, for the spool).
    const args = [...nodeFlags, cli, "serve", ...(useConfig ? ["--config", config] : []), "--listen", `127.0.0.1:${port}`, "--domain", "bench.test", ...(pgUrl === undefined ? ["--queue", queue] : []), "--data-dir", dir, "--deliver", "discard"]
    s = startServer(label, nodeBin, args, { cwd: fromBase ? baseDir : REPO, logPath })
    describe = (fromBase ? `[${baseDir} at git ${gitHead(baseDir)}] ` : "") + (pgUrl !== undefined
      ? `incoming serve, PostgreSQL queue on ${pgUrl} (server CPU excludes PostgreSQL's), --deliver discard`
      : `incoming serve --queue ${queue} --data-dir ${dir} --deliver discard${auth !== undefined ? ` + spf/dkim/dmarc rules (${config}, dnsmasq ${auth.dnsServer})` : ""}${milter !== undefined ? ` + milter rule to OpenDKIM at ${milter} (${config})` : ""} (fs type 0x${fsType.toString(16)})`)
  }
  try {
    await waitListening(s, port, 30_000)
  } catch (err) {
    // Not fatal: the other targets still run, the table shows this one as missing, exit code 1.
    await stopServer(s)
    const lines = existsSync(logPath) ? readFileSync(logPath, "utf8").trim().split("\n") : []
    // First line: the reason and the server's last words (for the summary); then more context.
    return `${err instanceof Error ? err.message : String(err)}: ${(lines.at(-1) ?? "").trim()}\n    end of ${logPath}:\n    ${lines.slice(-6).join("\n    ")}`
  }
  const cpu = (): number => groupCpuSeconds(s.pid)
  const target: Target = {
    name: label,
    port,
    cpu,
    rss: () => groupRssKiB(s.pid),
    describe: `${describe}; pid ${s.pid}; log ${logPath}`,
    jit: true,
    settle: async () => {
      if (s.exited) fail(`${name} exited (code ${String(s.exitCode)}); see ${logPath}`)
      return waitIdle(cpu)
    }
  }
  return target
}

/** Postfix from the peer kit, if it is set up; started (and later stopped) only if not running. */
const startPostfix = async (): Promise<Target | string> => {
  const runPeer = path.join(argv.kit, "run-peer.sh")
  const work = process.env["BENCH_WORK"] ?? "/tmp/incoming-bench"
  if (!existsSync(runPeer)) return `no peer kit at ${argv.kit}`
  if (!existsSync(path.join(work, "postfix/data")) || !existsSync("/usr/sbin/postfix")) return `Postfix peer not set up (run ${argv.kit}/setup.sh; BENCH_WORK=${work})`
  const env: NodeJS.ProcessEnv = { ...process.env, BENCH_WORK: work }
  const peer = (action: string): { ok: boolean; out: string } => {
    const r = spawnSync(runPeer, ["postfix", action], { encoding: "utf8", env, timeout: 60_000 })
    return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() }
  }
  if (!peer("status").ok) {
    // Not up on the kit's port: start it on a port that is free now (the kit's default, 2526,
    // may be another server's on a shared machine), unless the caller chose one.
    if (process.env["BENCH_PORT_POSTFIX"] === undefined) env["BENCH_PORT_POSTFIX"] = String(await allocPort())
    const r = peer("start")
    if (!r.ok) return `could not start the Postfix peer: ${r.out}`
    stopPostfix = () => {
      const master = peer("pids").out.split("\n")[0] ?? "?"
      const r = peer("stop")
      // Seen: with its postlogd dead, every `postfix` command blocks on the log socket, the stop
      // times out and the instance stays up. Say so rather than leave it running silently.
      if (!r.ok) process.stderr.write(`bench: could not stop the Postfix peer (${r.out.split("\n")[0] ?? "timed out"}); its master is pid ${master}\n`)
    }
  }
  const port = Number(peer("port").out)
  const postfixPids = new Set(peer("pids").out.split("\n").filter((l) => l !== "").map(Number))
  try {
    assertListenerIs(port, "the kit's Postfix", (p) => postfixPids.has(p))
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
  const queue = path.join(work, "postfix/spool")
  const pids = (): Array<number> => peer("pids").out.split("\n").filter((l) => l !== "").map(Number)
  const cpu = (): number => pidsCpuSeconds(pids())
  const queueEmpty = (): boolean =>
    ["incoming", "active", "deferred", "hold"].every((d) => {
      try {
        return readdirSync(path.join(queue, d), { recursive: true, withFileTypes: true }).every((e) => !e.isFile())
      } catch {
        return true
      }
    })
  return {
    name: "postfix",
    port,
    cpu,
    describe: `Postfix peer from ${argv.kit} (fsync per queue file, delivery to discard:), 127.0.0.1:${port}`,
    jit: false,
    settle: async () => {
      // Its delivery to discard: runs behind acceptance; let it finish, as the kit does.
      const deadline = Date.now() + 60_000
      while (!queueEmpty() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250))
      return (await waitIdle(cpu)) && queueEmpty()
    }
  }
}

/**
 * Source addresses of our load generator's connections (127.0.0.1-100, in turn): with one, 100
 * sessions that reconnect for every message ran into Incoming's per-IP cap of 100 (a closed
 * connection counts until the server has seen it close), 421s the other targets never give; with
 * 10, one message per connection used up their local ports within a minute (each closed
 * connection holds its port in TIME_WAIT for 60 s) and runs stalled in bind().
 */
const LOAD_SOURCES = 100

// ---- one run ---------------------------------------------------------------------------------

interface RunOutcome {
  readonly result: LoadResult
  readonly genCpu: number
  readonly serverCpu: number
  readonly machineBusy: number
  readonly machineSteal: number
  readonly note: string
}

const childOutput = (child: ChildProcess, limitMs: number): Promise<{ stdout: string; stderr: string; code: number | null; killed: boolean }> =>
  new Promise((resolve) => {
    let stdout = ""
    let stderr = ""
    let killed = false
    child.stdout?.on("data", (d: Buffer) => (stdout += d.toString("utf8")))
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString("utf8")))
    const timer = setTimeout(() => {
      killed = true
      child.kill("SIGKILL")
    }, limitMs)
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ stdout, stderr, code, killed })
    })
  })

const runOnce = async (target: Target, generator: string, cell: Cell, count: number): Promise<RunOutcome> => {
  // Order matters: snapshot the server first, then our reaped-children CPU, so that the
  // generator's window contains nothing but the generator (reading Postfix's PIDs spawns a shell).
  const srv0 = target.cpu()
  const gen0 = reapedChildrenCpuSeconds()
  const m0 = machineCpu()
  let result: LoadResult
  let note = ""
  let genSelf: number | undefined
  if (generator === "ours") {
    const args = [LOAD_SCRIPT, "--port", String(target.port), "--size", String(cell.size), "--sessions", String(cell.sessions), "--count", String(count), "--mode", cell.mode, "--max-seconds", String(maxSeconds), "--sources", String(LOAD_SOURCES), ...(argv.helo ? ["--helo"] : []), ...(authSetup !== undefined ? ["--dkim-key", authSetup.keyFile] : [])]
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] })
    currentGen = child
    const r = await childOutput(child, (maxSeconds + 15) * 1000)
    currentGen = undefined
    const last = r.stdout.trim().split("\n").pop() ?? ""
    try {
      result = JSON.parse(last) as LoadResult
      genSelf = result.cpuSeconds
    } catch {
      result = { ok: 0, failed: count, errors: 1, errorSamples: [{ stage: "generator", detail: `exit ${String(r.code)}${r.killed ? " (killed)" : ""}: ${r.stderr.trim().slice(0, 300)}` }], timedOut: r.killed, seconds: maxSeconds, msgsPerSec: 0, connections: 0, cpuSeconds: 0, bodyBytes: cell.size }
    }
  } else {
    // Postfix's smtp-source: -d keeps the connection (persist); it aborts at the first bad reply.
    const args = ["-4", "-s", String(cell.sessions), "-m", String(count), "-l", String(cell.size), "-f", "load@load.test", "-t", "user@bench.test", "-M", "load.test", ...(cell.mode === "persist" ? ["-d"] : []), `127.0.0.1:${target.port}`]
    const t0 = process.hrtime.bigint()
    const child = spawn(SMTP_SOURCE, args, { stdio: ["ignore", "pipe", "pipe"] })
    currentGen = child
    const r = await childOutput(child, maxSeconds * 1000)
    currentGen = undefined
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    const bad = r.code !== 0 || r.stderr.trim() !== ""
    result = {
      ok: bad ? 0 : count,
      failed: bad ? count : 0,
      errors: bad ? Math.max(1, r.stderr.trim().split("\n").filter((l) => l !== "").length) : 0,
      errorSamples: bad ? [{ stage: "smtp-source", detail: `exit ${String(r.code)}: ${r.stderr.trim().slice(0, 300)}` }] : [],
      timedOut: r.killed,
      seconds,
      msgsPerSec: bad ? 0 : count / seconds,
      connections: cell.mode === "persist" ? cell.sessions : count,
      cpuSeconds: 0,
      bodyBytes: cell.size
    }
  }
  const gen1 = reapedChildrenCpuSeconds()
  const m1 = machineCpu()
  const srv1 = target.cpu()
  const total = m1.total - m0.total
  if (result.errorSamples.length > 0) note = result.errorSamples.map((e) => `${e.stage}: ${e.detail}`).join("; ")
  return {
    result,
    // Our generator measures its own CPU over exactly the run; the kernel's figure also
    // includes Node's start-up, which is not load. smtp-source starts in a millisecond.
    genCpu: genSelf ?? gen1 - gen0,
    serverCpu: srv1 - srv0,
    machineBusy: total > 0 ? (m1.busy - m0.busy) / total : 0,
    machineSteal: total > 0 ? (m1.steal - m0.steal) / total : 0,
    note
  }
}

/**
 * What the spf/dkim/dmarc rules cost: server CPU µs per message of "auth" minus "memory" in the
 * same repetition of a cell (they ran next to each other), median over repetitions.
 */
const authCost = (records: ReadonlyArray<RunRecord>, cells: ReadonlyArray<Cell>): Array<string> => {
  const lines: Array<string> = []
  const perMsg = (r: RunRecord | undefined) => (r !== undefined && r.ok > 0 ? (r.serverCpu / r.ok) * 1e6 : undefined)
  for (const cell of cells) {
    const mine = records.filter((r) => r.size === cell.size && r.sessions === cell.sessions && r.mode === cell.mode && r.generator === "ours")
    const deltas: Array<number> = []
    for (const rep of new Set(mine.map((r) => r.rep))) {
      const on = perMsg(mine.find((r) => r.rep === rep && r.target === "auth"))
      const off = perMsg(mine.find((r) => r.rep === rep && r.target === "memory"))
      if (on !== undefined && off !== undefined) deltas.push(on - off)
    }
    const m = median(deltas)
    if (m !== undefined) {
      lines.push(`auth rules (spf+dkim+dmarc, DKIM-signed message) add ${Math.round(m)} µs server CPU per message vs memory at ${cell.size} B x ${cell.sessions} ${cell.mode} (per-repetition deltas: ${deltas.map((d) => Math.round(d)).join(", ")})`)
    }
  }
  return lines
}

// ---- memory ----------------------------------------------------------------------------------

const rssConns = argv.rss !== undefined ? intList("rss", argv.rss)[0] : undefined
if (argv["rss-only"] && rssConns === undefined) fail("--rss-only needs --rss N")
if (rssConns !== undefined && rssConns > 5000) fail("--rss: at most 5000 connections")
const RSS_SOURCES = 10

/**
 * Resident set of each target we started, fresh (before any load: what an idle server costs),
 * then with `n` idle connections that got their greeting, from RSS_SOURCES loopback addresses
 * (so a per-IP cap of n / RSS_SOURCES admits them all), held 4 s: the peak of samples every 250 ms.
 */
const rssProbe = async (targets: ReadonlyArray<Target>, n: number): Promise<Array<string>> => {
  const mib = (kib: number): string => (kib / 1024).toFixed(0)
  const lines = [`resident set (MiB, all processes of the server): at rest, and with ${n} idle connections from ${RSS_SOURCES} source addresses`]
  for (const t of targets) {
    if (t.rss === undefined) continue
    await waitIdle(t.cpu, { maxMs: 10_000 })
    await new Promise((r) => setTimeout(r, 2000))
    const rest = t.rss()
    const conns = await openIdle(t.port, n, RSS_SOURCES)
    let peak = t.rss()
    for (let i = 0; i < 16; i++) {
      await new Promise((r) => setTimeout(r, 250))
      peak = Math.max(peak, t.rss())
    }
    conns.close()
    await waitIdle(t.cpu, { maxMs: 10_000 })
    lines.push(`rss ${t.name.padEnd(12)} at rest ${mib(rest).padStart(4)}  with ${n} conns ${mib(peak).padStart(4)}  (+${((peak - rest) / n).toFixed(1)} KiB/conn; greeted ${conns.greeted}, failed ${conns.failed}, opened in ${conns.openMs} ms)`)
  }
  return lines
}

// ---- main ------------------------------------------------------------------------------------

function gitHead(dir: string = REPO): string {
  const r = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: dir, encoding: "utf8" })
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src"], { cwd: dir, encoding: "utf8" })
  return `${r.status === 0 ? r.stdout.trim() : "no-commit"}${dirty.stdout.trim() !== "" ? "+dirty-src" : ""}`
}

const main = async (): Promise<void> => {
  const targets: Array<Target> = []
  const skipped: Array<string> = []
  let missingTargets = 0 // requested targets that could not run: the run is incomplete
  for (const name of targetNames) {
    const t = await startOwn(name)
    if (typeof t === "string") {
      say(`bench: NOT running target ${name}: ${t}`)
      skipped.push(`${name} (${t.split("\n")[0] ?? t})`)
      missingTargets++
    } else targets.push(t)
  }
  if (argv.peers) {
    const p = await startPostfix()
    if (typeof p === "string") {
      say(`bench: --peers: skipping Postfix: ${p}`)
      skipped.push(`postfix (${p})`)
    } else targets.push(p)
  }
  if (targets.length === 0) fail("no target could be started")

  // The table keeps a column for every requested target, so its shape does not depend on which
  // ones started ("—" marks one that did not); runs go only to the targets that are up.
  const columns: Array<Column> = [...targetNames, ...(argv.peers ? ["postfix"] : [])].map((name) => ({ label: name, target: name, generator: "ours" }))
  const bare = targets.find((t) => t.name === "bare")
  if (argv["check-gen"]) {
    if (bare === undefined) fail("--check-gen needs the bare target")
    else if (!existsSync(SMTP_SOURCE)) {
      say(`bench: --check-gen: ${SMTP_SOURCE} not found (apt-get install postfix); skipping`)
      skipped.push("bare via smtp-source (no smtp-source)")
    } else {
      columns.push({ label: "bare[smtp-source]", target: "bare", generator: "smtp-source" })
      if (!argv.helo) say("bench: --check-gen: smtp-source sends HELO; add --helo so that our generator does too (matters in conn mode)")
    }
  }
  const runColumns = columns.filter((c) => targets.some((t) => t.name === c.target))
  const col = (label: string): Column | undefined => columns.find((c) => c.label === label)
  const ratioPairs: Array<readonly [Column, Column]> = []
  for (const [a, b] of [["memory", "memory-base"], ["sqlite", "sqlite-base"], ["postgres", "postgres-base"], ["postgres", "sqlite"], ["postgres", "postfix"], ["sqlite", "bare"], ["sqlite", "memory"], ["memory", "bare"], ["auth", "memory"], ["milter", "memory"], ["sqlite", "postfix"], ["lean", "bare"], ["sqlite", "lean"], ["bare[smtp-source]", "bare"]] as const) {
    const ca = col(a)
    const cb = col(b)
    if (ca !== undefined && cb !== undefined) ratioPairs.push([ca, cb])
  }

  const cells: Array<Cell> = []
  for (const mode of modes) for (const size of sizes) for (const sessions of sessionsList) cells.push({ size, sessions, mode })

  const cpuModel = os.cpus()[0]?.model ?? "?"
  const header = [
    `# incoming bench ${new Date().toISOString()} git ${gitHead()} node ${process.version} ${os.cpus().length}x ${cpuModel} load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
    `# reps=${reps} seconds=${runSeconds} max_seconds=${maxSeconds} sizes=${sizes.join(",")} sessions=${sessionsList.join(",")} modes=${modes.join(",")} greeting=${argv.helo ? "HELO" : "EHLO"} quick=${quick} js=${argv.js} warm=${warmMessages} node_flags=${nodeFlags.join(" ") || "-"}`,
    ...targets.map((t) => `# target ${t.name}: 127.0.0.1:${t.port} ${t.describe}`),
    ...skipped.map((s) => `# skipped: ${s}`)
  ]
  for (const h of header) {
    out(h)
    say(h)
  }

  if (rssConns !== undefined) {
    for (const l of await rssProbe(targets, rssConns)) {
      out(`# ${l}`)
      process.stdout.write(l + "\n")
    }
    if (argv["rss-only"]) {
      await stopAll()
      stopPostfix?.()
      stopPostfix = undefined
      return
    }
  }

  const records: Array<RunRecord> = []
  const targetOf = (c: Column): Target => {
    const t = targets.find((x) => x.name === c.target)
    if (t === undefined) throw new Error(`no target ${c.target}`)
    return t
  }
  // Every server runs for the whole matrix: before a run, all of them must be idle, not only the
  // one under test. A memory-queue server still delivering the backlog of its last run (or any
  // server still collecting its garbage) took CPU from the next target's run: measured, SQLite
  // at 100 sessions ran at 0.80-0.87 of its base in a mixed matrix and 1.00-1.03 alone.
  const settle = async (t: Target): Promise<boolean> => {
    const all = await Promise.all(targets.map((x) => x.settle()))
    return all[targets.indexOf(t)] ?? true
  }

  // Warm-up: measured, a fresh Incoming server spends its first ~40,000 messages (1 KiB × 10)
  // partly in unoptimized code while V8's compiler threads catch up, at up to twice its steady
  // CPU per message; bare smtp-server gets there sooner (less code). Without it, the first cell
  // compared a cold Incoming with a nearly warm bare server.
  const warmed = new Set<string>()
  /** Warms `t` up in runs of `count` messages; the last run's rate, if it ran any. */
  const warmUp = async (t: Target, c: Column, cell: Cell, count: number): Promise<number | undefined> => {
    if (!t.jit || warmMessages === 0) return undefined
    const need = warmed.has(t.name) ? Math.ceil(warmMessages / 4) : warmMessages
    warmed.add(t.name)
    const started = Date.now()
    const perMsg: Array<string> = []
    let done = 0
    let rate: number | undefined
    while (done < need && Date.now() - started < warmCapSeconds * 1000) {
      await settle(t)
      const o = await runOnce(t, c.generator, cell, count)
      if (o.result.errors > 0 || o.result.timedOut) break
      done += o.result.ok
      rate = o.result.msgsPerSec
      if (o.result.ok > 0) perMsg.push(((o.serverCpu / o.result.ok) * 1e6).toFixed(0))
    }
    out(`# warm ${c.label} size=${cell.size} sessions=${cell.sessions} mode=${cell.mode} msgs=${done} secs=${((Date.now() - started) / 1000).toFixed(1)} server_us_per_msg=${perMsg.join(",")}`)
    return rate
  }

  for (const cell of cells) {
    // Calibration (also the first warm-up): find the count that makes a run last about runSeconds.
    const counts = new Map<string, number>()
    for (const c of runColumns) {
      const t = targetOf(c)
      let count = quick ? Math.max(50, cell.sessions * 10) : Math.max(200, cell.sessions * 20)
      let rate = 0
      for (let attempt = 0; attempt < 4; attempt++) {
        await settle(t)
        const o = await runOnce(t, c.generator, cell, count)
        out(`# calib ${c.label} size=${cell.size} sessions=${cell.sessions} mode=${cell.mode} count=${count} ok=${o.result.ok} errors=${o.result.errors} secs=${o.result.seconds.toFixed(3)} msgs_per_s=${o.result.msgsPerSec.toFixed(1)}${o.note !== "" ? ` note=${JSON.stringify(o.note)}` : ""}`)
        rate = o.result.msgsPerSec
        if (o.result.errors > 0 || o.result.timedOut || count >= MAX_COUNT) break
        // The first attempt only warms up (a fresh server's first messages run unoptimized code).
        if (attempt > 0 && o.result.seconds >= calibSeconds) break
        count = Math.min(MAX_COUNT, Math.max(count * 2, Math.ceil((count * calibSeconds * 1.5) / Math.max(o.result.seconds, 0.01))))
      }
      const countAt = (msgsPerSec: number) => Math.min(MAX_COUNT, Math.max(cell.sessions * 5, Math.round(msgsPerSec * runSeconds)))
      // Warmed up, a server is faster than when it was calibrated: the count follows.
      const warmRate = await warmUp(t, c, cell, countAt(rate))
      counts.set(c.label, countAt(warmRate ?? rate))
    }
    say(`\n== ${cell.mode} ${cell.size} B x ${cell.sessions} sessions: counts ${runColumns.map((c) => `${c.label}=${counts.get(c.label) ?? "?"}`).join(" ")}`)

    for (let rep = 1; rep <= reps; rep++) {
      // Rotate the order each repetition, so no target always runs first (or right after another).
      const order = runColumns.map((_, i) => runColumns[(i + rep - 1) % runColumns.length]).filter((c): c is Column => c !== undefined)
      for (const c of order) {
        const t = targetOf(c)
        const idle = await settle(t)
        const count = counts.get(c.label) ?? cell.sessions * 5
        const o = await runOnce(t, c.generator, cell, count)
        const rec: RunRecord = {
          target: c.target,
          generator: c.generator,
          size: cell.size,
          sessions: cell.sessions,
          mode: cell.mode as Mode,
          rep,
          count,
          ok: o.result.ok,
          failed: o.result.failed,
          errors: o.result.errors,
          timedOut: o.result.timedOut,
          seconds: o.result.seconds,
          msgsPerSec: o.result.msgsPerSec,
          genCpu: o.genCpu,
          serverCpu: o.serverCpu,
          machineBusy: o.machineBusy,
          machineSteal: o.machineSteal,
          cpus: os.cpus().length,
          idleBefore: idle,
          note: o.note
        }
        records.push(rec)
        const line = rawLine(rec)
        out(line)
        say(`${flagged(rec) ? "!! " : "   "}${c.label.padEnd(18)} rep ${rep}: ${rec.msgsPerSec.toFixed(0).padStart(6)} msgs/s  ${rec.seconds.toFixed(2)} s  gen ${(rec.genCpu / rec.seconds).toFixed(2)} core  server ${(rec.serverCpu / rec.seconds).toFixed(2)} core ${rec.ok > 0 ? ((rec.serverCpu / rec.ok) * 1e6).toFixed(0) : "-"} µs/msg${rec.errors > 0 || rec.timedOut ? `  errors=${rec.errors}${rec.timedOut ? " TIMED OUT" : ""} ${rec.note.slice(0, 160)}` : ""}`)
      }
    }
  }

  const bad = records.filter(flagged)
  // CPU busy with neither the generator nor the server (other tenants, unattributed kernel work).
  const others = records.map((r) => r.machineBusy * r.cpus - (r.genCpu + r.serverCpu) / r.seconds)
  const otherMedian = median(others) ?? 0
  const noisy = otherMedian > 0.3
  const summary = [
    "",
    `Incoming benchmark — median msgs/s over ${reps} repetition(s); ratios = median of per-repetition ratios`,
    summaryTable(records, cells, columns, ratioPairs),
    "",
    "CPU (medians): generator share of one core / server share of one core / server CPU µs per message",
    cpuTable(records, cells, columns),
    "",
    bad.length === 0
      ? `runs: ${records.length}, none with errors`
      : `runs: ${records.length}, FLAGGED (errors, failed messages or time cap): ${bad.length} — see lines with errors>0 in the raw file`,
    `other CPU load during the runs: median ${otherMedian.toFixed(2)} cores, max ${Math.max(0, ...others).toFixed(2)}${noisy ? " — the machine was busy with something else: absolute msgs/s are depressed, compare ratios" : ""}`,
    ...authCost(records, cells),
    ...skipped.map((s) => `not run: ${s}`),
    `raw runs: ${outFile}`
  ]
  for (const l of summary) process.stdout.write(l + "\n")
  out(summary.map((l) => (l === "" ? "#" : `# ${l.split("\n").join("\n# ")}`)).join("\n"))

  await stopAll()
  stopPostfix?.()
  stopPostfix = undefined
  if (bad.length > 0 || missingTargets > 0) process.exitCode = 1
}

await main()
