/**
 * Summarises V8 CPU profiles of a server under load (`node --cpu-prof --cpu-prof-dir=DIR …`, one
 * file per thread) by where the time went: Node internals, the Effect runtime, smtp-server, GC,
 * and our own modules by folder. Self time per group, as a share of the thread's non-idle samples,
 * then the top functions. How docs/benchmark.md's breakdown was made:
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof dist/bin/incoming.js serve --listen 127.0.0.1:2599 …
 *   node scripts/bench/load.ts --port 2599 --size 1024 --sessions 10 --count 20000   (then SIGTERM the server)
 *   node scripts/bench/profile-summary.ts /tmp/prof/CPU.*.0.001.cpuprofile         (the main thread)
 *
 * Read the shares with care on a shared machine: the profiler samples wall time, so a thread
 * preempted right after a syscall that wakes another process or thread (a socket write, a
 * postMessage) has that wait charged to the syscall.
 */
import { readFileSync } from "node:fs"

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const groups: ReadonlyArray<readonly [RegExp, string]> = [
  [/^\(garbage collector\)$/, "GC"],
  [/^\(idle\)$/, "idle"],
  [/^\(program\)$/, "(program): native code outside JS"],
  [/node_modules\/smtp-server\//, "smtp-server"],
  [/node_modules\/effect\//, "Effect runtime"],
  [/node_modules\/@effect\//, "@effect/platform-node"],
  [/\/(src|dist)\/queue\//, "ours: queue"],
  [/\/(src|dist)\/(smtp|spool|protocol)\//, "ours: session, spool, protocol"],
  [/\/(src|dist)\/delivery\//, "ours: delivery"],
  [/\/(src|dist)\/telemetry\//, "ours: telemetry"],
  [/\/(src|dist)\//, "ours: other"],
  [/node_modules\//, "other packages"],
  [/^(node:|internal\/|$)/, "Node internals (sockets, streams, timers, postMessage)"]
]

const groupOf = (f: ProfileNode["callFrame"]): string => {
  const key = f.functionName.startsWith("(") ? f.functionName : f.url
  return groups.find(([re]) => re.test(key))?.[1] ?? "other"
}

const byGroup = new Map<string, number>()
const byFunction = new Map<string, number>()
let busy = 0
const files = process.argv.slice(2)
if (files.length === 0) {
  process.stderr.write("usage: node scripts/bench/profile-summary.ts FILE.cpuprofile...\n")
  process.exit(2)
}
for (const file of files) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
  profile.samples.forEach((id, i) => {
    const frame = nodes.get(id)?.callFrame
    if (frame === undefined) return
    const us = profile.timeDeltas[i] ?? 0
    const group = groupOf(frame)
    byGroup.set(group, (byGroup.get(group) ?? 0) + us)
    if (group === "idle") return
    busy += us
    const where = `${frame.url.replace(/.*\/(node_modules|src|dist)\//, "$1/")}:${frame.lineNumber}`
    const name = `${group} | ${frame.functionName === "" ? "(anonymous)" : frame.functionName} ${where}`
    byFunction.set(name, (byFunction.get(name) ?? 0) + us)
  })
}
const pct = (us: number): string => `${((100 * us) / busy).toFixed(1).padStart(5)}%`
const lines = [`busy ${(busy / 1e6).toFixed(2)} s, idle ${((byGroup.get("idle") ?? 0) / 1e6).toFixed(2)} s`]
for (const [g, us] of [...byGroup].filter(([g]) => g !== "idle").sort((a, b) => b[1] - a[1])) lines.push(`${pct(us)}  ${g}`)
lines.push("", "top functions (self time):")
for (const [f, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, 25)) lines.push(`${pct(us)}  ${f}`)
process.stdout.write(lines.join("\n") + "\n")
