/**
 * Delivery by relaying to a smarthost over SMTP, with nodemailer's SMTP client
 * (`SMTPConnection`): one connection per attempt, STARTTLS by policy, optional AUTH, the
 * message streamed from the queue (nodemailer dot-stuffs it).
 *
 * Outcomes are per recipient where the peer answers per recipient: a RCPT refused with 5xx is
 * dead-lettered with the peer's reply, with 4xx retried; the reply to the final dot applies to
 * every accepted recipient. Anything that is not the peer's verdict on the message — refused or
 * dropped connections, timeouts, a failed TLS upgrade, refused credentials — is retried: those
 * are problems of the path or of our configuration, and bouncing mail for them would lose it.
 */
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js"
import { isIP } from "node:net"
import { hostname } from "node:os"
import type { Readable } from "node:stream"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Effect, Layer, Redacted } from "effect"
import * as DA from "./DeliveryAdapter.ts"
import { fillRetry, fromReply } from "./internal/replyOutcome.ts"

export type StartTlsPolicy =
  /** Upgrade when the peer offers STARTTLS; carry on in plain text when it does not. */
  | "opportunistic"
  /** Refuse to send unless the connection is upgraded (the attempt is retried). */
  | "required"
  /** Never upgrade (a loopback or trusted-network peer). */
  | "disabled"

export interface SmtpRelayOptions {
  /** Adapter name in events and logs (default `smtp-relay`). */
  readonly name?: string
  readonly host: string
  /** Default 25 (465 with `implicitTls`). */
  readonly port?: number
  /** TLS from the first byte (SMTPS, port 465) instead of STARTTLS. */
  readonly implicitTls?: boolean
  /** Default `opportunistic`. Ignored with `implicitTls`. */
  readonly startTls?: StartTlsPolicy
  readonly tls?: {
    /**
     * Verify the peer's certificate. Default: true when TLS is required (`implicitTls` or
     * `startTls: "required"`); false for opportunistic STARTTLS, which protects against passive
     * eavesdropping only (RFC 7435), as MTAs do by default.
     */
    readonly rejectUnauthorized?: boolean
    /** Name to verify the certificate against (default: `host`). */
    readonly servername?: string
    /** Extra trusted CA certificates (PEM). */
    readonly ca?: string | Buffer | ReadonlyArray<string | Buffer>
  }
  readonly auth?: { readonly user: string; readonly pass: string | Redacted.Redacted<string> }
  /** Our name in EHLO (default: the host name). */
  readonly heloName?: string
  /** Default 10 s. */
  readonly connectTimeoutMs?: number
  /** Default 30 s. */
  readonly greetingTimeoutMs?: number
  /** Inactivity on the socket at any stage (default 60 s). */
  readonly socketTimeoutMs?: number
}

type SmtpError = SMTPConnection.SMTPError & {
  readonly recipient?: string | undefined
  readonly rejectedErrors?: ReadonlyArray<SMTPConnection.SMTPError & { readonly recipient?: string | undefined }> | undefined
}

type Session =
  | { readonly _tag: "Sent"; readonly info: SMTPConnection.SentMessageInfo }
  | { readonly _tag: "Refused"; readonly error: SmtpError }
  | { readonly _tag: "Failed"; readonly error: SmtpError | Error }

/** Errors that carry the peer's verdict on this message (as opposed to the path to the peer). */
const verdictCodes = new Set(["EENVELOPE", "EMESSAGE"])

/** What an option left out means; the config schema shows these (`check-config`). */
export const defaults = {
  startTls: "opportunistic",
  connectTimeoutMs: 10_000,
  greetingTimeoutMs: 30_000,
  socketTimeoutMs: 60_000
} as const satisfies Pick<SmtpRelayOptions, "startTls" | "connectTimeoutMs" | "greetingTimeoutMs" | "socketTimeoutMs">

export const make = (options: SmtpRelayOptions): DA.DeliveryAdapter["Service"] => {
  const name = options.name ?? "smtp-relay"
  const implicitTls = options.implicitTls === true
  const policy: StartTlsPolicy = options.startTls ?? defaults.startTls
  const port = options.port ?? (implicitTls ? 465 : 25)
  const where = `${options.host}:${port}`
  const verify = options.tls?.rejectUnauthorized ?? (implicitTls || policy === "required")

  const connectionOptions = (): SMTPConnection.Options => ({
    host: options.host,
    port,
    secure: implicitTls,
    ignoreTLS: !implicitTls && policy === "disabled",
    requireTLS: !implicitTls && policy === "required",
    opportunisticTLS: !implicitTls && policy === "opportunistic",
    name: options.heloName ?? hostname(),
    connectionTimeout: options.connectTimeoutMs ?? defaults.connectTimeoutMs,
    greetingTimeout: options.greetingTimeoutMs ?? defaults.greetingTimeoutMs,
    socketTimeout: options.socketTimeoutMs ?? defaults.socketTimeoutMs,
    logger: false,
    tls: {
      rejectUnauthorized: verify,
      // SNI carries names only (RFC 6066): no servername for a peer given by address.
      ...(options.tls?.servername !== undefined || isIP(options.host) === 0 ? { servername: options.tls?.servername ?? options.host } : {}),
      ...(options.tls?.ca !== undefined ? { ca: options.tls.ca as string | Buffer | Array<string | Buffer> } : {})
    }
  })

  /** One SMTP session: connect, (AUTH), MAIL/RCPT/DATA, QUIT. Never fails: the outcome is data. */
  const session = (delivery: DA.Delivery) =>
    Effect.callback<Session>((resume) => {
      const connection = new SMTPConnection(connectionOptions())
      let stream: Readable | undefined
      let settled = false
      const finish = (result: Session) => {
        if (settled) return
        settled = true
        stream?.destroy()
        resume(Effect.succeed(result))
      }
      // Errors may come after the outcome (a late socket reset): the listener stays so they
      // never become an unhandled 'error' event.
      connection.on("error", (error) => finish({ _tag: "Failed", error }))
      connection.on("end", () => finish({ _tag: "Failed", error: new Error("connection closed before the transaction completed") }))
      const send = () => {
        // nodemailer takes a Node stream: the body Stream is read as one, its failure an 'error'.
        stream = NodeStream.toReadableNever(delivery.body)
        connection.send(
          {
            from: delivery.envelope.mailFrom,
            to: delivery.recipients.map((r) => r.rcpt),
            size: delivery.size,
            use8BitMime: true
          },
          stream,
          (error, info) => {
            if (error !== null) {
              finish(verdictCodes.has(error.code ?? "") ? { _tag: "Refused", error } : { _tag: "Failed", error })
            } else {
              finish({ _tag: "Sent", info })
            }
            connection.quit()
          }
        )
      }
      connection.connect((error) => {
        if (error !== undefined && error !== null) return finish({ _tag: "Failed", error })
        if (!implicitTls && policy === "required" && !connection.secure) {
          finish({ _tag: "Failed", error: new Error("STARTTLS is required but the connection is not encrypted") })
          return connection.close()
        }
        if (options.auth === undefined) return send()
        const pass = typeof options.auth.pass === "string" ? options.auth.pass : Redacted.value(options.auth.pass)
        connection.login({ user: options.auth.user, pass }, (loginError) => {
          if (loginError !== undefined && loginError !== null) {
            finish({ _tag: "Failed", error: loginError })
            return connection.close()
          }
          send()
        })
      })
      return Effect.sync(() => {
        settled = true
        stream?.destroy()
        connection.close()
      })
    })

  const outcomes = (delivery: DA.Delivery, result: Session): ReadonlyArray<DA.RecipientOutcome> => {
    const decided = new Map<string, DA.RecipientOutcome>()
    const perRecipient = (errors: ReadonlyArray<SMTPConnection.SMTPError & { readonly recipient?: string | undefined }> | undefined) => {
      for (const e of errors ?? []) {
        if (e.recipient !== undefined) decided.set(e.recipient, fromReply(e.recipient, e.responseCode ?? 0, e.response ?? e.message))
      }
    }
    switch (result._tag) {
      case "Sent": {
        perRecipient(result.info.rejectedErrors)
        for (const rcpt of result.info.accepted) decided.set(rcpt, DA.ok(rcpt, `${where} said: ${result.info.response}`))
        return fillRetry(delivery.recipients, decided, `${where} gave no answer for this recipient`)
      }
      case "Refused": {
        const error = result.error
        perRecipient(error.rejectedErrors)
        if (error.responseCode === 530) {
          // "Authentication required" / "must issue STARTTLS first": our configuration, not the message.
          return fillRetry(delivery.recipients, decided, `${where} said: ${error.response ?? error.message}`)
        }
        if (error.responseCode !== undefined) {
          // MAIL, DATA or the final dot refused: the reply is the verdict for everyone left.
          for (const { rcpt } of delivery.recipients) {
            if (!decided.has(rcpt)) decided.set(rcpt, fromReply(rcpt, error.responseCode, `${where} said: ${error.response ?? error.message}`))
          }
        } else if (error.code === "EMESSAGE" && error.command === "MAIL FROM") {
          // nodemailer refuses locally a message over the SIZE the peer announced.
          for (const { rcpt } of delivery.recipients) decided.set(rcpt, DA.reject(rcpt, `552 5.3.4 ${where}: ${error.message}`))
        }
        return fillRetry(delivery.recipients, decided, `${where}: ${error.message}`)
      }
      case "Failed":
        return fillRetry(delivery.recipients, decided, `relay to ${where} failed: ${result.error.message}`)
    }
  }

  const deliver = Effect.fn("SmtpRelayAdapter.deliver")(function*(delivery: DA.Delivery) {
    const result = yield* session(delivery)
    if (result._tag === "Failed") yield* Effect.logWarning(`relay to ${where} failed: ${result.error.message}`)
    return outcomes(delivery, result)
  }, Effect.annotateLogs({ adapter: name }))

  // A smarthost takes mail for any domain: relayed recipients have somewhere to go.
  return DA.DeliveryAdapter.of({ name, deliver, deliversOffSite: () => true })
}

export const layer = (options: SmtpRelayOptions): Layer.Layer<DA.DeliveryAdapter> => Layer.succeed(DA.DeliveryAdapter, make(options))
