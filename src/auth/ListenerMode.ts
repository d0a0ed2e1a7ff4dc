/**
 * The four kinds of listener and what each means for STARTTLS and AUTH, as functions the
 * listener calls when it builds smtp-server's options, at connect / after TLS, and at MAIL.
 *
 * - `mx` (port 25): STARTTLS offered when a certificate is configured; AUTH optional, offered
 *   only under TLS (unless `allowInsecureAuth`) and only when a user store is configured.
 * - `submission` (port 587): STARTTLS required before AUTH; AUTH required before MAIL.
 * - `submissions` (port 465): implicit TLS; AUTH required before MAIL.
 * - `lmtp` (RFC 2033): as `mx` for STARTTLS and AUTH; the LMTP part is the engine's `lmtp` option.
 *
 * smtp-server advertises AUTH in EHLO whether or not the connection is encrypted; its only
 * guard is a 538 when STARTTLS is offered and `allowInsecureAuth` is off. "Not advertised and not
 * accepted before TLS" therefore uses its per-session `session.disabledCommands` (which replaces
 * the server-wide list for that session and survives STARTTLS, since the session object is
 * reused): AUTH is disabled at connect on a clear-text connection and enabled again in
 * `onSecure`. Because smtp-server's own "AUTH required" check only applies while AUTH is
 * enabled, the AUTH-before-MAIL requirement is ours (`mailRequirement`), with proper codes. A
 * disabled command is one the library does not know (500 5.5.2), so the engine asks
 * `unavailableReply` first: AUTH before TLS gets RFC 4954's 538 5.7.11.
 */
import type { SMTPServerOptions, SMTPServerSession } from "smtp-server"
import * as SmtpReply from "../protocol/SmtpReply.ts"
import { encryptionRequired } from "./AuthHandler.ts"

export type ListenerMode = "mx" | "submission" | "submissions" | "lmtp"

export interface AuthSetup {
  readonly mode: ListenerMode
  /** A certificate is configured (STARTTLS possible, or implicit TLS). */
  readonly tlsAvailable: boolean
  /** Mechanisms from AuthHandler.methods; empty when no user store is configured. */
  readonly methods: ReadonlyArray<string>
  /** Offer and accept AUTH without TLS (default false). */
  readonly allowInsecureAuth?: boolean
}

export type SetupError =
  | { readonly _tag: "TlsRequired"; readonly mode: ListenerMode }
  | { readonly _tag: "AuthRequired"; readonly mode: ListenerMode }

export const mustStartTls = SmtpReply.make(530, "5.7.0", "Must issue a STARTTLS command first")
export const authRequired = SmtpReply.make(530, "5.7.0", "Authentication required")
export const authNotAvailable = SmtpReply.make(502, "5.5.1", "AUTH not available")
export const startTlsNotAvailable = SmtpReply.make(502, "5.5.1", "STARTTLS not available")
export const tlsAlreadyActive = SmtpReply.badSequence("TLS already active")

/** Submission modes require TLS and AUTH; `mx` and `lmtp` require neither (AUTH is optional). */
const isSubmission = (mode: ListenerMode): boolean => mode === "submission" || mode === "submissions"

/** A listener that cannot work as configured (submission without a certificate or without users). */
export const validate = (setup: AuthSetup): SetupError | undefined => {
  if (isSubmission(setup.mode) && !setup.tlsAvailable) return { _tag: "TlsRequired", mode: setup.mode }
  if (isSubmission(setup.mode) && setup.methods.length === 0) return { _tag: "AuthRequired", mode: setup.mode }
  return undefined
}

/** The server-wide commands to disable (before per-session adjustments). */
const serverDisabled = (setup: AuthSetup): Array<string> => {
  const off: Array<string> = []
  if (!setup.tlsAvailable || setup.mode === "submissions") off.push("STARTTLS")
  if (setup.methods.length === 0) off.push("AUTH")
  return off
}

/** The smtp-server options this mode sets; merge them into the listener's engine options. */
export const engineOptions = (
  setup: AuthSetup
): Pick<SMTPServerOptions, "secure" | "authOptional" | "authMethods" | "disabledCommands" | "allowInsecureAuth"> => ({
  secure: setup.mode === "submissions",
  // Always optional for the engine: the requirement is enforced by `mailRequirement` so that it
  // also holds while AUTH is disabled for the session (before TLS) and carries our codes.
  authOptional: true,
  authMethods: [...setup.methods],
  disabledCommands: serverDisabled(setup),
  allowInsecureAuth: setup.allowInsecureAuth === true
})

/**
 * The per-session command list to assign to `session.disabledCommands` in `onConnect` and again
 * in `onSecure` (with `secure = true`): AUTH is hidden and refused until the connection is
 * encrypted, unless insecure AUTH is allowed.
 */
export const sessionDisabledCommands = (setup: AuthSetup, secure: boolean): Array<string> => {
  const off = serverDisabled(setup)
  if (!secure && setup.allowInsecureAuth !== true && !off.includes("AUTH")) off.push("AUTH")
  return off
}

/**
 * The reply for AUTH or STARTTLS when this session cannot use it — the engine would otherwise
 * answer `500 5.5.2 command not recognized` for a command it disabled — or `undefined` to let the
 * engine run it: AUTH before TLS is RFC 4954's `538 5.7.11` (also where TLS is not configured:
 * encryption is what AUTH lacks there too), AUTH without users and STARTTLS without a certificate
 * `502 5.5.1`. `greeted`: HELO/EHLO came first (AUTH before it is a sequence error).
 */
export const unavailableReply = (
  setup: AuthSetup,
  name: string,
  session: { readonly secure: boolean; readonly greeted: boolean }
): SmtpReply.SmtpReply | undefined => {
  switch (name) {
    case "AUTH":
      if (setup.methods.length === 0) return authNotAvailable
      if (session.secure || setup.allowInsecureAuth === true) return undefined
      return session.greeted ? encryptionRequired : SmtpReply.badSequence("Error: send HELO/EHLO first")
    case "STARTTLS":
      if (session.secure) return tlsAlreadyActive
      return setup.tlsAvailable && setup.mode !== "submissions" ? undefined : startTlsNotAvailable
    default:
      return undefined
  }
}

const isAuthenticated = (session: Pick<SMTPServerSession, "user">): boolean =>
  session.user !== undefined && session.user !== null && session.user !== false && session.user !== ""

/** What MAIL must be answered with in this mode before any policy runs, or `undefined` to go on. */
export const mailRequirement = (
  setup: AuthSetup,
  session: Pick<SMTPServerSession, "secure" | "user">
): SmtpReply.SmtpReply | undefined => {
  if (!isSubmission(setup.mode)) return undefined
  if (!session.secure) return mustStartTls
  return isAuthenticated(session) ? undefined : authRequired
}
