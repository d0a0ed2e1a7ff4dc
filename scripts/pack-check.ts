/**
 * `npm run test:pack`: the package as a user gets it from npm. Builds and packs the tarball,
 * installs it into a fresh app (plain package.json, "type": "module") and, with plain Node — the
 * pinned Node 24 with type stripping switched off, so any TypeScript left on the package's
 * runtime path fails — checks that every entry of `exports` loads (and has its .d.ts), and that:
 *   1. a JavaScript host app (pack-check/host.js) composes Incoming.layer with the default SQLite
 *      queue and an EffectAdapter, and receives a message sent by nodemailer;
 *   2. vitest runs the app's tests against the installed `incoming-smtp/testing` harness and
 *      `incoming-smtp/testing/queue-conformance` kit, and the `incoming-smtp/testing/crash` kill -9
 *      harness against the installed `incoming serve` (memory queue: caught losing mail; SQLite:
 *      loses nothing);
 *   3. the installed `incoming` bin answers --help (local and global install) and `incoming serve`
 *      from a global install receives a message and exits 0 on SIGTERM — the bin is the bundle
 *      (scripts/build-bin.ts), with its SQLite writer thread beside it, and loads neither undici
 *      nor the lazily imported mailauth and acme-client;
 *   4. `tsc --noEmit` passes on the app's TypeScript (the README's host app from
 *      examples/host-app.ts, and the tests of step 2) against the installed declarations with a
 *      typical NodeNext tsconfig (strict, skipLibCheck false, no allowImportingTsExtensions);
 * and that `npm ls` is clean with one copy of effect. It prints the tarball's size and contents.
 *
 * Everything happens in one temporary directory, removed at the end (--keep keeps it). Every
 * command has a deadline and the whole check one more (--max-seconds, default 600); only
 * processes this script started are stopped, by PID.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { delimiter, dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { parseArgs } from "node:util"

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const FIXTURES = join(REPO, "scripts/pack-check")
const NODE = process.execPath

const { values: argv } = parseArgs({
  options: {
    keep: { type: "boolean", default: false },
    "max-seconds": { type: "string", default: "600" },
    help: { type: "boolean", short: "h", default: false }
  },
  strict: true
})
if (argv.help) {
  console.log("usage: npm run test:pack [-- --keep] [-- --max-seconds N]")
  process.exit(0)
}

const major = Number(process.versions.node.split(".")[0])
if (major < 24) {
  console.error(`pack-check: runs on the pinned Node 24 (npm run test:pack), not Node ${process.versions.node}`)
  process.exit(2)
}

const started = Date.now()
const deadline = started + Number(argv["max-seconds"]) * 1000
const work = mkdtempSync(join(tmpdir(), "incoming-pack-"))
const children = new Set<ChildProcess>()

const cleanup = () => {
  for (const child of children) if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL")
  if (!argv.keep) rmSync(work, { recursive: true, force: true })
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    cleanup()
    process.exit(signal === "SIGINT" ? 130 : 143)
  })
}

// ---- processes -------------------------------------------------------------------------------

// `node` on PATH is the pinned binary (so the bin's `#!/usr/bin/env node` finds it); the repo's
// node_modules/.bin is left out so that nothing in the app reaches the repo's tools, and npm's
// own variables from `npm run` are dropped so that the app's npm sees only the app.
const nodeDir = join(work, "node-bin")
mkdirSync(nodeDir)
symlinkSync(NODE, join(nodeDir, "node"))
const basePath = (process.env.PATH ?? "").split(delimiter).filter((p) => !p.startsWith(REPO))
const appEnv: NodeJS.ProcessEnv = {
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== "INIT_CWD" && k !== "NODE_OPTIONS")),
  PATH: [nodeDir, ...basePath].join(delimiter),
  NO_COLOR: "1"
}
// For the app's own runs: no type stripping anywhere (workers inherit it too).
const plainNode: NodeJS.ProcessEnv = { ...appEnv, NODE_OPTIONS: "--no-experimental-strip-types" }

interface Ran {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly out: string
  readonly stdout: string
}

const remaining = () => deadline - Date.now()

/** Starts `cmd`; `lines` sees its output as it comes. */
const start = (cmd: string, args: ReadonlyArray<string>, cwd: string, env: NodeJS.ProcessEnv, lines?: (out: string) => void) => {
  const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] })
  children.add(child)
  let out = ""
  let stdout = ""
  const onData = (chunk: Buffer) => {
    out += chunk.toString()
    lines?.(out)
  }
  child.stdout!.on("data", (chunk: Buffer) => {
    stdout += chunk.toString()
    onData(chunk)
  })
  child.stderr!.on("data", onData)
  const done = new Promise<Ran>((resolve) => {
    child.once("error", (error) => {
      out += String(error)
      resolve({ code: null, signal: null, out, stdout })
    })
    child.once("close", (code, signal) => {
      children.delete(child)
      resolve({ code, signal, out, stdout })
    })
  })
  return { child, done, output: () => out }
}

/** Runs `cmd` to the end within `timeoutMs` (and the overall deadline); fails on a non-zero exit. */
const run = async (cmd: string, args: ReadonlyArray<string>, options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }) => {
  const p = start(cmd, args, options.cwd, options.env)
  const limit = Math.min(options.timeoutMs, remaining())
  const timer = setTimeout(() => p.child.pid !== undefined && process.kill(p.child.pid, "SIGKILL"), Math.max(limit, 0))
  const ran = await p.done
  clearTimeout(timer)
  if (ran.code !== 0) {
    const why = ran.signal === "SIGKILL" ? `killed after ${Math.round(limit / 1000)} s` : `exit ${ran.code ?? ran.signal}`
    throw new Error(`${cmd} ${args.join(" ")} (in ${options.cwd}): ${why}\n${ran.out}`)
  }
  return ran
}

const npm = (args: ReadonlyArray<string>, cwd: string, timeoutMs = 180_000) =>
  run("npm", [...args, "--no-audit", "--no-fund", "--prefer-offline"], { cwd, env: appEnv, timeoutMs })

const check = (ok: boolean, what: string) => {
  if (!ok) throw new Error(what)
}

const step = async <A>(name: string, f: () => Promise<A>): Promise<A> => {
  const t0 = Date.now()
  process.stdout.write(`pack-check: ${name} ... `)
  const a = await f()
  console.log(`ok (${((Date.now() - t0) / 1000).toFixed(1)} s)`)
  return a
}

const waitForFile = async (dir: string, timeoutMs: number): Promise<string | undefined> => {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const files = existsSync(dir) ? readdirSync(dir) : []
    if (files.length > 0) return join(dir, files[0]!)
    await new Promise((r) => setTimeout(r, 100))
  }
  return undefined
}

// ---- the check -------------------------------------------------------------------------------

interface PackEntry {
  readonly filename: string
  readonly size: number
  readonly unpackedSize: number
  readonly entryCount: number
  readonly files: ReadonlyArray<{ readonly path: string; readonly size: number }>
}

const repoJson = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
  readonly devDependencies: Record<string, string>
}
const devRange = (name: string) => `${name}@${repoJson.devDependencies[name] ?? "latest"}`

const main = async () => {
  const tarballDir = join(work, "tarball")
  mkdirSync(tarballDir)
  // `npm pack` runs `prepack` (the build) in the repo, with the repo's tools.
  const pack = await step("build and npm pack", async () => {
    const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", tarballDir], { cwd: REPO, env: process.env, timeoutMs: 180_000 })
    const entries = JSON.parse(stdout.slice(stdout.indexOf("[\n"))) as Array<PackEntry>
    return entries[0]!
  })
  const paths = new Set(pack.files.map((f) => f.path))
  for (const required of ["LICENSE", "README.md", "package.json", "dist/index.js", "dist/index.d.ts", "dist/index.d.ts.map", "dist/index.js.map",
    "dist/bin/incoming.js", "dist/bin/incoming.js.map", "dist/bin/writerThread.js", "dist/queue/internal/writerThread.js", "dist/testing/index.js", "dist/testing/QueueConformance.js", "src/index.ts"]) {
    check(paths.has(required), `the tarball lacks ${required}`)
  }
  const stray = [...paths].filter((p) => !/^(dist|src)\//.test(p) && !["LICENSE", "README.md", "package.json"].includes(p))
  check(stray.length === 0, `the tarball ships files outside dist/ and src/: ${stray.join(", ")}`)
  const strayTs = [...paths].filter((p) => p.startsWith("dist/") && p.endsWith(".ts") && !p.endsWith(".d.ts"))
  check(strayTs.length === 0, `dist/ holds TypeScript sources: ${strayTs.join(", ")}`)
  const kB = (n: number) => `${(n / 1000).toFixed(1)} kB`
  const count = (re: RegExp) => pack.files.filter((f) => re.test(f.path))
  const sum = (fs: ReadonlyArray<{ size: number }>) => kB(fs.reduce((n, f) => n + f.size, 0))
  console.log(`pack-check: ${pack.filename}: ${kB(pack.size)} packed, ${kB(pack.unpackedSize)} unpacked, ${pack.entryCount} files: ` +
    `${count(/^dist\/.*\.js$/).length} .js (${sum(count(/^dist\/.*\.js$/))}), ${count(/\.d\.ts$/).length} .d.ts (${sum(count(/\.d\.ts$/))}), ` +
    `${count(/\.map$/).length} maps (${sum(count(/\.map$/))}), ${count(/^src\//).length} src/*.ts (${sum(count(/^src\//))}), ` +
    pack.files.filter((f) => !f.path.includes("/")).map((f) => `${f.path} (${kB(f.size)})`).join(", "))
  const tarball = join(tarballDir, pack.filename)

  // A fresh app, as `npm init` would leave it plus "type": "module", then the README's install
  // line and the tools the checks use (at the versions the repo tests with).
  const app = join(work, "app")
  mkdirSync(app)
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "pack-check-app", version: "1.0.0", private: true, type: "module" }, null, 2))
  for (const f of ["exports.js", "host.js", "send.js", "loaded.js", "harness.test.ts", "queue.test.ts", "crash.test.ts", "tsconfig.json"]) copyFileSync(join(FIXTURES, f), join(app, f))
  // The README's host app, as a user copies it (type-checked in step 4).
  copyFileSync(join(REPO, "examples/host-app.ts"), join(app, "host-app.ts"))
  await step("npm install the tarball and effect into a fresh app", () => npm(["install", tarball, "effect"], app))
  await step("npm install what the app's code and tests use", () =>
    npm(["install", "@effect/platform-node", "nodemailer", "--save-dev", devRange("@effect/vitest"), devRange("vitest"), devRange("typescript"),
      devRange("@types/node")], app))

  await step("npm ls is clean, one copy of effect", async () => {
    const tree = JSON.parse((await run("npm", ["ls", "--all", "--json"], { cwd: app, env: appEnv, timeoutMs: 60_000 })).stdout) as { problems?: Array<string> }
    check(tree.problems === undefined, `npm ls: ${(tree.problems ?? []).join("; ")}`)
    const copies = (await run("npm", ["ls", "effect", "--all", "--parseable"], { cwd: app, env: appEnv, timeoutMs: 60_000 })).stdout.trim().split("\n")
    check(new Set(copies).size === 1, `several copies of effect: ${[...new Set(copies)].join(", ")}`)
  })

  await step("every entry of exports loads with plain node and has its .d.ts", async () => {
    const { out } = await run(NODE, ["exports.js"], { cwd: app, env: plainNode, timeoutMs: 60_000 })
    check(/loaded incoming-smtp, incoming-smtp\/testing/.test(out), `exports.js said:\n${out}`)
  })

  await step("(1) host.js: Incoming.layer + SQLite queue + EffectAdapter receives a nodemailer message", async () => {
    const { out } = await run(NODE, ["host.js", join(work, "host-data")], { cwd: app, env: plainNode, timeoutMs: 60_000 })
    check(out.includes("delivered to user@example.test with the body sent"), `host.js said:\n${out}`)
  })

  await step("(2) vitest runs the app's tests on incoming-smtp/testing, its queue conformance kit and crash harness", async () => {
    const { out } = await run(NODE, [join(app, "node_modules/vitest/vitest.mjs"), "run", "--reporter", "dot"], { cwd: app, env: plainNode, timeoutMs: 360_000 })
    const tests = /Tests\s+(\d+) passed/.exec(out)
    check(tests !== null && Number(tests[1]) > 20 && /Test Files\s+3 passed/.test(out), `vitest said:\n${out}`)
  })

  await step("(3) the installed bin: incoming --help", async () => {
    const { out } = await run(join(app, "node_modules/.bin/incoming"), ["--help"], { cwd: app, env: plainNode, timeoutMs: 30_000 })
    check(/incoming <subcommand>/.test(out) && /serve\s+run the SMTP server/.test(out), `incoming --help said:\n${out}`)
  })

  // An operator's install: `npm install -g`, here into a prefix of our own (the same layout as
  // /usr/local or /usr: <prefix>/bin/incoming links to <prefix>/lib/node_modules/incoming-smtp).
  const prefix = join(work, "global")
  await step("(3) npm install -g incoming-smtp (a global prefix of our own)", () => npm(["install", "-g", "--prefix", prefix, tarball], work))
  const globalBin = join(prefix, "bin/incoming")
  await step("(3) global incoming --help", async () => {
    const { out } = await run(globalBin, ["--help"], { cwd: work, env: plainNode, timeoutMs: 30_000 })
    check(/serve\s+run the SMTP server/.test(out), `incoming --help said:\n${out}`)
  })

  await step("(3) global incoming serve (the bundle, SQLite queue): receives a message, SIGTERM, exit 0", async () => {
    // The bin is one bundle: it imports no module of the package by a relative path.
    const bin = readFileSync(join(prefix, "lib/node_modules/incoming-smtp/dist/bin/incoming.js"), "utf8")
    const relative = /\b(?:from|import\()\s*["'`]\.\.?\//.exec(bin)
    check(relative === null, `the installed bin is not a bundle: ${relative === null ? "" : bin.slice(relative.index, relative.index + 80)}`)
    const maildir = join(work, "serve-mail")
    const loaded = join(work, "serve-loaded.json")
    const env = { ...plainNode, NODE_OPTIONS: `${plainNode.NODE_OPTIONS} --import=${pathToFileURL(join(app, "loaded.js")).href}`, PACK_CHECK_LOADED: loaded }
    let listening: (port: number) => void = () => {}
    const port = new Promise<number>((resolve) => (listening = resolve))
    const serve = start(globalBin, ["serve", "--listen", "127.0.0.1:0", "--domain", "example.test", "--data-dir", join(work, "serve-data"),
      "--maildir", maildir, "--log-format", "json"], work, env, (out) => {
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out)
      if (m !== null) listening(Number(m[1]))
    })
    const watchdog = setTimeout(() => serve.child.pid !== undefined && process.kill(serve.child.pid, "SIGKILL"), Math.min(60_000, remaining()))
    try {
      const bound = await Promise.race([port, serve.done.then((r) => Promise.reject(new Error(`incoming serve exited (${r.code}):\n${r.out}`)))])
      const text = `served by the global bin ${process.pid}`
      const { stdout: reply } = await run(NODE, ["send.js", String(bound), "user@example.test", text], { cwd: app, env: plainNode, timeoutMs: 30_000 })
      check(/^250 /.test(reply), `the server replied: ${reply}`)
      const file = await waitForFile(join(maildir, "user@example.test", "new"), 15_000)
      check(file !== undefined && readFileSync(file, "utf8").includes(text), `nothing delivered to ${maildir}:\n${serve.output()}`)
      process.kill(serve.child.pid!, "SIGTERM")
      const ran = await serve.done
      check(ran.code === 0, `incoming serve exited ${ran.code ?? ran.signal} on SIGTERM:\n${ran.out}`)
      const unwanted = existsSync(loaded) ? JSON.parse(readFileSync(loaded, "utf8")) as Array<string> : ["(loaded.js wrote nothing)"]
      check(unwanted.length === 0, `incoming serve loaded what it does not use: ${unwanted.join(", ")}`)
    } finally {
      clearTimeout(watchdog)
    }
  })

  await step("(4) tsc --noEmit on the app's TypeScript (NodeNext, strict, skipLibCheck false)", () =>
    run(NODE, [join(app, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", "tsconfig.json"], { cwd: app, env: plainNode, timeoutMs: 120_000 }))

  console.log(`pack-check: passed in ${((Date.now() - started) / 1000).toFixed(0)} s`)
}

try {
  await main()
} catch (error) {
  console.log("FAILED")
  console.error(error instanceof Error ? error.message : error)
  process.exitCode = 1
} finally {
  cleanup()
  if (argv.keep) console.log(`pack-check: kept ${work}`)
}
