/**
 * SizeLimit: a per-rule message size cap, below the listener's own `maxSize` (which smtp-server
 * advertises and the spool enforces while bytes arrive). Useful for a host app that wants a
 * smaller cap for some clients. At MAIL it refuses a declared `SIZE=` over the limit, so the
 * client does not send the body for nothing; at DATA it refuses what actually arrived.
 */
import { Effect } from "effect"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import type { Rule } from "../Policy.ts"
import * as Verdict from "../Verdict.ts"

export interface SizeLimitOptions {
  readonly name?: string
  readonly observe?: boolean
  /** Largest message, in bytes. */
  readonly maxSize: number
}

export const make = (options: SizeLimitOptions): Rule => ({
  name: options.name ?? "size_limit",
  observe: options.observe,
  onMailFrom: (ctx) =>
    Effect.succeed(
      ctx.declaredSize !== undefined && ctx.declaredSize > options.maxSize
        ? Verdict.reject(SmtpReply.messageTooBig(options.maxSize))
        : Verdict.Continue
    ),
  onData: (ctx) =>
    Effect.succeed(ctx.size > options.maxSize ? Verdict.reject(SmtpReply.messageTooBig(options.maxSize)) : Verdict.Continue)
})
