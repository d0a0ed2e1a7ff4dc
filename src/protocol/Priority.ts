/**
 * Message priority: the RFC 6710 levels -9..9 (higher is more urgent, 0 is normal), the names
 * operators write (`low` -5, `normal` 0, `high` 5, `critical` 9), the `MT-PRIORITY` parameter's
 * grammar, and the ageing rule every queue backend applies when it picks due work, so low
 * priority cannot starve: a message that has waited `maxWaitMs` since it arrived counts as normal.
 *
 * Order of claims, in every backend: effective priority (highest first), then due time, then
 * arrival. A retry keeps its message's priority.
 */
import { Result } from "effect"
import * as SmtpReply from "./SmtpReply.ts"

/** An integer in -9..9 (RFC 6710 §3). */
export type Priority = number

export const min: Priority = -9
export const max: Priority = 9
export const normal: Priority = 0

export const names = { low: -5, normal: 0, high: 5, critical: 9 } as const
export type Name = keyof typeof names

export const isPriority = (n: unknown): n is Priority => typeof n === "number" && Number.isInteger(n) && n >= min && n <= max

/**
 * A configured level: a name (`high`) or an integer -9..9 (as a number or its text). The error is
 * a sentence for the config loader to put after the field's name.
 */
export const fromSetting = (value: unknown): Result.Result<Priority, string> => {
  if (typeof value === "string" && Object.hasOwn(names, value.toLowerCase())) return Result.succeed(names[value.toLowerCase() as Name])
  const n = typeof value === "string" && /^[+-]?\d+$/.test(value.trim()) ? Number(value.trim()) : value
  return isPriority(n)
    ? Result.succeed(n)
    : Result.fail(`expected low, normal, high, critical or an integer from -9 to 9, got ${JSON.stringify(value)}`)
}

/** How a priority reads in `queue list` and logs: the name when it has one. */
export const format = (p: Priority): string => {
  for (const [name, level] of Object.entries(names)) if (level === p) return name
  return p > 0 ? `+${p}` : String(p)
}

export const badParameter = SmtpReply.make(501, "5.5.4", "MT-PRIORITY parameter: expected an integer from -9 to 9")

/**
 * `MT-PRIORITY=value` (RFC 6710 §3: `priority-value = ( [priority-sign] NZDIGIT ) / "0"`, sign `+`
 * or `-`). Anything else — no value, `00`, `-0`, `10` — is 501 5.5.4.
 */
export const parseParameter = (value: string | true): Result.Result<Priority, SmtpReply.SmtpReply> =>
  value !== true && /^(?:[+-]?[1-9]|0)$/.test(value) ? Result.succeed(Number(value)) : Result.fail(badParameter)

/** The EHLO keyword: MT-PRIORITY with the priority-assignment policy we follow (RFC 6710 §9.1). */
export const ehloKeyword = "MT-PRIORITY MIXER"

/**
 * The priority a claim orders by: a message below normal that has waited `maxWaitMs` since it
 * arrived counts as normal from then on (`maxWaitMs` 0 or less: no ageing). Higher levels keep theirs.
 */
export const effective = (priority: Priority, arrivedAt: number, now: number, maxWaitMs: number): Priority =>
  priority < normal && maxWaitMs > 0 && now - arrivedAt >= maxWaitMs ? normal : priority

/** The highest of the levels that apply; `normal` when none does. */
export const highest = (levels: Iterable<Priority | undefined>): Priority => {
  let best: Priority | undefined
  for (const p of levels) if (p !== undefined && (best === undefined || p > best)) best = p
  return best ?? normal
}
