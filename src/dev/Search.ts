/**
 * The dev inbox's search language, shared by the page, the JSON API and `wait`: free text plus
 * `from:`, `to:`, `subject:`, `has:attachment` and `is:unread` / `is:read`, each term optionally
 * negated with a leading `-`, values quoted with `"…"` when they hold spaces. All terms must
 * match (AND); matching is case-insensitive substring matching.
 *
 * A query is parsed once into terms, then turned into a SQL condition over the store's
 * lower-cased search columns (`instr`, not `LIKE`: nothing to escape, and SQLite's `LIKE` folds
 * ASCII only, while the columns are folded by JavaScript, so "Grüße" finds "GRÜSSE"'s lower form
 * "grüsse" as the user typed it).
 */

export type Field = "from" | "to" | "subject" | "text"

export type Term =
  | { readonly _tag: "Contains"; readonly field: Field; readonly value: string; readonly negated: boolean }
  | { readonly _tag: "HasAttachment"; readonly negated: boolean }
  | { readonly _tag: "Unread"; readonly negated: boolean }

export type Query = ReadonlyArray<Term>

/** One token of the input: an optional `-`, an optional `key:`, and a bare or quoted value. */
const tokenPattern = /(-?)(?:([a-z]+):)?(?:"([^"]*)"?|(\S+))/giy

const fields: Readonly<Record<string, Field>> = { from: "from", to: "to", subject: "subject" }

/** Folding used for the stored columns and the query alike. */
export const fold = (text: string): string => text.normalize("NFC").toLowerCase()

export const parse = (input: string): Query => {
  const terms: Array<Term> = []
  const text = input.trim()
  let at = 0
  while (at < text.length) {
    while (at < text.length && /\s/.test(text[at]!)) at++
    if (at >= text.length) break
    tokenPattern.lastIndex = at
    const m = tokenPattern.exec(text)
    if (m === null) break
    at = tokenPattern.lastIndex
    const negated = m[1] === "-"
    const key = m[2]?.toLowerCase()
    const value = m[3] ?? m[4] ?? ""
    const field = key === undefined ? undefined : fields[key]
    if (field !== undefined) {
      if (value !== "") terms.push({ _tag: "Contains", field, value: fold(value), negated })
    } else if (key === "has" && /^attachments?$/i.test(value)) {
      terms.push({ _tag: "HasAttachment", negated })
    } else if (key === "is" && /^(un)?read$/i.test(value)) {
      // `is:read` is `-is:unread`.
      const unread = /^unread$/i.test(value)
      terms.push({ _tag: "Unread", negated: unread ? negated : !negated })
    } else {
      // Unknown keys are text: "re:" or "http://x" are things people search for.
      const whole = key === undefined ? value : `${m[2]}:${value}`
      if (whole !== "") terms.push({ _tag: "Contains", field: "text", value: fold(whole), negated })
    }
  }
  return terms
}

/** The query back as text (for logs and error messages). */
export const format = (query: Query): string =>
  query.map((t) => {
    const sign = t.negated ? "-" : ""
    switch (t._tag) {
      case "HasAttachment":
        return `${sign}has:attachment`
      case "Unread":
        return `${sign}is:unread`
      case "Contains": {
        const value = /[\s"]/.test(t.value) ? `"${t.value.replace(/"/g, "")}"` : t.value
        return t.field === "text" ? `${sign}${value}` : `${sign}${t.field}:${value}`
      }
    }
  }).join(" ")

/** The store's columns each field searches (all lower-cased with `fold`). */
export const columns: Readonly<Record<Field, string>> = {
  from: "s_from",
  to: "s_to",
  subject: "s_subject",
  text: "s_text"
}

export interface SqlCondition {
  /** A boolean SQL expression; `1` for the empty query. */
  readonly where: string
  readonly params: ReadonlyArray<string>
}

export const toSql = (query: Query): SqlCondition => {
  const parts: Array<string> = []
  const params: Array<string> = []
  for (const t of query) {
    switch (t._tag) {
      case "HasAttachment":
        parts.push(t.negated ? "attachments = 0" : "attachments > 0")
        break
      case "Unread":
        parts.push(t.negated ? "unread = 0" : "unread = 1")
        break
      case "Contains":
        parts.push(`instr(${columns[t.field]}, ?) ${t.negated ? "=" : ">"} 0`)
        params.push(t.value)
        break
    }
  }
  return { where: parts.length === 0 ? "1" : parts.join(" AND "), params }
}
