/**
 * A filter's modification requests at end of message, as message edits (policy/MessageEdit.ts):
 * header edits, quarantine (marked and held in the queue), recipients added (with their ESMTP
 * arguments) and deleted, the sender changed. Pure. A replaced body is not here: its chunks are
 * spooled as they arrive (rules/Milter.ts) and become one `ReplaceBody` edit.
 *
 * A request the filter did not ask for in the option negotiation is dropped, as Postfix does
 * (`Action` flags: a filter that did not say it changes recipients must not); so are ESMTP
 * arguments we cannot keep. Each dropped thing is noted, for a warning in the log.
 */
import * as Dsn from "../../protocol/Dsn.ts"
import { Result } from "effect"
import * as MessageEdit from "../MessageEdit.ts"
import * as Codec from "./Codec.ts"

/** The action flag(s) that allow a modification (either one, for a recipient added). */
export const actionFor: Record<Codec.Modification["_tag"], number> = {
  AddHeader: Codec.Action.AddHeaders,
  InsertHeader: Codec.Action.AddHeaders,
  ChangeHeader: Codec.Action.ChangeHeaders,
  ReplaceBody: Codec.Action.ChangeBody,
  AddRecipient: Codec.Action.AddRecipient | Codec.Action.AddRecipientWithArgs,
  DeleteRecipient: Codec.Action.DeleteRecipient,
  ChangeFrom: Codec.Action.ChangeFrom,
  Quarantine: Codec.Action.Quarantine
}

/** Whether the negotiated `actions` allow `m`. */
export const allowed = (m: Codec.Modification, actions: number): boolean => (actions & actionFor[m._tag]) !== 0

/** `KEY=VALUE KEY2 ...` (ESMTP parameters as libmilter sends them) as an upper-case keyed map. */
export const parameters = (args: string): ReadonlyMap<string, string | true> => {
  const out = new Map<string, string | true>()
  for (const word of args.split(/\s+/)) {
    if (word === "") continue
    const eq = word.indexOf("=")
    out.set((eq === -1 ? word : word.slice(0, eq)).toUpperCase(), eq === -1 ? true : word.slice(eq + 1))
  }
  return out
}

/** The DSN parameters in `args` (`keys` kept, every other one noted as dropped). */
const dsnOf = <A>(
  what: string,
  args: string | undefined,
  keys: ReadonlyArray<string>,
  parse: (params: ReadonlyMap<string, string | true>) => Result.Result<A | undefined, { readonly text: string }>,
  notes: Array<string>
): A | undefined => {
  if (args === undefined || args.trim() === "") return undefined
  const params = parameters(args)
  const others = [...params.keys()].filter((k) => !keys.includes(k))
  if (others.length > 0) notes.push(`${what}: parameters ${others.join(", ")}`)
  const parsed = parse(params)
  if (Result.isFailure(parsed)) {
    notes.push(`${what}: ${parsed.failure.text}`)
    return undefined
  }
  return parsed.success
}

/** The edits that `modifications` (in the order received) make, and what was dropped. */
export const editsOf = (
  modifications: ReadonlyArray<Codec.Modification>,
  actions: number
): { readonly edits: Array<MessageEdit.MessageEdit>; readonly ignored: Array<string> } => {
  const edits: Array<MessageEdit.MessageEdit> = []
  const ignored: Array<string> = []
  for (const m of modifications) {
    if (!allowed(m, actions)) {
      ignored.push(`${m._tag} (not negotiated)`)
      continue
    }
    switch (m._tag) {
      case "AddHeader":
        edits.push(MessageEdit.appendHeader(m.name, m.value))
        break
      case "InsertHeader":
        edits.push(MessageEdit.insertHeader(m.index, m.name, m.value))
        break
      case "ChangeHeader":
        // libmilter's index is 1-based; an empty value deletes the field.
        edits.push(
          m.value.trim() === ""
            ? MessageEdit.removeHeader(m.name, { occurrence: Math.max(1, m.index) })
            : MessageEdit.changeHeader(m.name, Math.max(1, m.index), m.value)
        )
        break
      case "Quarantine":
        // Held in the queue until an operator releases it, and marked (routes, `queue show`).
        edits.push(MessageEdit.quarantine(m.reason === "" ? "quarantined by milter" : m.reason, { hold: true }))
        break
      case "AddRecipient": {
        const dsn = dsnOf(`add recipient ${m.recipient}`, m.args, ["NOTIFY", "ORCPT"], Dsn.recipientDsn, ignored)
        edits.push(MessageEdit.addRecipient(m.recipient, dsn))
        break
      }
      case "DeleteRecipient":
        edits.push(MessageEdit.deleteRecipient(m.recipient))
        break
      case "ChangeFrom": {
        const dsn = dsnOf(`change sender to ${m.sender}`, m.args, ["RET", "ENVID"], Dsn.mailDsn, ignored)
        edits.push(MessageEdit.changeSender(m.sender, dsn))
        break
      }
      case "ReplaceBody":
        // Spooled by the rule as the chunks arrive; never collected here.
        break
    }
  }
  return { edits, ignored }
}
