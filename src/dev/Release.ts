/**
 * "Release": the one way a caught message leaves the dev inbox. A developer forwards it,
 * unchanged, to a configured SMTP server (a staging relay, a real mailbox provider) for the
 * recipients they name — and only to recipients on the allow-list, so a dev inbox can never be
 * turned into a relay for the addresses a test run happened to use.
 *
 * Sending goes through the SMTP relay delivery adapter (nodemailer's SMTP client, STARTTLS by
 * policy, optional AUTH), with the original MAIL FROM and the stored bytes as they are.
 */
import { Data, Effect, Stream } from "effect"
import * as SmtpRelayAdapter from "../delivery/SmtpRelayAdapter.ts"
import * as Address from "../protocol/Address.ts"
import type * as Message from "./Message.ts"

export interface ReleaseOptions {
  /** Where released mail goes. */
  readonly smtp: SmtpRelayAdapter.SmtpRelayOptions
  /**
   * Recipients a message may be released to: `alice@example.com`, `*@example.com`
   * (any mailbox of a domain) or `*` (anyone). Case-insensitive.
   */
  readonly allow: ReadonlyArray<string>
  /** How long one release may take (default 60 s). */
  readonly timeoutMs?: number | undefined
}

export type ReleaseErrorReason =
  | { readonly _tag: "NotConfigured" }
  | { readonly _tag: "NoRecipients" }
  | { readonly _tag: "BadAddress"; readonly address: string }
  | { readonly _tag: "NotAllowed"; readonly recipients: ReadonlyArray<string> }
  /** The server refused some or all recipients, or could not be reached. */
  | { readonly _tag: "Failed"; readonly detail: string }

export class ReleaseError extends Data.TaggedError("ReleaseError")<{ readonly reason: ReleaseErrorReason }> {
  override get message(): string {
    const r = this.reason
    switch (r._tag) {
      case "NotConfigured":
        return "release is not configured (start incoming dev with --release-smtp and --release-allow)"
      case "NoRecipients":
        return "name at least one recipient"
      case "BadAddress":
        return `"${r.address}" is not an email address`
      case "NotAllowed":
        return `not on the release allow-list: ${r.recipients.join(", ")}`
      case "Failed":
        return r.detail
    }
  }
}

export interface Released {
  readonly recipients: ReadonlyArray<string>
  /** What the server answered for each. */
  readonly replies: ReadonlyArray<string>
}

export interface Releaser {
  readonly enabled: boolean
  /** The allow-list as configured (shown on the page). */
  readonly allow: ReadonlyArray<string>
  readonly release: (
    message: { readonly summary: Message.MessageSummary; readonly raw: Uint8Array },
    to: ReadonlyArray<string>
  ) => Effect.Effect<Released, ReleaseError>
}

/** Whether `address` (normalised) is covered by one of the patterns. */
export const allowed = (patterns: ReadonlyArray<string>, address: string): boolean => {
  const a = address.toLowerCase()
  return patterns.some((p) => {
    const pattern = p.trim().toLowerCase()
    if (pattern === "*") return true
    if (pattern.startsWith("*@")) return a.endsWith(pattern.slice(1))
    return a === pattern
  })
}

const fail = (reason: ReleaseErrorReason) => Effect.fail(new ReleaseError({ reason }))

export const make = (options: ReleaseOptions | undefined): Releaser => {
  if (options === undefined) {
    return { enabled: false, allow: [], release: () => fail({ _tag: "NotConfigured" }) }
  }
  const adapter = SmtpRelayAdapter.make({ name: "dev-release", ...options.smtp })
  const timeoutMs = options.timeoutMs ?? 60_000
  const release: Releaser["release"] = (message, to) =>
    Effect.gen(function*() {
      if (to.length === 0) return yield* fail({ _tag: "NoRecipients" })
      const recipients: Array<string> = []
      for (const input of to) {
        const parsed = Address.parse(input.trim())
        if (parsed === undefined || parsed.domain === "") return yield* fail({ _tag: "BadAddress", address: input })
        recipients.push(Address.toString(parsed))
      }
      const refused = recipients.filter((r) => !allowed(options.allow, r))
      if (refused.length > 0) return yield* fail({ _tag: "NotAllowed", recipients: refused })
      const e = message.summary.envelope
      const outcomes = yield* adapter.deliver({
        id: message.summary.id,
        envelope: {
          mailFrom: e.from,
          rcptTo: recipients,
          helo: e.helo,
          clientAddress: e.clientAddress,
          secure: e.secure,
          authenticatedUser: e.authenticatedUser ?? undefined,
          listener: "dev"
        },
        receivedAt: Date.parse(message.summary.receivedAt),
        recipients: recipients.map((rcpt) => ({ rcpt, attempt: 1 })),
        size: message.raw.byteLength,
        body: Stream.make(message.raw)
      }).pipe(
        Effect.timeoutOrElse({
          duration: timeoutMs,
          orElse: () => fail({ _tag: "Failed", detail: `the release did not complete within ${timeoutMs} ms` })
        }),
        Effect.mapError((e): ReleaseError => e instanceof ReleaseError ? e : new ReleaseError({ reason: { _tag: "Failed", detail: e.message } }))
      )
      const notOk = outcomes.flatMap((o) => (o._tag === "Ok" ? [] : [`${o.rcpt}: ${o.reason}`]))
      if (notOk.length > 0) return yield* fail({ _tag: "Failed", detail: notOk.join("; ") })
      yield* Effect.logInfo(`dev inbox: released ${message.summary.id} to ${recipients.join(", ")}`)
      return { recipients, replies: outcomes.map((o) => (o._tag === "Ok" ? o.reply ?? "sent" : "")) }
    })
  return { enabled: true, allow: options.allow, release }
}

