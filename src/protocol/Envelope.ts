/**
 * The envelope of one accepted transaction: what the queue stores next to the body and what
 * delivery adapters route on. Addresses are canonical strings (Address.toString: domain
 * lower-cased, local part as meant); the null sender is the empty string.
 *
 * Every queue backend stores it as the JSON of this interface and reads it back through
 * `Schema` below, so a field added here is kept by all of them (the compile-time check at the
 * bottom fails when the two drift apart). New fields are optional: rows written before them
 * still decode.
 */
import { Schema } from "effect"
import type * as Dsn from "./Dsn.ts"

export interface Envelope {
  readonly mailFrom: string
  readonly rcptTo: ReadonlyArray<string>
  /** HELO/EHLO argument as sent (sanitised only where it is written into headers). */
  readonly helo: string
  readonly clientAddress: string
  readonly secure: boolean
  readonly authenticatedUser?: string | undefined
  /** Which listener accepted it (its name). */
  readonly listener: string
  /** MAIL carried SMTPUTF8 (RFC 6531): addresses and header fields may be UTF-8. */
  readonly smtpUtf8?: boolean | undefined
  /** RFC 3461 parameters of MAIL (RET, ENVID), when the client gave any. */
  readonly dsn?: Dsn.MailDsn | undefined
  /** RFC 3461 parameters of the recipients that carried any (NOTIFY, ORCPT), keyed as in `rcptTo`. */
  readonly recipientDsn?: { readonly [rcpt: string]: Dsn.RecipientDsn } | undefined
}

const MailDsn = Schema.Struct({
  ret: Schema.optional(Schema.Literals(["FULL", "HDRS"])),
  envid: Schema.optional(Schema.String)
})

const RecipientDsn = Schema.Struct({
  notify: Schema.optional(Schema.Array(Schema.Literals(["NEVER", "SUCCESS", "FAILURE", "DELAY"]))),
  orcpt: Schema.optional(Schema.Struct({ type: Schema.String, address: Schema.String }))
})

export const EnvelopeSchema = Schema.Struct({
  mailFrom: Schema.String,
  rcptTo: Schema.Array(Schema.String),
  helo: Schema.String,
  clientAddress: Schema.String,
  secure: Schema.Boolean,
  authenticatedUser: Schema.optional(Schema.String),
  listener: Schema.String,
  smtpUtf8: Schema.optional(Schema.Boolean),
  dsn: Schema.optional(MailDsn),
  recipientDsn: Schema.optional(Schema.Record(Schema.String, RecipientDsn))
})

// Fails to compile when `Envelope` gains or changes a field the stored JSON would not carry back.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
const _schemaMatches: Same<typeof EnvelopeSchema.Type, Envelope> = true
const _schemaKeys: Same<keyof typeof EnvelopeSchema.Type, keyof Envelope> = true

const decodeJson = Schema.decodeUnknownSync(Schema.fromJsonString(EnvelopeSchema))

/** The stored form (JSON). */
export const encode = (envelope: Envelope): string => JSON.stringify(envelope)

/** Throws on text that does not hold an envelope (a hand-edited or corrupt row). */
export const decode = (json: string): Envelope => decodeJson(json)
