/**
 * Durations and sizes as operators write them in a config file: `"30s"`, `"5m"`, `"1h30m"`,
 * `"7d"` or a number of milliseconds; `"25MiB"`, `"256KiB"`, `"10MB"` or a number of bytes.
 *
 * The same text parses from a file, an `INCOMING_*` variable (always a string, so a string of
 * digits is accepted as milliseconds / bytes) and a `${VAR}` reference. Decoded values are plain
 * numbers (ms, bytes) because that is what the option types of the server take; encoding turns
 * them back into the shortest exact unit so `check-config` prints `"5m"`, not `300000`.
 */
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect"

const durationUnits: ReadonlyArray<readonly [string, number]> = [
  ["w", 7 * 24 * 3600_000],
  ["d", 24 * 3600_000],
  ["h", 3600_000],
  ["m", 60_000],
  ["s", 1000],
  ["ms", 1]
]
const durationUnit = new Map(durationUnits)

/** Milliseconds, or a reason the text is not a duration. */
export const parseDuration = (text: string): number | string => {
  const t = text.trim()
  if (/^\d+$/.test(t)) return Number(t)
  // One or more "<number><unit>" parts, largest first by convention but not by rule ("1h30m").
  const part = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)/gy
  let total = 0
  let end = 0
  let m: RegExpExecArray | null
  while ((m = part.exec(t)) !== null) {
    total += Number(m[1]) * durationUnit.get(m[2]!)!
    end = part.lastIndex
    while (t[end] === " ") end++
    part.lastIndex = end
  }
  if (t.length === 0 || end !== t.length) return `expected a duration like "30s", "5m", "1h30m", "7d" or a number of milliseconds`
  if (!Number.isInteger(total)) return `expected a whole number of milliseconds`
  return total
}

export const formatDuration = (ms: number): string => {
  if (ms === 0) return "0s"
  // Weeks parse but do not print: "7d" reads better than "1w" next to other day counts.
  for (const [unit, size] of durationUnits.slice(1)) {
    if (ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}

const sizeUnits: ReadonlyArray<readonly [string, number]> = [
  ["gib", 1024 ** 3],
  ["mib", 1024 ** 2],
  ["kib", 1024],
  ["gb", 1000 ** 3],
  ["mb", 1000 ** 2],
  ["kb", 1000],
  ["b", 1]
]
const sizeUnit = new Map(sizeUnits)

/** Bytes, or a reason the text is not a size. Units are case-insensitive: KB = 1000, KiB = 1024. */
export const parseSize = (text: string): number | string => {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  const unit = m === null ? undefined : m[2] === "" ? 1 : sizeUnit.get(m[2]!.toLowerCase())
  if (m === null || unit === undefined) {
    return `expected a size like "25MiB", "256KiB", "10MB" or a number of bytes`
  }
  const bytes = Number(m[1]) * unit
  if (!Number.isInteger(bytes)) return `expected a whole number of bytes`
  return bytes
}

export const formatSize = (bytes: number): number | string => {
  if (bytes === 0) return 0
  for (const [unit, size] of sizeUnits) {
    if (size > 1 && bytes % size === 0) return `${bytes / size}${unit === "gib" ? "GiB" : unit === "mib" ? "MiB" : unit === "kib" ? "KiB" : unit.toUpperCase()}`
  }
  return bytes
}

const fromText = (what: string, parse: (text: string) => number | string, format: (n: number) => string | number) =>
  Schema.Union([Schema.String, Schema.Number]).pipe(
    Schema.decodeTo(
      Schema.Number,
      SchemaTransformation.transformEffect<number, string | number>({
        decode: (input) => {
          if (typeof input === "number") {
            return Number.isInteger(input) && input >= 0
              ? Effect.succeed(input)
              : Effect.fail(new SchemaIssue.InvalidValue({ message: `expected a whole, non-negative number of ${what}, got ${input}` }))
          }
          const parsed = parse(input)
          return typeof parsed === "number"
            ? Effect.succeed(parsed)
            : Effect.fail(new SchemaIssue.InvalidValue({ message: `${parsed}, got ${JSON.stringify(input)}` }))
        },
        encode: (n) => Effect.succeed(format(n))
      })
    ),
    // Without this the union's own "Expected string | number" would hide which kind of value we want.
    Schema.annotate({ expected: what === "milliseconds" ? "a duration" : "a size" })
  )

/** A duration in a config file; decodes to milliseconds. */
export const Duration = fromText("milliseconds", parseDuration, formatDuration)

/** A size in a config file; decodes to bytes. */
export const Size = fromText("bytes", parseSize, formatSize)
