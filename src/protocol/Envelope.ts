/**
 * The envelope of one accepted transaction: what the queue stores next to the body and what
 * delivery adapters route on. Addresses are normalised strings (domain lower-cased); the null
 * sender is the empty string.
 */
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
}
