/**
 * MaxRecipients: at most `max` recipients per transaction. The refusal is the RFC 5321 4.5.3.1.8
 * 452 4.5.3: a temporary answer, so the client sends the message now to those accepted and
 * retries the rest in a later transaction. A repeated recipient does not count twice.
 */
import { Effect } from "effect"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import type { Rule } from "../Policy.ts"
import * as Verdict from "../Verdict.ts"

export interface MaxRecipientsOptions {
  readonly name?: string
  readonly observe?: boolean
  readonly max: number
}

export const make = (options: MaxRecipientsOptions): Rule => ({
  name: options.name ?? "max_recipients",
  observe: options.observe,
  onRcptTo: (ctx) =>
    Effect.sync(() => {
      const rcpt = ctx.rcptTo.toLowerCase()
      if (ctx.recipients.some((r) => r.toLowerCase() === rcpt)) return Verdict.Continue
      return ctx.recipients.length >= options.max ? Verdict.defer(SmtpReply.tooManyRecipients) : Verdict.Continue
    })
})
