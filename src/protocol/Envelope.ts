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
import type { Authentication } from "./AuthenticationResults.ts"
import type * as Dsn from "./Dsn.ts"

/** A JSON value: what an annotation may hold (it is stored as JSON). */
export type Json = Schema.Json

/** The message is to be kept apart (DMARC `p=quarantine`, a spam verdict): routes can match it. */
export interface Quarantine {
  /** The rule that asked for it. */
  readonly rule: string
  readonly reason: string
}

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
  /**
   * What DATA-stage rules concluded (policy/MessageEdit.ts): the results written into the
   * message's `Authentication-Results:` header, ...
   */
  readonly authentication?: Authentication | undefined
  /** ... a quarantine mark (the first rule that set one), which routes can match, ... */
  readonly quarantine?: Quarantine | undefined
  /** ... and what rules recorded about the message, by key (later rules overwrite a key). */
  readonly annotations?: Readonly<Record<string, Json>> | undefined
  /**
   * Priority -9..9 (protocol/Priority.ts): the highest of an honoured `MT-PRIORITY`, the
   * listener's, the configured patterns' and the routes'. Absent: normal (0).
   */
  readonly priority?: number | undefined
  /** When a delay notice (RFC 3464 `Action: delayed`) went to the sender: one per message. Set by the queue. */
  readonly delayNotified?: number | undefined
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
  recipientDsn: Schema.optional(Schema.Record(Schema.String, RecipientDsn)),
  authentication: Schema.optional(Schema.Struct({
    authservId: Schema.String,
    results: Schema.Array(Schema.Struct({
      method: Schema.String,
      result: Schema.Literals(["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy", "skipped"]),
      reason: Schema.optional(Schema.String),
      properties: Schema.Record(Schema.String, Schema.String)
    }))
  })),
  quarantine: Schema.optional(Schema.Struct({ rule: Schema.String, reason: Schema.String })),
  annotations: Schema.optional(Schema.Record(Schema.String, Schema.Json)),
  priority: Schema.optional(Schema.Number),
  delayNotified: Schema.optional(Schema.Number)
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
