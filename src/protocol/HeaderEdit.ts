/**
 * Edits of a message's header block as values — the milter header operations (addheader,
 * insheader, chgheader, and removal) plus "prepend on top" — and how a header line is written
 * safely. Shared vocabulary: policy rules produce these (policy/MessageEdit.ts) and the spool
 * applies them to a stored body (spool/HeaderBlock.ts).
 */

export type HeaderEdit =
  /** On top of the message, above our `Received:`. */
  | { readonly _tag: "PrependHeader"; readonly name: string; readonly value: string }
  /** At the end of the header block. */
  | { readonly _tag: "AppendHeader"; readonly name: string; readonly value: string }
  /** Before the field at `index` (0-based) of the header block; past the end: appended. */
  | { readonly _tag: "InsertHeader"; readonly index: number; readonly name: string; readonly value: string }
  /** The `occurrence`-th (1-based) field named `name` gets `value`. */
  | { readonly _tag: "ChangeHeader"; readonly name: string; readonly occurrence: number; readonly value: string }
  /**
   * Fields named `name`: every one, or the `occurrence`-th, or (for `Authentication-Results`)
   * those whose authserv-id is `authservId` (case-insensitive).
   */
  | {
    readonly _tag: "RemoveHeader"
    readonly name: string
    readonly occurrence?: number | undefined
    readonly authservId?: string | undefined
  }

/** The rewrite of the header block as received (everything but prepending). */
export type HeaderOp = Exclude<HeaderEdit, { readonly _tag: "PrependHeader" }>

/** Header field names are RFC 5322 ftext; anything else would corrupt the header block. */
export const validName = (name: string): boolean => /^[\x21-\x39\x3b-\x7e]+$/.test(name)

/** A header value made safe to write: line breaks only as folding (CRLF + tab), no other controls. */
export const headerValue = (value: string): string =>
  value
    .split(/\r\n|\r|\n/)
    .map((line) => line.replace(/[\t ]+/g, " ").replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "").trim())
    .filter((line) => line !== "")
    .join("\r\n\t")

export const headerLine = (name: string, value: string): string => `${name}: ${headerValue(value)}\r\n`
