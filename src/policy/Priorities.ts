/**
 * Configured message priorities by sender and recipient pattern (`[[priorities]]` in the config,
 * `priorities` of `Incoming.layer`): `{ sender: ["*@bank.example"], priority: "high" }`. The
 * session asks it once per message, before queueing, together with the listener's level, an
 * honoured `MT-PRIORITY` and the routes' levels; the highest wins (protocol/Priority.ts).
 *
 * Patterns: `user@example.com`, `*@example.com`, `*` (everything), and `*` anywhere as a wildcard
 * (`alerts-*@ops.example`), compared without regard to case.
 */
import { Context, Data, Effect, Layer, Result } from "effect"
import * as Priority from "../protocol/Priority.ts"

export interface PriorityRule {
  /** Matches when the sender matches one of these (the null sender is `""`, matched by `""` only). */
  readonly sender?: ReadonlyArray<string> | undefined
  /** Matches when any recipient matches one of these. */
  readonly recipient?: ReadonlyArray<string> | undefined
  /** -9..9 or a name (`low`, `normal`, `high`, `critical`). */
  readonly priority: number | Priority.Name
}

export class PrioritiesError extends Data.TaggedError("PrioritiesError")<{
  readonly reason:
    | { readonly _tag: "BadPriority"; readonly index: number; readonly detail: string }
    | { readonly _tag: "NoPattern"; readonly index: number }
}> {
  override get message(): string {
    const r = this.reason
    return r._tag === "BadPriority"
      ? `priorities[${r.index}].priority: ${r.detail}`
      : `priorities[${r.index}]: needs sender or recipient patterns`
  }
}

export class Priorities extends Context.Service<Priorities, {
  /** The highest configured level matching the sender or a recipient, if any matches. */
  readonly of: (mailFrom: string, rcptTo: ReadonlyArray<string>) => number | undefined
}>()("incoming/Priorities") {}

const toRegExp = (pattern: string): RegExp =>
  new RegExp(`^${pattern.trim().toLowerCase().split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`)

interface Compiled {
  readonly sender: ReadonlyArray<RegExp>
  readonly recipient: ReadonlyArray<RegExp>
  readonly priority: number
}

export const make = (rules: ReadonlyArray<PriorityRule>): Result.Result<Priorities["Service"], PrioritiesError> => {
  const compiled: Array<Compiled> = []
  for (const [index, rule] of rules.entries()) {
    const level = Priority.fromSetting(rule.priority)
    if (Result.isFailure(level)) return Result.fail(new PrioritiesError({ reason: { _tag: "BadPriority", index, detail: level.failure } }))
    if ((rule.sender ?? []).length === 0 && (rule.recipient ?? []).length === 0) {
      return Result.fail(new PrioritiesError({ reason: { _tag: "NoPattern", index } }))
    }
    compiled.push({ sender: (rule.sender ?? []).map(toRegExp), recipient: (rule.recipient ?? []).map(toRegExp), priority: level.success })
  }
  return Result.succeed(Priorities.of({
    of: (mailFrom, rcptTo) => {
      if (compiled.length === 0) return undefined
      const from = mailFrom.toLowerCase()
      const to = rcptTo.map((r) => r.toLowerCase())
      let best: number | undefined
      for (const rule of compiled) {
        if (best !== undefined && rule.priority <= best) continue
        const hit = rule.sender.some((re) => re.test(from)) || to.some((r) => rule.recipient.some((re) => re.test(r)))
        if (hit) best = rule.priority
      }
      return best
    }
  }))
}

export const layer = (rules: ReadonlyArray<PriorityRule>): Layer.Layer<Priorities, PrioritiesError> =>
  Layer.effect(Priorities, Effect.fromResult(make(rules)))
