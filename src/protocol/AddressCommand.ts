/**
 * The MAIL and RCPT command lines (RFC 5321 §4.1.1.2-3, §4.1.2) as they arrive, in bytes:
 * `MAIL FROM:<path> [params]` / `RCPT TO:<path> [params]`, the path's 256-octet limit, the
 * mailbox grammar (Address.ts), ESMTP parameters (keyword syntax, duplicates, the ones we
 * advertise), RFC 6531 UTF-8 and RFC 3461 DSN values. The protocol engine answers MAIL and RCPT
 * through this parser instead of smtp-server's (src/smtp/internal/addressCommands.ts).
 *
 * Every refusal carries its reply:
 * - `501 5.5.2` the command itself is malformed (no `FROM:` / `TO:`, junk after the path);
 * - `501 5.1.7` / `501 5.1.3` a bad sender / recipient: brackets, grammar, lengths, bad UTF-8;
 * - `553 5.6.7` a non-ASCII address in a transaction without SMTPUTF8 (RFC 6531 §3.5);
 * - `501 5.5.4` a malformed parameter or value (SIZE, BODY, SMTPUTF8, RET, ENVID, MT-PRIORITY,
 *   NOTIFY, ORCPT);
 * - `555 5.5.4` a parameter we do not advertise (REQUIRETLS among them).
 *
 * Lenient where senders commonly are and nothing is ambiguous: spaces after the colon, several
 * spaces between parameters, keywords in any case, and a source route (`<@a,@b:user@c>`, which
 * §4.1.2 says to accept and ignore).
 */
import { isUtf8 } from "node:buffer"
import { Result } from "effect"
import * as Address from "./Address.ts"
import * as Dsn from "./Dsn.ts"
import * as Priority from "./Priority.ts"
import * as SmtpReply from "./SmtpReply.ts"

export type Params = ReadonlyMap<string, string | true>

export interface MailCommand {
  readonly verb: "MAIL"
  /** The canonical sender (Address.toString); empty for the null reverse-path `<>`. */
  readonly address: string
  readonly mailbox: Address.Mailbox | undefined
  /** Upper-case keywords; a keyword without `=value` is `true`. */
  readonly params: Params
  readonly smtpUtf8: boolean
  readonly size: number | undefined
  readonly body: "7BIT" | "8BITMIME" | undefined
  readonly dsn: Dsn.MailDsn | undefined
  /** RFC 6710 `MT-PRIORITY`, checked for syntax only: whether it is honoured is the session's call. */
  readonly priority: Priority.Priority | undefined
}

export interface RcptCommand {
  readonly verb: "RCPT"
  /** The canonical recipient; `postmaster` for the domainless one. */
  readonly address: string
  readonly mailbox: Address.Mailbox
  readonly params: Params
  readonly dsn: Dsn.RecipientDsn | undefined
}

/** What we advertise in EHLO, per command: anything else is 555 5.5.4. */
export const mailParameters: ReadonlySet<string> = new Set(["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "MT-PRIORITY"])
export const rcptParameters: ReadonlySet<string> = new Set(["NOTIFY", "ORCPT"])

type Verb = "MAIL" | "RCPT"
type Parsed<A> = Result.Result<A, SmtpReply.SmtpReply>

const refuse = (reply: SmtpReply.SmtpReply): Parsed<never> => Result.fail(reply)
const addressReply = (verb: Verb, detail: string) =>
  verb === "MAIL"
    ? SmtpReply.make(501, "5.1.7", `Bad sender address syntax: ${detail}`)
    : SmtpReply.badRecipientSyntax(`Bad recipient address syntax: ${detail}`)
export const nonAscii = (verb: Verb) =>
  SmtpReply.make(553, "5.6.7", `Non-ASCII ${verb === "MAIL" ? "sender" : "recipient"} address needs SMTPUTF8`)
const paramReply = (detail: string) => SmtpReply.make(501, "5.5.4", detail)

const hasNonAscii = (s: string): boolean => /[^\x00-\x7f]/.test(s)
/** Whether a piece of a line decoded as latin1 (because the whole was not UTF-8) is valid UTF-8. */
const pieceIsUtf8 = (piece: string, lineIsUtf8: boolean): boolean => lineIsUtf8 || isUtf8(Buffer.from(piece, "latin1"))

interface Split {
  readonly path: string
  readonly route: string
  readonly mailbox: string
  readonly rest: string
}

/** Finds `<...>` after the colon, `>` inside a quoted local part included. */
const splitPath = (verb: Verb, text: string): Parsed<Split> => {
  const prefix = verb === "MAIL" ? /^MAIL FROM: */i : /^RCPT TO: */i
  const m = prefix.exec(text)
  if (m === null) return refuse(SmtpReply.syntaxError(verb === "MAIL" ? "Syntax: MAIL FROM:<address> [parameters]" : "Syntax: RCPT TO:<address> [parameters]"))
  const start = m[0].length
  if (text[start] !== "<") return refuse(addressReply(verb, "the address must be in angle brackets"))
  let i = start + 1
  let route = ""
  if (text[i] === "@") {
    const colon = text.indexOf(":", i)
    if (colon === -1) return refuse(addressReply(verb, "a source route without its ':'"))
    route = text.slice(i, colon)
    i = colon + 1
  }
  const mailboxStart = i
  let quoted = false
  for (; i < text.length; i++) {
    const ch = text[i]
    if (quoted) {
      if (ch === "\\") i++
      else if (ch === '"') quoted = false
    } else if (ch === '"') {
      quoted = true
    } else if (ch === ">") {
      break
    }
  }
  if (i >= text.length) return refuse(addressReply(verb, "no closing '>'"))
  return Result.succeed({ path: text.slice(start, i + 1), route, mailbox: text.slice(mailboxStart, i), rest: text.slice(i + 1) })
}

const keyword = /^[A-Za-z0-9][A-Za-z0-9-]*$/
/** esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 adds UTF8-non-ascii (checked by the caller). */
const value = /^[^\x00-\x20=\x7f]+$/

/** The parameters of a command that has none (most): one shared, read-only result, no map per command. */
const noParams: Parsed<Params> = Result.succeed(new Map())

const parseParams = (rest: string, allowed: ReadonlySet<string>): Parsed<Params> => {
  if (rest === "") return noParams
  if (!rest.startsWith(" ")) return refuse(SmtpReply.syntaxError("Syntax: a space between the address and its parameters"))
  const params = new Map<string, string | true>()
  for (const param of rest.split(" ")) {
    if (param === "") continue
    const eq = param.indexOf("=")
    const key = (eq === -1 ? param : param.slice(0, eq)).toUpperCase()
    const v = eq === -1 ? true : param.slice(eq + 1)
    if (!keyword.test(key)) return refuse(paramReply("Bad parameter syntax"))
    if (v !== true && !value.test(v)) return refuse(paramReply(`${key} parameter: bad value syntax`))
    if (params.has(key)) return refuse(paramReply(`${key} parameter given twice`))
    params.set(key, v)
  }
  for (const key of params.keys()) if (!allowed.has(key)) return refuse(SmtpReply.unknownParameter(key))
  return Result.succeed(params)
}

const problemReply = (verb: Verb, p: Address.Problem): SmtpReply.SmtpReply =>
  p._tag === "NonAscii" ? nonAscii(verb) : addressReply(verb, Address.describe(p))

/** The path's mailbox, after the line-level checks (brackets, UTF-8, length). */
const parsePath = (verb: Verb, split: Split, smtpUtf8: boolean, lineIsUtf8: boolean): Parsed<Address.Mailbox | undefined> => {
  const { path, route, mailbox } = split
  if (hasNonAscii(path)) {
    if (!smtpUtf8) return refuse(nonAscii(verb))
    if (!pieceIsUtf8(path, lineIsUtf8)) return refuse(addressReply(verb, "not valid UTF-8"))
  }
  const octets = Buffer.byteLength(path, lineIsUtf8 ? "utf8" : "latin1")
  if (octets > Address.maxPathOctets) return refuse(addressReply(verb, `path of ${octets} octets (at most ${Address.maxPathOctets})`))
  if (route !== "") {
    const hops = route.split(",")
    if (!hops.every((hop) => hop.startsWith("@") && Result.isSuccess(Address.canonicalDomain(hop.slice(1), { utf8: smtpUtf8 })))) {
      return refuse(addressReply(verb, "a bad source route"))
    }
  }
  if (mailbox === "") {
    if (verb === "MAIL" && route === "") return Result.succeed(undefined)
    return refuse(addressReply(verb, "an empty address"))
  }
  const parsed = Address.check(mailbox, { utf8: smtpUtf8, postmaster: verb === "RCPT" })
  return Result.isFailure(parsed) ? refuse(problemReply(verb, parsed.failure)) : Result.succeed(parsed.success)
}

/** Parameter values with non-ASCII bytes: only valid UTF-8, and only under SMTPUTF8. */
const checkValues = (params: Params, smtpUtf8: boolean, lineIsUtf8: boolean): SmtpReply.SmtpReply | undefined => {
  for (const [key, v] of params) {
    if (v !== true && hasNonAscii(v) && (!smtpUtf8 || !pieceIsUtf8(v, lineIsUtf8))) {
      return paramReply(`${key} parameter: non-ASCII value${smtpUtf8 ? " that is not UTF-8" : " without SMTPUTF8"}`)
    }
  }
  return undefined
}

const decode = (line: Uint8Array | string): { readonly text: string; readonly utf8: boolean } => {
  if (typeof line === "string") return { text: line, utf8: true }
  const buffer = Buffer.isBuffer(line) ? line : Buffer.from(line)
  // Not UTF-8: decoded byte for byte so the structure can still be read; any non-ASCII piece is refused.
  return isUtf8(buffer) ? { text: buffer.toString("utf8"), utf8: true } : { text: buffer.toString("latin1"), utf8: false }
}

const sizeOf = (params: Params): Parsed<number | undefined> => {
  const size = params.get("SIZE")
  if (size === undefined) return Result.succeed(undefined)
  return size !== true && /^\d{1,20}$/.test(size) ? Result.succeed(Number(size)) : refuse(paramReply("SIZE parameter: expected a number of octets"))
}

const bodyOf = (params: Params): Parsed<"7BIT" | "8BITMIME" | undefined> => {
  const body = params.get("BODY")
  if (body === undefined) return Result.succeed(undefined)
  const upper = body === true ? "" : body.toUpperCase()
  return upper === "7BIT" || upper === "8BITMIME" ? Result.succeed(upper) : refuse(paramReply("BODY parameter: expected 7BIT or 8BITMIME"))
}

// The two parsers run for every MAIL and RCPT: plain early returns, not `Result.gen` (whose
// generator and allocations made them three times slower, measured with 300k lines).

/** `MAIL FROM:<path> [params]`, the line without its CRLF. */
export const parseMail = (line: Uint8Array | string): Parsed<MailCommand> => {
  const { text, utf8 } = decode(line)
  const split = splitPath("MAIL", text)
  if (Result.isFailure(split)) return refuse(split.failure)
  const params = parseParams(split.success.rest, mailParameters)
  if (Result.isFailure(params)) return refuse(params.failure)
  const smtpUtf8Param = params.success.get("SMTPUTF8")
  if (smtpUtf8Param !== undefined && smtpUtf8Param !== true) return refuse(paramReply("SMTPUTF8 parameter takes no value"))
  const smtpUtf8 = smtpUtf8Param === true
  const mailbox = parsePath("MAIL", split.success, smtpUtf8, utf8)
  if (Result.isFailure(mailbox)) return refuse(mailbox.failure)
  const badValue = checkValues(params.success, smtpUtf8, utf8)
  if (badValue !== undefined) return refuse(badValue)
  const size = sizeOf(params.success)
  if (Result.isFailure(size)) return refuse(size.failure)
  const body = bodyOf(params.success)
  if (Result.isFailure(body)) return refuse(body.failure)
  const dsn = Dsn.mailDsn(params.success)
  if (Result.isFailure(dsn)) return refuse(dsn.failure)
  const priorityParam = params.success.get("MT-PRIORITY")
  const priority = priorityParam === undefined ? undefined : Priority.parseParameter(priorityParam)
  if (priority !== undefined && Result.isFailure(priority)) return refuse(priority.failure)
  return Result.succeed({
    verb: "MAIL",
    address: mailbox.success === undefined ? "" : Address.toString(mailbox.success),
    mailbox: mailbox.success,
    params: params.success,
    smtpUtf8,
    size: size.success,
    body: body.success,
    dsn: dsn.success,
    priority: priority?.success
  })
}

/** `RCPT TO:<path> [params]`; `smtpUtf8`: the transaction's MAIL carried SMTPUTF8. */
export const parseRcpt = (line: Uint8Array | string, options: { readonly smtpUtf8: boolean }): Parsed<RcptCommand> => {
  const { text, utf8 } = decode(line)
  const split = splitPath("RCPT", text)
  if (Result.isFailure(split)) return refuse(split.failure)
  const params = parseParams(split.success.rest, rcptParameters)
  if (Result.isFailure(params)) return refuse(params.failure)
  const mailbox = parsePath("RCPT", split.success, options.smtpUtf8, utf8)
  if (Result.isFailure(mailbox)) return refuse(mailbox.failure)
  // Only MAIL has the null path: `parsePath` gives RCPT a mailbox or a refusal.
  if (mailbox.success === undefined) return refuse(addressReply("RCPT", "an empty address"))
  const badValue = checkValues(params.success, options.smtpUtf8, utf8)
  if (badValue !== undefined) return refuse(badValue)
  const dsn = Dsn.recipientDsn(params.success)
  if (Result.isFailure(dsn)) return refuse(dsn.failure)
  return Result.succeed({
    verb: "RCPT",
    address: Address.toString(mailbox.success),
    mailbox: mailbox.success,
    params: params.success,
    dsn: dsn.success
  })
}
