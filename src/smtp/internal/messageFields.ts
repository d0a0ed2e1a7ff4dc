/**
 * What a session writes into a message besides its body, as plain functions of the session: the
 * envelope's recipients, its session fields, its priority, and the `Received:` field. Both of
 * Session's DATA paths (the direct one and the one with rules, edits and LMTP) build messages
 * with them, so the two cannot drift apart.
 */
import type { SMTPServerAddress, SMTPServerSession } from "smtp-server"
import * as Address from "../../protocol/Address.ts"
import type { Envelope } from "../../protocol/Envelope.ts"
import * as Priority from "../../protocol/Priority.ts"
import * as ReceivedHeader from "../../protocol/ReceivedHeader.ts"
import * as Commands from "./commands.ts"

/**
 * Whether the client authenticated. smtp-server resets `session.user` to `false` (not
 * `undefined`) on STARTTLS and XCLIENT; treating that as a user would make every STARTTLS
 * session an authenticated one — an open relay (guarantee 5). So every falsy value counts as
 * not authenticated.
 */
export const isAuthenticated = (session: SMTPServerSession): boolean =>
  session.user !== undefined && session.user !== null && session.user !== false && session.user !== ""

/**
 * The canonical recipient of an accepted RCPT; the domainless postmaster is `primaryDomain`'s.
 * The engine's parser gave the canonical address and its parts already (AddressCommand.ts): no
 * second parse of every recipient for every message.
 */
export const recipientOf = (given: SMTPServerAddress, primaryDomain: string): string | undefined => {
  const command = Commands.parsedOf(given)
  const rcpt = command?.verb === "RCPT" ? command : undefined
  const m = rcpt?.mailbox ?? Address.parse(given.address)
  if (m === undefined) return undefined
  if (m.domain === "") return `${m.local}@${primaryDomain}`
  return rcpt?.address ?? Address.toString(m)
}

/** The transaction's recipients, canonical and without repeats, in RCPT order. */
export const recipientsOf = (session: SMTPServerSession, primaryDomain: string): ReadonlyArray<string> => {
  const given = session.envelope.rcptTo
  // One recipient (most messages): nothing to deduplicate, no set.
  if (given.length === 1) {
    const rcpt = recipientOf(given[0]!, primaryDomain)
    return rcpt === undefined ? [] : [rcpt]
  }
  const seen = new Set<string>()
  for (const r of given) {
    const rcpt = recipientOf(r, primaryDomain)
    if (rcpt !== undefined) seen.add(rcpt)
  }
  return [...seen]
}

/** The envelope's fields that come from the session, not from MAIL and RCPT. */
export const sessionFields = (session: SMTPServerSession, listener: string, smtpUtf8: boolean | undefined) => ({
  helo: session.hostNameAppearsAs,
  clientAddress: session.remoteAddress,
  secure: session.secure,
  authenticatedUser: typeof session.user === "string" ? session.user : undefined,
  listener,
  ...(smtpUtf8 === undefined ? {} : { smtpUtf8 })
})

export interface PriorityInputs {
  /** Whether the client may ask for a priority: authenticated or from a trusted network (RFC 6710 §5). */
  readonly trusted: boolean
  /** The listener's level, the configured patterns' and delivery's (routes, the host app). */
  readonly listener: number | undefined
  readonly configured: number | undefined
  readonly delivery: number | undefined
}

/**
 * The message's priority (protocol/Priority.ts): the highest of `MT-PRIORITY` (honoured only
 * from a trusted client) and the other levels. `priority` absent when nothing applies; a
 * requested level that was not honoured is recorded as the annotation `mt-priority-ignored`.
 */
export const withPriority = (session: SMTPServerSession, envelope: Envelope, levels: PriorityInputs): Envelope => {
  const mail = session.envelope.mailFrom === false ? undefined : Commands.parsedOf(session.envelope.mailFrom)
  const requested = mail?.verb === "MAIL" ? mail.priority : undefined
  if (requested === undefined && levels.listener === undefined && levels.configured === undefined && levels.delivery === undefined) return envelope
  const honoured = requested !== undefined && levels.trusted
  const all = [honoured ? requested : undefined, levels.listener, levels.configured, levels.delivery]
  const priority = all.some((l) => l !== undefined) ? Priority.highest(all) : undefined
  const ignored = requested !== undefined && !honoured ? { "mt-priority-ignored": requested } : undefined
  return {
    ...envelope,
    ...(ignored === undefined ? {} : { annotations: { ...envelope.annotations, ...ignored } }),
    ...(priority === undefined ? {} : { priority })
  }
}

/** The message's `Received:` field (RFC 5321 4.4). */
export const receivedField = (
  session: SMTPServerSession,
  at: { readonly hostname: string; readonly lmtp: boolean; readonly id: string; readonly recipients: ReadonlyArray<string>; readonly now: number }
) =>
  ReceivedHeader.make({
    helo: session.hostNameAppearsAs,
    clientAddress: session.remoteAddress,
    clientHostname: session.clientHostname,
    hostname: at.hostname,
    secure: session.secure,
    authenticated: isAuthenticated(session),
    // Was "ESMTP" even after HELO; the engine records the opening command.
    esmtp: session.openingCommand !== "HELO",
    lmtp: at.lmtp,
    utf8: session.envelope.smtpUtf8 === true,
    id: at.id,
    recipients: at.recipients,
    date: new Date(at.now)
  })
