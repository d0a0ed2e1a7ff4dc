/**
 * `npm run build`, after tsc: the `incoming` command (package.json "bin") as one bundle,
 * dist/bin/incoming.js, in place of tsc's module of that name. The library's dist/ modules (what
 * `import "incoming-smtp"` loads) stay as tsc emits them; only the bin changes.
 *
 * Why: V8 keeps the source text of every module it loads, and `import "effect"` loads all ~350
 * of Effect's, comments included — stored two bytes per character, since those comments hold
 * non-Latin-1 characters. A tree-shaken bundle without comments or indentation keeps only the code
 * the command uses (docs/benchmark.md, "Resident set").
 *
 * Why rolldown: it is already in the tree (vitest runs on Vite, which bundles with it), so the
 * build needs no new package; it is Vite's maintained bundler. Names are kept (class and function
 * `name`s, which logs, `Cause.pretty` and stack traces show); the source map is written next to
 * the bundle for whoever wants it (`node --enable-source-maps`), and the bin needs no flag.
 *
 * What stays outside the bundle, loaded from node_modules as before:
 *   - smtp-server and nodemailer: src/smtp/internal/engine.ts and src/delivery/internal/smtpPeer.ts
 *     load their CommonJS builds through `createRequire`, which the bundler leaves alone, so that
 *     nothing imports node:http as an ES module (it loads undici; src/internal/nodeHttp.ts);
 *   - mailauth and acme-client, imported dynamically: a server that does not check or sign mail,
 *     or that gets no certificate, does not load them;
 *   - node's built-in modules.
 * The SQLite writer thread starts from `./writerThread.js` next to the module that starts it
 * (src/queue/internal/GroupCommit.ts), here dist/bin/: its own small bundle, built from
 * src/queue/internal/writerThread.ts (it imports no Effect).
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { build, type BuildOptions } from "rolldown"

const root = resolve(import.meta.dirname, "..")
const out = join(root, "dist", "bin")

// Loaded at run time from node_modules, by the dynamic import() that names them.
const lazy = [/^mailauth(\/|$)/, /^acme-client(\/|$)/]

const bundle = (input: string, file: string): BuildOptions => ({
  input: join(root, input),
  platform: "node",
  external: lazy,
  // Effect declares its modules free of side effects: what the command does not use is left out.
  treeshake: true,
  logLevel: "warn",
  output: {
    file: join(out, file),
    format: "esm",
    sourcemap: true,
    keepNames: true,
    // Each module's body in a function of its own, run in the original order. Without it, the
    // bodies of all ~540 modules form one top-level function: V8 compiles it at once, and the
    // ~20 MiB of compiler memory that takes stays in malloc's heap for the process's life
    // (measured, `incoming serve` at rest: 92 MiB resident without, 76 with; tsc's bin 102).
    strictExecutionOrder: true,
    comments: false,
    // Whitespace only: no renaming (names stay readable), no rewriting of the code itself.
    // ASCII only (other characters as \u escapes): Node hands V8 the source of a file with any
    // non-ASCII byte as a two-byte string, which doubles what the bundle costs in the heap.
    minify: { compress: false, mangle: false, codegen: { removeWhitespace: true, asciiOnly: true } }
  }
})

// tsc's modules of the bin (their .d.ts too: no one imports the bin).
for (const ext of [".js", ".js.map", ".d.ts", ".d.ts.map"]) rmSync(join(out, `incoming${ext}`), { force: true })

// The hashbang of src/bin/incoming.ts is kept.
await build(bundle("src/bin/incoming.ts", "incoming.js"))
await build(bundle("src/queue/internal/writerThread.ts", "writerThread.js"))

// The maps name their sources (src/ ships in the package); without the sources' text they are a
// third of the size, and the tarball does not carry a second copy of Effect.
for (const file of ["incoming.js.map", "writerThread.js.map"]) {
  const map = JSON.parse(readFileSync(join(out, file), "utf8")) as { sourcesContent?: unknown }
  delete map.sourcesContent
  writeFileSync(join(out, file), JSON.stringify(map))
}

const fail = (why: string) => {
  console.error(`build-bin: ${why}`)
  process.exit(1)
}
for (const file of ["incoming.js", "writerThread.js"]) {
  const text = readFileSync(join(out, file), "latin1")
  // asciiOnly leaves tagged template literals as written (String.raw`...`, the dev inbox's
  // scripts): one character beyond ASCII there makes the whole bundle two bytes a character again.
  const at = text.search(/[^\x00-\x7f]/)
  if (at >= 0) fail(`dist/bin/${file} is not ASCII at ${at}: ${JSON.stringify(text.slice(Math.max(0, at - 60), at + 10))} (write a \\u escape in src/)`)
  // A bundle hoists every ES import of a built-in to its top, where node:http loads undici.
  const http = /(?:from|import\()\s*["'`](?:node:)?http["'`]/.exec(text)
  if (http !== null) fail(`dist/bin/${file} imports node:http as an ES module (it loads undici; src/internal/nodeHttp.ts): ${JSON.stringify(text.slice(Math.max(0, http.index - 60), http.index + 20))}`)
}
