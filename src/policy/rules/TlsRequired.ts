/**
 * TlsRequired: no transaction over a clear-text connection. Refuses MAIL with 530 5.7.0 until
 * the client has done STARTTLS (RFC 3207 4: "530 Must issue a STARTTLS command first"). The
 * listener must offer STARTTLS for this to be satisfiable; on an implicit-TLS listener it never
 * triggers.
 */
import { Effect } from "effect"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import type { Rule } from "../Policy.ts"
import * as Verdict from "../Verdict.ts"

export interface TlsRequiredOptions {
  readonly name?: string
  readonly observe?: boolean
}

export const mustStartTls = SmtpReply.make(530, "5.7.0", "Must issue a STARTTLS command first")

export const make = (options: TlsRequiredOptions = {}): Rule => ({
  name: options.name ?? "tls_required",
  observe: options.observe,
  onMailFrom: (ctx) => Effect.succeed(ctx.secure ? Verdict.Continue : Verdict.reject(mustStartTls))
})
