/**
 * The envelope of one accepted transaction: what the queue stores next to the body and what
 * delivery adapters route on. Addresses are normalised strings (domain lower-cased); the null
 * sender is the empty string.
 *
 * The optional fields are what DATA-stage rules concluded (policy/MessageEdit.ts): the
 * authentication results, a quarantine mark and free annotations. Every queue backend stores the
 * envelope as JSON, so they survive restarts and reach the delivery unchanged; absent fields are
 * left out of the JSON, so envelopes stored before they existed still read back.
 */
import type { Schema } from "effect"
import type { Authentication } from "./AuthenticationResults.ts"

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
  /** The results written into the message's `Authentication-Results:` header. */
  readonly authentication?: Authentication | undefined
  /** Set when a rule quarantined the message (the first rule that did). */
  readonly quarantine?: Quarantine | undefined
  /** What rules recorded about the message, by key (later rules overwrite a key). */
  readonly annotations?: Readonly<Record<string, Json>> | undefined
}
