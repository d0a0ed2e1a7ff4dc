/**
 * The two texts of MTA-STS (RFC 8461) and what they say, as pure functions: the `_mta-sts` TXT
 * record that announces a policy and names its version (`v=STSv1; id=…`, §3.1), the policy file
 * served at `https://mta-sts.<domain>/.well-known/mta-sts.txt` (§3.2), and whether an MX host is
 * one the policy allows (§4.1). Fetching and caching are `MtaSts.ts`'s.
 *
 * Parsing is strict where a mistake would weaken or invent a policy (version, mode, max_age, the
 * MX patterns) and lenient where the RFC asks for it: unknown fields are ignored, a field given
 * twice keeps its first value (every `mx` counts), LF or CRLF ends a line.
 */
import { Result } from "effect"

export type Mode =
  /** Deliver only to MX hosts the policy lists, over TLS with a certificate valid for the host. */
  | "enforce"
  /** Deliver as usual; report what enforce would have refused. */
  | "testing"
  /** No policy (how a domain withdraws one before its cached copies expire). */
  | "none"

export interface Policy {
  readonly mode: Mode
  /** MX host patterns: `mx.example.com`, or `*.example.com` (one leftmost label), lower case. */
  readonly mx: ReadonlyArray<string>
  /** How long the policy may be cached, seconds (at most a year, §3.2). */
  readonly maxAgeSeconds: number
}

/** §3.2: max_age is at most 31557600 seconds (a year); a larger value is read as a year. */
export const maxMaxAgeSeconds = 31_557_600

/** A host name or pattern as compared: lower case, no trailing dot. */
const normalize = (name: string) => {
  const lower = name.trim().toLowerCase()
  return lower.endsWith(".") ? lower.slice(0, -1) : lower
}

const label = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/

/** `mx.example.com` or `*.example.com`: labels of letters, digits, hyphens (A-labels). */
const validPattern = (pattern: string): boolean => {
  const labels = (pattern.startsWith("*.") ? pattern.slice(2) : pattern).split(".")
  return labels.length >= 1 && labels.every((l) => label.test(l)) && pattern.length <= 253
}

/**
 * The policy id of the TXT records at `_mta-sts.<domain>`, or why there is none to use. Records
 * not starting with `v=STSv1` are someone else's and ignored; anything but exactly one left means
 * no usable record (§3.1), as does one without a valid `id` (1 to 32 letters and digits).
 */
export const parseRecord = (records: ReadonlyArray<ReadonlyArray<string>>): Result.Result<string, string> => {
  // A record's character-strings are one text (RFC 7208 §3.3 practice; RFC 8461 §3.1).
  const ours = records.map((r) => r.join("")).filter((t) => /^v=STSv1\s*(;|$)/.test(t))
  if (ours.length === 0) return Result.fail("no v=STSv1 record")
  if (ours.length > 1) return Result.fail(`${ours.length} v=STSv1 records (exactly one is needed)`)
  const fields = ours[0]!.split(";").map((f) => f.trim()).filter((f) => f !== "")
  const id = fields.find((f) => f.startsWith("id="))?.slice(3)
  if (id === undefined) return Result.fail("the record has no id")
  if (!/^[A-Za-z0-9]{1,32}$/.test(id)) return Result.fail(`bad id ${JSON.stringify(id)} (1 to 32 letters and digits)`)
  return Result.succeed(id)
}

/** The policy a policy file states, or what is wrong with it (the reason says which line or field). */
export const parsePolicy = (text: string): Result.Result<Policy, string> => {
  const first = new Map<string, string>()
  const mx: Array<string> = []
  const lines = text.split(/\r?\n/)
  for (const [i, line] of lines.entries()) {
    if (line.trim() === "") continue
    const colon = line.indexOf(":")
    if (colon <= 0) return Result.fail(`line ${i + 1} is not "key: value": ${JSON.stringify(line.slice(0, 80))}`)
    const key = line.slice(0, colon).trim()
    const value = line.slice(colon + 1).trim()
    if (key === "mx") {
      const pattern = normalize(value)
      if (!validPattern(pattern)) return Result.fail(`line ${i + 1}: bad mx pattern ${JSON.stringify(value)}`)
      mx.push(pattern)
    } else if (!first.has(key)) {
      first.set(key, value)
    }
  }
  const version = first.get("version")
  if (version !== "STSv1") return Result.fail(version === undefined ? "no version field" : `version ${JSON.stringify(version)} is not STSv1`)
  const mode = first.get("mode")
  if (mode !== "enforce" && mode !== "testing" && mode !== "none") {
    return Result.fail(mode === undefined ? "no mode field" : `mode ${JSON.stringify(mode)} is not enforce, testing or none`)
  }
  const maxAge = first.get("max_age")
  if (maxAge === undefined) return Result.fail("no max_age field")
  if (!/^\d{1,10}$/.test(maxAge)) return Result.fail(`max_age ${JSON.stringify(maxAge)} is not a number of seconds`)
  // A policy that could apply and names no host would refuse every MX: a broken file, not a policy.
  if (mode !== "none" && mx.length === 0) return Result.fail(`mode ${mode} without any mx field`)
  return Result.succeed({ mode, mx, maxAgeSeconds: Math.min(Number(maxAge), maxMaxAgeSeconds) })
}

/**
 * Whether `host` is one of the policy's MX hosts (§4.1): equal to a pattern, or one label more
 * than a `*.` pattern (`*.example.com` allows `mx.example.com`, not `example.com` nor
 * `a.b.example.com`). Case and a trailing dot do not matter.
 */
export const allows = (policy: Policy, host: string): boolean => {
  const name = normalize(host)
  return policy.mx.some((pattern) => {
    if (!pattern.startsWith("*.")) return pattern === name
    const suffix = pattern.slice(1)
    const head = name.slice(0, name.length - suffix.length)
    return name.endsWith(suffix) && head.length > 0 && !head.includes(".")
  })
}
