/**
 * The envelope after the DATA-stage rules' envelope edits (a milter's add / delete recipient and
 * change sender), applied in order by the session before the commit.
 *
 * An added recipient goes through the recipient authority exactly as a RCPT would, for the same
 * client (authenticated or not, trusted network or not): no filter can turn the server into an
 * open relay (guarantee 5). One the authority refuses, and an address that is not one, is left
 * out and noted; a lookup that fails defers the whole message (4xx: the sender retries, nothing
 * is lost). Addresses are compared as mailboxes (case-insensitively); a deleted recipient takes
 * its DSN parameters with it. An edit left out is logged as a warning, with its rule.
 */
import { Effect } from "effect"
import * as Address from "../../protocol/Address.ts"
import type * as Dsn from "../../protocol/Dsn.ts"
import type { SmtpReply } from "../../protocol/SmtpReply.ts"
import type { EnvelopeEdit } from "../../policy/MessageEdit.ts"
import type { RcptDecision } from "../../policy/Relay.ts"

export interface EnvelopeParts {
  readonly mailFrom: string
  readonly rcptTo: ReadonlyArray<string>
  readonly dsn?: Dsn.MailDsn | undefined
  readonly recipientDsn?: { readonly [rcpt: string]: Dsn.RecipientDsn } | undefined
}

export type Outcome =
  | {
    readonly _tag: "Edited"
    readonly envelope: EnvelopeParts
    /** The rule whose edit left the message without recipients, when one did. */
    readonly emptiedBy: string | undefined
  }
  | { readonly _tag: "Deferred"; readonly rule: string; readonly reply: SmtpReply }

export const apply = (
  edits: ReadonlyArray<{ readonly rule: string; readonly edit: EnvelopeEdit }>,
  start: EnvelopeParts,
  authority: (address: string) => Effect.Effect<RcptDecision>
): Effect.Effect<Outcome> =>
  // No edits (nearly every message): an Exit, no generator on the session's hot path.
  edits.length === 0 ? Effect.succeed({ _tag: "Edited", envelope: start, emptiedBy: undefined }) : Effect.gen(function*() {
    let mailFrom = start.mailFrom
    let dsn = start.dsn
    const rcptTo = [...start.rcptTo]
    const recipientDsn: Record<string, Dsn.RecipientDsn> = { ...start.recipientDsn }
    const notes: Array<{ readonly rule: string; readonly note: string }> = []
    let emptiedBy: string | undefined
    const indexOf = (address: string) => {
      const key = Address.mailboxKey(address)
      return rcptTo.findIndex((r) => Address.mailboxKey(r) === key)
    }
    for (const { edit, rule } of edits) {
      switch (edit._tag) {
        case "ChangeSender": {
          const sender = edit.sender === "" ? "" : Address.normalize(edit.sender)
          if (sender === undefined) {
            notes.push({ rule, note: `change sender to ${JSON.stringify(edit.sender)}: not an address` })
            break
          }
          mailFrom = sender
          if (edit.dsn !== undefined) dsn = edit.dsn
          break
        }
        case "AddRecipient": {
          const decision = yield* authority(edit.recipient)
          if (decision._tag === "BadAddress") {
            notes.push({ rule, note: `add recipient ${JSON.stringify(edit.recipient)}: not an address` })
            break
          }
          if (decision._tag === "Denied") {
            if (decision.reason === "LookupFailed") return { _tag: "Deferred", rule, reply: decision.reply }
            notes.push({ rule, note: `add recipient ${edit.recipient}: refused (${decision.reason === "Relay" ? "relaying denied" : "unknown mailbox"})` })
            break
          }
          if (indexOf(decision.address) === -1) rcptTo.push(decision.address)
          if (edit.dsn !== undefined) recipientDsn[decision.address] = edit.dsn
          break
        }
        case "DeleteRecipient": {
          const i = indexOf(edit.recipient)
          if (i === -1) {
            notes.push({ rule, note: `delete recipient ${edit.recipient}: not a recipient of the message` })
            break
          }
          const [gone] = rcptTo.splice(i, 1)
          delete recipientDsn[gone!]
          if (rcptTo.length === 0) emptiedBy = rule
          break
        }
      }
    }
    for (const { note, rule } of notes) yield* Effect.logWarning(`policy rule ${rule}: ${note}; ignored`)
    return {
      _tag: "Edited",
      envelope: {
        mailFrom,
        rcptTo,
        ...(dsn === undefined ? {} : { dsn }),
        ...(Object.keys(recipientDsn).length === 0 ? {} : { recipientDsn })
      },
      emptiedBy: rcptTo.length === 0 ? emptiedBy : undefined
    }
  })
