/**
 * RFC 3461 delivery status notification parameters: `RET` and `ENVID` on MAIL, `NOTIFY` and
 * `ORCPT` on RCPT, their syntax checks and xtext (§4). The server advertises `DSN`, keeps the
 * values with the message (the envelope's `dsn` and `recipientDsn`) and shows them to delivery
 * adapters; the notifications that use them are not sent yet.
 *
 * A bad value is `501 5.5.4` naming the parameter. Limits: ENVID at most 100 characters and ORCPT
 * at most 500 as sent (§4.4, §4.2); hex digits after `+` are taken in either case.
 */
import { Result } from "effect"
import * as SmtpReply from "./SmtpReply.ts"

export type Ret = "FULL" | "HDRS"
export type Notify = "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"

/** MAIL's DSN parameters. */
export interface MailDsn {
  readonly ret?: Ret | undefined
  /** The envelope id, xtext-decoded: printable US-ASCII. */
  readonly envid?: string | undefined
}

/** One recipient's DSN parameters. */
export interface RecipientDsn {
  /** `["NEVER"]`, or a set of SUCCESS / FAILURE / DELAY (never NEVER with others). */
  readonly notify?: ReadonlyArray<Notify> | undefined
  /** The original recipient: its address type (`rfc822`) and the xtext-decoded address. */
  readonly orcpt?: { readonly type: string; readonly address: string } | undefined
}

export const maxEnvidLength = 100
export const maxOrcptLength = 500

const bad = (parameter: string, why: string): Result.Result<never, SmtpReply.SmtpReply> =>
  Result.fail(SmtpReply.make(501, "5.5.4", `${parameter} parameter: ${why}`))

/** xtext (RFC 3461 §4) to its bytes; `undefined` when it is not xtext. */
export const decodeXtext = (xtext: string): Uint8Array | undefined => {
  const out: Array<number> = []
  for (let i = 0; i < xtext.length; i++) {
    const c = xtext.charCodeAt(i)
    if (c === 0x2b) {
      const hex = xtext.slice(i + 1, i + 3)
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined
      out.push(Number.parseInt(hex, 16))
      i += 2
    } else if (c >= 33 && c <= 126 && c !== 0x3d) {
      out.push(c)
    } else {
      return undefined
    }
  }
  return Uint8Array.from(out)
}

/** Text as xtext: `+`, `=`, controls, space and every non-ASCII byte as `+HH`. */
export const encodeXtext = (text: string): string => {
  let out = ""
  for (const byte of Buffer.from(text, "utf8")) {
    out += byte >= 33 && byte <= 126 && byte !== 0x2b && byte !== 0x3d
      ? String.fromCharCode(byte)
      : `+${byte.toString(16).toUpperCase().padStart(2, "0")}`
  }
  return out
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

export const parseRet = (value: string): Result.Result<Ret, SmtpReply.SmtpReply> => {
  const v = value.toUpperCase()
  return v === "FULL" || v === "HDRS" ? Result.succeed(v) : bad("RET", "expected FULL or HDRS")
}

export const parseEnvid = (value: string): Result.Result<string, SmtpReply.SmtpReply> => {
  if (value.length > maxEnvidLength) return bad("ENVID", `longer than ${maxEnvidLength} characters`)
  const bytes = decodeXtext(value)
  if (bytes === undefined) return bad("ENVID", "not xtext")
  const text = Buffer.from(bytes).toString("latin1")
  return /^[\x20-\x7e]+$/.test(text) ? Result.succeed(text) : bad("ENVID", "must decode to printable US-ASCII")
}

const notifyValues: ReadonlySet<string> = new Set(["NEVER", "SUCCESS", "FAILURE", "DELAY"])

export const parseNotify = (value: string): Result.Result<ReadonlyArray<Notify>, SmtpReply.SmtpReply> => {
  const values = value.toUpperCase().split(",")
  if (!values.every((v) => notifyValues.has(v))) return bad("NOTIFY", "expected NEVER, or a list of SUCCESS, FAILURE and DELAY")
  if (new Set(values).size !== values.length) return bad("NOTIFY", "a value is repeated")
  if (values.includes("NEVER") && values.length > 1) return bad("NOTIFY", "NEVER cannot be combined with other values")
  return Result.succeed(values as ReadonlyArray<Notify>)
}

/** RFC 822 atom (the addr-type): printable ASCII without specials. */
const addrType = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$/

export const parseOrcpt = (value: string): Result.Result<NonNullable<RecipientDsn["orcpt"]>, SmtpReply.SmtpReply> => {
  if (value.length > maxOrcptLength) return bad("ORCPT", `longer than ${maxOrcptLength} characters`)
  const semi = value.indexOf(";")
  const type = value.slice(0, semi)
  if (semi <= 0 || !addrType.test(type)) return bad("ORCPT", "expected addr-type;address, like rfc822;user@example.org")
  const bytes = decodeXtext(value.slice(semi + 1))
  if (bytes === undefined || bytes.length === 0) return bad("ORCPT", "the address is not xtext")
  let address: string
  try {
    address = utf8.decode(bytes)
  } catch {
    return bad("ORCPT", "the address is not valid UTF-8")
  }
  if (/[\x00-\x1f\x7f-\x9f]/.test(address)) return bad("ORCPT", "control characters in the address")
  return Result.succeed({ type, address })
}

/** MAIL's DSN parameters from its (upper-case keyed) parameters. */
export const mailDsn = (params: ReadonlyMap<string, string | true>): Result.Result<MailDsn | undefined, SmtpReply.SmtpReply> => {
  const ret = params.get("RET")
  const envid = params.get("ENVID")
  if (ret === undefined && envid === undefined) return Result.succeed(undefined)
  if (ret === true) return bad("RET", "requires a value")
  if (envid === true) return bad("ENVID", "requires a value")
  const r = ret === undefined ? undefined : parseRet(ret)
  if (r !== undefined && Result.isFailure(r)) return Result.fail(r.failure)
  const e = envid === undefined ? undefined : parseEnvid(envid)
  if (e !== undefined && Result.isFailure(e)) return Result.fail(e.failure)
  return Result.succeed({ ...(r === undefined ? {} : { ret: r.success }), ...(e === undefined ? {} : { envid: e.success }) })
}

/** RCPT's DSN parameters from its (upper-case keyed) parameters. */
export const recipientDsn = (params: ReadonlyMap<string, string | true>): Result.Result<RecipientDsn | undefined, SmtpReply.SmtpReply> => {
  const notify = params.get("NOTIFY")
  const orcpt = params.get("ORCPT")
  if (notify === undefined && orcpt === undefined) return Result.succeed(undefined)
  if (notify === true) return bad("NOTIFY", "requires a value")
  if (orcpt === true) return bad("ORCPT", "requires a value")
  const n = notify === undefined ? undefined : parseNotify(notify)
  if (n !== undefined && Result.isFailure(n)) return Result.fail(n.failure)
  const o = orcpt === undefined ? undefined : parseOrcpt(orcpt)
  if (o !== undefined && Result.isFailure(o)) return Result.fail(o.failure)
  return Result.succeed({ ...(n === undefined ? {} : { notify: n.success }), ...(o === undefined ? {} : { orcpt: o.success }) })
}

/**
 * MAIL's DSN parameters as a client sends them onward (` RET=FULL ENVID=<xtext>`), for a next hop
 * that advertised `DSN`; empty without any. The envelope keeps ENVID decoded: it is re-encoded.
 */
export const mailParameters = (dsn: MailDsn | undefined): string =>
  (dsn?.ret === undefined ? "" : ` RET=${dsn.ret}`) + (dsn?.envid === undefined ? "" : ` ENVID=${encodeXtext(dsn.envid)}`)

/** One recipient's DSN parameters as sent onward (` NOTIFY=SUCCESS,DELAY ORCPT=rfc822;<xtext>`). */
export const recipientParameters = (dsn: RecipientDsn | undefined): string =>
  (dsn?.notify === undefined ? "" : ` NOTIFY=${dsn.notify.join(",")}`) +
  (dsn?.orcpt === undefined ? "" : ` ORCPT=${dsn.orcpt.type};${encodeXtext(dsn.orcpt.address)}`)
