/**
 * Authentication results as values, and the `Authentication-Results:` header (RFC 8601) that
 * carries them in the message.
 *
 * A result is one `method=result` clause with its reason and properties (`smtp.mailfrom`,
 * `header.d`, `policy.iprev`, ...), keyed `ptype.property` in the order written. The typed value
 * travels with the message in its `Envelope` (for host apps, routes and the webhook); the header
 * is written from the same value, so both always agree.
 *
 * Every value comes from the network (a sender's domain, a DKIM selector): whatever is not a
 * plain token is written as a quoted string with control characters removed, so no value can
 * break the header's structure or inject a line.
 */

export type AuthResultValue =
  | "pass"
  | "fail"
  | "softfail"
  | "neutral"
  | "none"
  | "temperror"
  | "permerror"
  | "policy"
  | "skipped"

export interface AuthResult {
  /** `spf`, `dkim`, `dmarc`, `arc`, `iprev`, or another registered method. */
  readonly method: string
  readonly result: AuthResultValue
  /** Why, in words (written as `reason="..."`). */
  readonly reason?: string | undefined
  /** `ptype.property` → value, e.g. `{ "smtp.mailfrom": "a@example.org" }`, written in this order. */
  readonly properties: Readonly<Record<string, string>>
}

/** What the authentication rules concluded about one message, and who concluded it. */
export interface Authentication {
  /** Our host name: the authserv-id of the header. */
  readonly authservId: string
  readonly results: ReadonlyArray<AuthResult>
}

export const headerName = "Authentication-Results"

// RFC 2045 token characters, plus "@" for addr-spec values (RFC 8601 2.2 pvalue).
const plain = /^[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+$/

/** Removes what no header may carry (CR, LF, other controls) and bounds the length. */
const clean = (s: string, max = 256): string =>
  s.replace(/[\u0000-\u001f\u007f]+/g, " ").trim().slice(0, max)

export const quoteValue = (value: string): string => {
  const v = clean(value)
  return plain.test(v) ? v : `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`
}

/** One result clause: `dkim=pass header.d=example.org header.s=sel`. */
export const formatResult = (r: AuthResult): string => {
  const method = clean(r.method, 64).replace(/[^A-Za-z0-9-]/g, "")
  const parts = [`${method}=${r.result}`]
  if (r.reason !== undefined && r.reason !== "") parts.push(`reason=${quoteValue(r.reason)}`)
  for (const [key, value] of Object.entries(r.properties)) {
    if (!/^[a-z]+\.[A-Za-z0-9_.-]+$/.test(key) || value === "") continue
    parts.push(`${key}=${quoteValue(value)}`)
  }
  return parts.join(" ")
}

/**
 * The whole header line (folded, CRLF-terminated): each result on its own continuation line.
 * With no results it says `none` (RFC 8601 2.2: the message was looked at, nothing applied).
 */
export const format = (auth: Authentication): string => {
  const id = quoteValue(auth.authservId)
  if (auth.results.length === 0) return `${headerName}: ${id}; none\r\n`
  return `${headerName}: ${id};\r\n\t${auth.results.map(formatResult).join(";\r\n\t")}\r\n`
}

/** Strips leading CFWS (folding white space and nested comments). */
const skipCfws = (s: string, at: number): number => {
  let i = at
  for (;;) {
    while (i < s.length && /\s/.test(s[i]!)) i++
    if (s[i] !== "(") return i
    let depth = 0
    for (; i < s.length; i++) {
      if (s[i] === "\\") i++
      else if (s[i] === "(") depth++
      else if (s[i] === ")" && --depth === 0) {
        i++
        break
      }
    }
  }
}

/**
 * The authserv-id an `Authentication-Results` value claims (the text before the first `;`,
 * comments removed, quotes undone), lower-cased; undefined when there is none.
 */
export const authservIdOf = (value: string): string | undefined => {
  const i = skipCfws(value, 0)
  if (value[i] === "\"") {
    let out = ""
    for (let j = i + 1; j < value.length; j++) {
      if (value[j] === "\\") out += value[++j] ?? ""
      else if (value[j] === "\"") return out.toLowerCase()
      else out += value[j]
    }
    return undefined
  }
  const m = /^[^\s;()"]+/.exec(value.slice(i))
  return m === null ? undefined : m[0].toLowerCase()
}
