// Every entry of the installed package's `exports` loads with plain Node and has its declarations
// (run by `npm run test:pack` in the fresh app). The queue conformance kit is left to vitest,
// which it needs to run; entries added later are checked without touching this file.
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"

const require = createRequire(import.meta.url)
const root = dirname(require.resolve("incoming-smtp/package.json"))
const { exports } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
const needsVitest = new Set(["./testing/queue-conformance"])
const loaded = []
for (const [key, target] of Object.entries(exports)) {
  if (key === "./package.json") continue
  if (typeof target !== "object" || typeof target.types !== "string" || typeof target.default !== "string") {
    throw new Error(`exports["${key}"] has no "types" and "default": ${JSON.stringify(target)}`)
  }
  for (const file of [target.types, target.default]) {
    if (!existsSync(join(root, file))) throw new Error(`exports["${key}"] names ${file}, which is not in the package`)
  }
  if (needsVitest.has(key)) continue
  const module = await import(`incoming-smtp${key.slice(1)}`)
  if (Object.keys(module).length === 0) throw new Error(`incoming-smtp${key.slice(1)} exports nothing`)
  loaded.push(`incoming-smtp${key.slice(1)}`)
}
console.log(`exports.js: loaded ${loaded.join(", ")}`)
