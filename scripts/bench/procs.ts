/**
 * Process plumbing for `npm run bench`: start a server under test, wait until its port accepts
 * connections, read its CPU time from /proc, wait until it is idle, and stop it again.
 *
 * Only processes this script started are ever signalled: each server is spawned `detached`, so it
 * leads a process group of its own whose id is the PID we got back, and stopping it signals that
 * group (the server and whatever it spawned) and nothing else. `stopAllSync` is safe to call from
 * `process.on("exit")` and signal handlers.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync } from "node:fs"
import net from "node:net"

export interface Started {
  readonly name: string
  readonly child: ChildProcess
  readonly pid: number
  readonly logPath: string
  exited: boolean
  exitCode: number | null
}

const started = new Set<Started>()

export const startServer = (
  name: string,
  command: string,
  args: ReadonlyArray<string>,
  opts: { readonly cwd: string; readonly logPath: string; readonly env?: NodeJS.ProcessEnv }
): Started => {
  const log = openSync(opts.logPath, "a")
  // stdin is a pipe we never write to: servers that watch it (bare-server.ts) exit when we die.
  const child = spawn(command, [...args], {
    cwd: opts.cwd,
    detached: true,
    stdio: ["pipe", log, log],
    env: opts.env ?? process.env
  })
  closeSync(log)
  if (child.pid === undefined) throw new Error(`could not start ${name}: ${command}`)
  const s: Started = { name, child, pid: child.pid, logPath: opts.logPath, exited: false, exitCode: null }
  started.add(s)
  child.on("exit", (code, signal) => {
    s.exited = true
    s.exitCode = code ?? (signal !== null ? 128 : null)
  })
  // A dead child's stdin pipe must not crash us with EPIPE.
  child.stdin?.on("error", () => undefined)
  return s
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** True once 127.0.0.1:port completes a TCP handshake (the socket is closed right away). */
export const canConnect = (port: number, timeoutMs = 500): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
  })

// ---- who listens on a port ------------------------------------------------------------------

/** Inodes of the sockets in LISTEN state on `port` (any local address, IPv4 and IPv6). */
const listenInodes = (port: number): Set<string> => {
  const inodes = new Set<string>()
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0")
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let raw: string
    try {
      raw = readFileSync(table, "latin1")
    } catch {
      continue
    }
    for (const line of raw.split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/)
      if (f[3] === "0A" && f[1]?.endsWith(`:${hexPort}`) === true && f[9] !== undefined) inodes.add(f[9])
    }
  }
  return inodes
}

/**
 * The PIDs of the processes holding a listening socket on `port`. A TCP handshake only says that
 * something listens there: on a machine where other people's servers come and go, it can be
 * somebody else's (another bench picked the same free port a moment earlier, and ours then failed
 * to bind). Reads every process's fd table once: fine at start-up, not in a loop per message.
 */
export const listenerPids = (port: number): Array<number> => {
  const inodes = listenInodes(port)
  if (inodes.size === 0) return []
  const pids: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    const c = entry.charCodeAt(0)
    if (c < 48 || c > 57) continue
    let fds: Array<string>
    try {
      fds = readdirSync(`/proc/${entry}/fd`)
    } catch {
      continue
    }
    for (const fd of fds) {
      let link: string
      try {
        link = readlinkSync(`/proc/${entry}/fd/${fd}`)
      } catch {
        continue
      }
      const m = /^socket:\[(\d+)\]$/.exec(link)
      if (m?.[1] !== undefined && inodes.has(m[1])) {
        pids.push(Number(entry))
        break
      }
    }
  }
  return pids
}

/** The process group of `pid`, or undefined if it is gone. */
export const processGroup = (pid: number): number | undefined => {
  const f = statFields(pid)
  return f === undefined ? undefined : Number(f[PGRP])
}

const commOf = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter((x) => x !== "").slice(0, 3).join(" ")
  } catch {
    return "?"
  }
}

/**
 * Throws unless every listener on `port` is one of `isOurs`'s processes: the clear failure for a
 * port collision, instead of benchmarking a stranger.
 */
export const assertListenerIs = (port: number, who: string, isOurs: (pid: number) => boolean): void => {
  const pids = listenerPids(port)
  const strangers = pids.filter((p) => !isOurs(p))
  if (pids.length === 0) throw new Error(`nothing of ${who}'s listens on 127.0.0.1:${port} (a process we cannot see answered the handshake)`)
  if (strangers.length > 0) {
    throw new Error(`port collision on 127.0.0.1:${port}: it is held by ${strangers.map((p) => `pid ${p} (${commOf(p)})`).join(", ")}, not by ${who}`)
  }
}

/**
 * Polls a TCP connect until it succeeds, then checks that the listener is `s`'s (its process
 * group); fails if the process exits first, the port is somebody else's, or time runs out.
 */
export const waitListening = async (s: Started, port: number, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (s.exited) throw new Error(`${s.name} exited (code ${String(s.exitCode)}) before listening on ${port}`)
    if (await canConnect(port)) {
      assertListenerIs(port, `${s.name} (pid ${s.pid})`, (p) => processGroup(p) === s.pid)
      return
    }
    await sleep(100)
  }
  throw new Error(`${s.name} did not listen on 127.0.0.1:${port} within ${timeoutMs / 1000} s`)
}

const signalGroup = (s: Started, signal: NodeJS.Signals): void => {
  try {
    process.kill(-s.pid, signal) // the group we created with `detached`
  } catch {
    try {
      process.kill(s.pid, signal)
    } catch {
      // already gone
    }
  }
}

/** SIGTERM, then SIGKILL after `graceMs` if it is still there. */
export const stopServer = async (s: Started, graceMs = 5000): Promise<void> => {
  if (!started.has(s)) return
  if (!s.exited) {
    signalGroup(s, "SIGTERM")
    const deadline = Date.now() + graceMs
    while (!s.exited && Date.now() < deadline) await sleep(50)
    if (!s.exited) signalGroup(s, "SIGKILL")
  }
  started.delete(s)
}

/** For exit paths that cannot wait: SIGKILL every group we started and that is still running. */
export const stopAllSync = (): void => {
  for (const s of started) if (!s.exited) signalGroup(s, "SIGKILL")
  started.clear()
}

export const stopAll = async (): Promise<void> => {
  await Promise.all([...started].map((s) => stopServer(s)))
}

// ---- CPU accounting from /proc -------------------------------------------------------------

/** Clock ticks per second for /proc/<pid>/stat times; 100 on every Linux we run on. */
const HZ = 100

/** Fields of /proc/<pid>/stat after the "(comm)" part, which may itself contain spaces. */
const statFields = (pid: number | "self"): Array<string> | undefined => {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, "latin1")
    return raw.slice(raw.lastIndexOf(")") + 2).split(" ")
  } catch {
    return undefined
  }
}

// Indices into statFields (stat(5) field number minus 3): pgrp=5, utime=14, stime=15, cutime=16, cstime=17.
const PGRP = 2
const UTIME = 11

const cpuOf = (f: ReadonlyArray<string>, withChildren: boolean): number => {
  const t = (i: number): number => Number(f[i] ?? 0)
  return (t(UTIME) + t(UTIME + 1) + (withChildren ? t(UTIME + 2) + t(UTIME + 3) : 0)) / HZ
}

/**
 * CPU seconds (user + system) used so far by every process in the group `pgid`, including
 * children they already reaped. Scans /proc, a few hundred small reads: fine between runs.
 */
export const groupCpuSeconds = (pgid: number): number =>
  groupMembers(pgid).reduce((total, m) => total + cpuOf(m.stat, true), 0)

/** The processes of group `pgid` (PID and stat fields), from one scan of /proc. */
const groupMembers = (pgid: number): Array<{ readonly pid: number; readonly stat: Array<string> }> => {
  const members: Array<{ readonly pid: number; readonly stat: Array<string> }> = []
  for (const entry of readdirSync("/proc")) {
    const c = entry.charCodeAt(0)
    if (c < 48 || c > 57) continue
    const stat = statFields(Number(entry))
    if (stat !== undefined && Number(stat[PGRP]) === pgid) members.push({ pid: Number(entry), stat })
  }
  return members
}

/** CPU seconds of the given PIDs (e.g. a Postfix master and its children). */
export const pidsCpuSeconds = (pids: ReadonlyArray<number>): number => {
  let total = 0
  for (const pid of pids) {
    const f = statFields(pid)
    if (f !== undefined) total += cpuOf(f, true)
  }
  return total
}

/**
 * CPU seconds of this process's children that have exited and been reaped. The difference
 * across one load run is the load generator's CPU, whichever generator it was (smtp-source too).
 */
export const reapedChildrenCpuSeconds = (): number => {
  const f = statFields("self")
  if (f === undefined) return 0
  const t = (i: number): number => Number(f[i] ?? 0)
  return (t(UTIME + 2) + t(UTIME + 3)) / HZ
}

export interface MachineCpu {
  readonly busy: number
  readonly steal: number
  readonly total: number
}

/** Whole-machine jiffies from /proc/stat, to report how busy the box was during a run. */
export const machineCpu = (): MachineCpu => {
  const line = readFileSync("/proc/stat", "latin1").split("\n", 1)[0] ?? ""
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  const at = (i: number): number => v[i] ?? 0
  // user nice system idle iowait irq softirq steal
  const idle = at(3) + at(4)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - idle - at(7), steal: at(7), total }
}

/**
 * Waits until `cpu()` grows by less than `threshold` of one core over a `windowMs` window, or
 * `maxMs` passes. Used before every run so that a queue still delivering (or a GC) from the
 * previous run does not slow the next one. Returns whether it became idle.
 */
export const waitIdle = async (
  cpu: () => number,
  opts: { readonly windowMs?: number; readonly threshold?: number; readonly maxMs?: number } = {}
): Promise<boolean> => {
  const windowMs = opts.windowMs ?? 250
  const threshold = opts.threshold ?? 0.1
  const deadline = Date.now() + (opts.maxMs ?? 15000)
  let before = cpu()
  for (;;) {
    await sleep(windowMs)
    const after = cpu()
    if ((after - before) / (windowMs / 1000) < threshold) return true
    if (Date.now() >= deadline) return false
    before = after
  }
}

// ---- memory --------------------------------------------------------------------------------

/** Resident set (VmRSS, KiB) summed over every process in the group `pgid`. */
export const groupRssKiB = (pgid: number): number => {
  let total = 0
  for (const { pid } of groupMembers(pgid)) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "latin1"))
      total += Number(m?.[1] ?? 0)
    } catch {
      // exited meanwhile
    }
  }
  return total
}
