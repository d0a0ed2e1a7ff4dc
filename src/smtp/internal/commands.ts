/**
 * Commands whose replies Incoming decides instead of smtp-server, installed per connection by
 * the engine (engine.ts):
 *
 * - MAIL and RCPT are parsed by our RFC 5321/6531/3461 parser (protocol/AddressCommand.ts) before
 *   the library's handler runs; a refusal is answered here with its own code, and an accepted
 *   command reaches the library (and through it the session's hooks) as the address object the
 *   library would have built, with our parse attached (`parsedOf`). The library's own address
 *   parser never sees a line: it refused quoted local parts, 254-octet mailboxes and UTF-8
 *   senders, and accepted invalid UTF-8.
 * - Commands it knows but cannot serve here get 502/503/538 instead of the library's
 *   `500 5.5.2 command not recognized` (RFC 5321 §4.2.4: 500 is for commands not recognized at
 *   all): AUTH before TLS is `538 5.7.11` (RFC 4954 §4), EXPN and the other unimplemented
 *   commands `502 5.5.1`. Which ones, and why, is the listener's `CommandRules`.
 */
import type { SMTPServerAddress } from "smtp-server"
import type { SMTPConnection } from "smtp-server/lib/smtp-connection.js"
import { Result } from "effect"
import * as AddressCommand from "../../protocol/AddressCommand.ts"
import * as SmtpReply from "../../protocol/SmtpReply.ts"

export interface CommandContext {
  readonly secure: boolean
  /** HELO/EHLO was accepted. */
  readonly greeted: boolean
}

export interface CommandRules {
  /**
   * The reply for a command this session cannot use, or `undefined` to let the engine run it.
   * Asked for every command line (upper-case name) outside DATA and AUTH exchanges.
   */
  readonly unavailable: (name: string, context: CommandContext) => SmtpReply.SmtpReply | undefined
  /** EHLO keywords to add after the engine's own, for this client (e.g. `MT-PRIORITY` to trusted ones). */
  readonly ehloExtensions?: ((client: { readonly remoteAddress: string; readonly secure: boolean }) => ReadonlyArray<string>) | undefined
}

/**
 * Commands of RFC 5321 and common extensions that Incoming does not implement. XCLIENT and
 * XFORWARD are among them: the listener never turns on smtp-server's `useXClient`/`useXForward`,
 * which would otherwise answer `550 Not allowed` to commands we never offered.
 */
const notImplemented: ReadonlySet<string> = new Set([
  "EXPN", "TURN", "ETRN", "ATRN", "BDAT", "SEND", "SOML", "SAML", "XCLIENT", "XFORWARD", "WIZ", "SHELL", "KILL", "DEBUG"
])
export const commandNotImplemented = SmtpReply.make(502, "5.5.1", "Command not implemented")

/**
 * A PROXY header as a command: it came from a peer that is not a trusted proxy (a trusted one's
 * header is read before the session starts), or a second time. Its address is never used.
 */
export const proxyRefused = SmtpReply.make(550, "5.7.1", "PROXY header not accepted from this address")

/** HELO or EHLO on an LMTP listener (RFC 2033 4.1: LHLO replaces them); the library's has no enhanced code. */
export const lmtpNeedsLhlo = SmtpReply.make(500, "5.5.1", "Use LHLO on an LMTP server")

/** The rules for commands Incoming never serves, whatever the listener (`CommandRules` builds on it). */
export const unimplemented = (name: string): SmtpReply.SmtpReply | undefined =>
  name === "PROXY" ? proxyRefused : notImplemented.has(name) ? commandNotImplemented : undefined

const parsed = new WeakMap<SMTPServerAddress, AddressCommand.MailCommand | AddressCommand.RcptCommand>()

/** Our parse of an address the engine passed to a hook (`undefined` for one we did not parse). */
export const parsedOf = (address: SMTPServerAddress): AddressCommand.MailCommand | AddressCommand.RcptCommand | undefined =>
  parsed.get(address)

/** The object smtp-server's handlers expect from `_parseAddressCommand`. */
const toLibrary = (command: AddressCommand.MailCommand | AddressCommand.RcptCommand): SMTPServerAddress => {
  const args: Record<string, string | true> = {}
  for (const [key, value] of command.params) args[key] = value
  const address: SMTPServerAddress = { address: command.address, args: command.params.size === 0 ? false : args }
  parsed.set(address, command)
  return address
}

const send = (connection: SMTPConnection, reply: SmtpReply.SmtpReply) => connection.send(reply.code, `${reply.enhanced} ${reply.text}`)

/** The first word of a command line, upper-cased (as smtp-server dispatches on it). */
export const commandName = (line: Buffer): string => {
  const space = line.indexOf(0x20)
  return line.subarray(0, space === -1 ? line.length : space).toString("latin1").toUpperCase()
}

/**
 * Whether a line is a command the engine dispatches (not an AUTH continuation, not input while
 * the greeting is pending, a TLS handshake runs or the server closes: the library answers those).
 */
export const isDispatched = (connection: SMTPConnection): boolean =>
  connection._nextHandler === false && connection._ready && !connection._upgrading && connection._server._closeTimeout === false

/** Replaces the library's MAIL/RCPT address parsing with ours on one connection. */
export const install = (connection: SMTPConnection): void => {
  let pending: AddressCommand.MailCommand | AddressCommand.RcptCommand | undefined
  // The library's handlers call this first thing, synchronously: they get our parse of the same line.
  connection._parseAddressCommand = () => (pending === undefined ? false : toLibrary(pending))

  const wrap = (
    parse: (line: Buffer) => Result.Result<AddressCommand.MailCommand | AddressCommand.RcptCommand, SmtpReply.SmtpReply>,
    handler: (command: Buffer, callback: () => void) => void
  ) =>
  (command: Buffer, callback: () => void) => {
    const result = parse(command)
    if (Result.isFailure(result)) {
      connection.emitConnection()
      send(connection, result.failure)
      return callback()
    }
    pending = result.success
    try {
      handler(command, callback)
    } finally {
      pending = undefined
    }
  }

  connection.handler_MAIL = wrap(AddressCommand.parseMail, connection.handler_MAIL.bind(connection))
  connection.handler_RCPT = wrap(
    (line) => AddressCommand.parseRcpt(line, { smtpUtf8: connection.session.envelope.smtpUtf8 === true }),
    connection.handler_RCPT.bind(connection)
  )
}
