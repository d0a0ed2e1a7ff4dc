/**
 * Turns the per-run records of `npm run bench` into the printed summary: medians per matrix cell
 * and target, ratios between targets computed per repetition (both sides of a ratio come from the
 * same repetition, run back to back, so they share that moment's machine noise) and then taken as
 * a median, and error flags. Also formats one raw record as a `key=value` line for the results file.
 */

export interface RunRecord {
  readonly target: string
  /** "ours" = scripts/bench/load.ts, "smtp-source" = Postfix's generator (--check-gen). */
  readonly generator: string
  readonly size: number
  readonly sessions: number
  readonly mode: string
  readonly rep: number
  readonly count: number
  readonly ok: number
  readonly failed: number
  readonly errors: number
  readonly timedOut: boolean
  readonly seconds: number
  readonly msgsPerSec: number
  /** Generator CPU seconds (user + system) as the kernel accounted it. */
  readonly genCpu: number
  /** Server CPU seconds over the run (its whole process group). */
  readonly serverCpu: number
  /** Share of all CPUs busy during the run (0..1), and the share stolen by the hypervisor. */
  readonly machineBusy: number
  readonly machineSteal: number
  readonly cpus: number
  readonly idleBefore: boolean
  readonly note: string
}

export const flagged = (r: RunRecord): boolean => r.errors > 0 || r.failed > 0 || r.timedOut

export const median = (xs: ReadonlyArray<number>): number | undefined => {
  if (xs.length === 0) return undefined
  const s = xs.toSorted((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2
}

export const rawLine = (r: RunRecord): string =>
  [
    `target=${r.target}`,
    `gen=${r.generator}`,
    `size=${r.size}`,
    `sessions=${r.sessions}`,
    `mode=${r.mode}`,
    `rep=${r.rep}`,
    `count=${r.count}`,
    `ok=${r.ok}`,
    `failed=${r.failed}`,
    `errors=${r.errors}`,
    `timed_out=${r.timedOut ? 1 : 0}`,
    `secs=${r.seconds.toFixed(3)}`,
    `msgs_per_s=${r.msgsPerSec.toFixed(1)}`,
    `gen_cpu_s=${r.genCpu.toFixed(2)}`,
    `gen_core_share=${(r.genCpu / r.seconds).toFixed(2)}`,
    `server_cpu_s=${r.serverCpu.toFixed(2)}`,
    `server_core_share=${(r.serverCpu / r.seconds).toFixed(2)}`,
    `server_us_per_msg=${r.ok > 0 ? ((r.serverCpu / r.ok) * 1e6).toFixed(0) : "-"}`,
    `machine_busy=${r.machineBusy.toFixed(2)}`,
    // Cores busy with neither side: kernel softirq work not charged to a process, other tenants.
    `other_cores=${(r.machineBusy * r.cpus - (r.genCpu + r.serverCpu) / r.seconds).toFixed(2)}`,
    `steal=${r.machineSteal.toFixed(3)}`,
    `idle_before=${r.idleBefore ? 1 : 0}`,
    ...(r.note !== "" ? [`note=${JSON.stringify(r.note)}`] : [])
  ].join(" ")

export interface Cell {
  readonly size: number
  readonly sessions: number
  readonly mode: string
}

const cellKey = (c: Cell): string => `${c.mode}/${c.size}/${c.sessions}`

const fmtRate = (x: number | undefined): string =>
  x === undefined ? "—" : x >= 100 ? Math.round(x).toLocaleString("en-US") : x.toFixed(1)
const fmtRatio = (x: number | undefined): string => (x === undefined ? "—" : x.toFixed(2))
const fmtSize = (n: number): string => (n % 1024 === 0 ? `${n / 1024} KiB` : `${n} B`)

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>): string =>
    "| " + cells.map((c, i) => (i < 3 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(" | ") + " |"
  const sep = "|" + widths.map((w, i) => (i < 3 ? "-".repeat(w + 1) + "-" : "-".repeat(w + 1) + ":")).join("|") + "|"
  return [line(header), sep, ...rows.map(line)].join("\n")
}

/** A column = one target driven by one generator; `ours` is the generator every target gets. */
export interface Column {
  readonly label: string
  readonly target: string
  readonly generator: string
}

/**
 * The main table: median msgs/s per column, the requested ratios (per repetition, then median),
 * and errors (the sum over the cell's runs; "!" marks a cell with a flagged run).
 */
export const summaryTable = (
  records: ReadonlyArray<RunRecord>,
  cells: ReadonlyArray<Cell>,
  columns: ReadonlyArray<Column>,
  ratios: ReadonlyArray<readonly [Column, Column]>
): string => {
  const byCell = new Map<string, Array<RunRecord>>()
  for (const r of records) {
    const k = cellKey(r)
    const list = byCell.get(k) ?? []
    list.push(r)
    byCell.set(k, list)
  }
  const pick = (rs: ReadonlyArray<RunRecord>, c: Column): Array<RunRecord> =>
    rs.filter((r) => r.target === c.target && r.generator === c.generator)
  const rows = cells.map((cell) => {
    const rs = byCell.get(cellKey(cell)) ?? []
    const rates = columns.map((c) => fmtRate(median(pick(rs, c).map((r) => r.msgsPerSec))))
    const ratioCells = ratios.map(([num, den]) => {
      const per: Array<number> = []
      for (const a of pick(rs, num)) {
        const b = pick(rs, den).find((x) => x.rep === a.rep)
        if (b !== undefined && b.msgsPerSec > 0) per.push(a.msgsPerSec / b.msgsPerSec)
      }
      return fmtRatio(median(per))
    })
    const errs = rs.reduce((n, r) => n + r.errors + (r.timedOut ? 1 : 0), 0)
    const bad = rs.filter(flagged).length
    const errCell = bad === 0 ? "0" : `${errs} ! (${bad} run${bad > 1 ? "s" : ""})`
    return [fmtSize(cell.size), String(cell.sessions), cell.mode, ...rates, ...ratioCells, errCell]
  })
  const header = [
    "size",
    "sess",
    "mode",
    ...columns.map((c) => c.label),
    ...ratios.map(([a, b]) => `${a.label}/${b.label}`),
    "errors"
  ]
  return table(header, rows)
}

/**
 * The cost table: per column, the generator's median share of one core, the server's median
 * share of one core, and the server's median CPU per accepted message. A generator near 1.00
 * would be the bottleneck; a single-threaded server near 1.00 is at its ceiling.
 */
export const cpuTable = (
  records: ReadonlyArray<RunRecord>,
  cells: ReadonlyArray<Cell>,
  columns: ReadonlyArray<Column>
): string => {
  const rows = cells.map((cell) => {
    const rs = records.filter((r) => cellKey(r) === cellKey(cell))
    return [
      fmtSize(cell.size),
      String(cell.sessions),
      cell.mode,
      ...columns.map((c) => {
        const mine = rs.filter((r) => r.target === c.target && r.generator === c.generator && r.seconds > 0)
        const gen = median(mine.map((r) => r.genCpu / r.seconds))
        const srv = median(mine.map((r) => r.serverCpu / r.seconds))
        const perMsg = median(mine.filter((r) => r.ok > 0).map((r) => (r.serverCpu / r.ok) * 1e6))
        if (gen === undefined || srv === undefined) return "—"
        return `${gen.toFixed(2)} / ${srv.toFixed(2)} / ${perMsg === undefined ? "—" : Math.round(perMsg)}`
      })
    ]
  })
  return table(["size", "sess", "mode", ...columns.map((c) => c.label)], rows)
}
