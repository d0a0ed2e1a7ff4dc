/**
 * Structure checks run by `npm test`: no import cycle between the folders of `src/` (type-only
 * imports included, since they tie the folders' contracts together just as much), no file
 * in `src/` over 600 lines, and no `Effect.run*` outside the callback→fiber bridge and the bin
 * (a fiber started anywhere else has no owner a drain would wait for). Files directly under
 * `src/` count as nodes of their own.
 *
 * Why a script of ours: the rules are two, the graph is small, and a dependency such as madge
 * would bring a resolver and a CLI to check what forty lines can.
 */
import { readdirSync, readFileSync, statSync } from "node:fs"
import { dirname, join, relative, resolve, sep } from "node:path"

const root = resolve(import.meta.dirname, "..", "src")
const maxLines = 600

const files = (dir: string): Array<string> =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return files(path)
    return path.endsWith(".ts") ? [path] : []
  })

/** The node a file belongs to: its top folder under src/, or the file itself at the top. */
const nodeOf = (file: string): string => {
  const parts = relative(root, file).split(sep)
  return parts.length === 1 ? parts[0]! : `${parts[0]!}/`
}

const specifiers = /(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g

const problems: Array<string> = []
const runners = /\bEffect\.run(?:Promise|Fork|Sync|Callback)\w*/
const mayRun = (file: string) => file === join(root, "smtp", "internal", "bridge.ts") || file.startsWith(join(root, "bin") + sep)
const edges = new Map<string, Map<string, string>>()
for (const file of files(root)) {
  const text = readFileSync(file, "utf8")
  const lines = text.split("\n").length
  if (lines > maxLines) problems.push(`${relative(root, file)}: ${lines} lines (at most ${maxLines})`)
  const run = mayRun(file) ? null : runners.exec(text.replace(/^\s*(?:\/\/|\*).*$/gm, ""))
  if (run !== null) problems.push(`${relative(root, file)}: ${run[0]} outside the bridge (src/smtp/internal/bridge.ts) and the bin`)
  const from = nodeOf(file)
  for (const match of text.matchAll(specifiers)) {
    const target = resolve(dirname(file), (match[1] ?? match[2])!)
    if (!target.startsWith(root + sep)) continue
    const to = nodeOf(target)
    if (to === from) continue
    const out = edges.get(from) ?? new Map<string, string>()
    if (!out.has(to)) out.set(to, `${relative(root, file)} → ${relative(root, target)}`)
    edges.set(from, out)
  }
}

// Tarjan's strongly connected components: every component of more than one node is a cycle.
let index = 0
const indexOf = new Map<string, number>()
const low = new Map<string, number>()
const stack: Array<string> = []
const onStack = new Set<string>()
const components: Array<Array<string>> = []
const visit = (node: string): void => {
  indexOf.set(node, index)
  low.set(node, index++)
  stack.push(node)
  onStack.add(node)
  for (const next of edges.get(node)?.keys() ?? []) {
    if (!indexOf.has(next)) {
      visit(next)
      low.set(node, Math.min(low.get(node)!, low.get(next)!))
    } else if (onStack.has(next)) {
      low.set(node, Math.min(low.get(node)!, indexOf.get(next)!))
    }
  }
  if (low.get(node) === indexOf.get(node)) {
    const component: Array<string> = []
    let member: string | undefined
    do {
      member = stack.pop()!
      onStack.delete(member)
      component.push(member)
    } while (member !== node)
    if (component.length > 1) components.push(component)
  }
}
for (const node of edges.keys()) if (!indexOf.has(node)) visit(node)

for (const component of components) {
  const members = new Set(component)
  const witnesses = component.flatMap((from) =>
    [...(edges.get(from) ?? new Map<string, string>()).entries()]
      .filter(([to]) => members.has(to))
      .map(([, via]) => `    ${via}`)
  )
  problems.push(`import cycle between ${component.sort().join(", ")}:\n${witnesses.join("\n")}`)
}

if (problems.length > 0) {
  console.error(`structure check failed:\n${problems.map((p) => `  ${p}`).join("\n")}`)
  process.exit(1)
}
console.log(`structure: ${files(root).length} files, no folder cycles, none over ${maxLines} lines, no Effect.run* outside the bridge`)
