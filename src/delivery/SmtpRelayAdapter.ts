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
import { hostname } from "node:os"
import { Effect, Layer, type Redacted } from "effect"
import * as DA from "./DeliveryAdapter.ts"
import * as SmtpPeer from "./internal/smtpPeer.ts"

export type StartTlsPolicy = SmtpPeer.StartTlsPolicy

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

  const peerOptions: SmtpPeer.PeerOptions = {
    host: options.host,
    port,
    implicitTls,
    startTls: policy,
    tls: {
      rejectUnauthorized: verify,
      servername: options.tls?.servername,
      ca: options.tls?.ca
    },
    auth: options.auth,
    heloName: options.heloName ?? hostname(),
    connectTimeoutMs: options.connectTimeoutMs ?? defaults.connectTimeoutMs,
    greetingTimeoutMs: options.greetingTimeoutMs ?? defaults.greetingTimeoutMs,
    socketTimeoutMs: options.socketTimeoutMs ?? defaults.socketTimeoutMs
  }

  /** One connection per attempt: connect, (AUTH), MAIL/RCPT/DATA, QUIT. The outcome is data. */
  const session = (delivery: DA.Delivery): Effect.Effect<SmtpPeer.Transaction> =>
    Effect.acquireUseRelease(
      SmtpPeer.open(peerOptions),
      (peer) =>
        SmtpPeer.send(peer, {
          from: delivery.envelope.mailFrom,
          to: delivery.recipients.map((r) => r.rcpt),
          size: delivery.size
        }, delivery.body),
      SmtpPeer.close
    ).pipe(
      Effect.catch((failure) => Effect.succeed<SmtpPeer.Transaction>({ _tag: "Failed", error: new Error(failure.detail) }))
    )

  const deliver = Effect.fn("SmtpRelayAdapter.deliver")(function*(delivery: DA.Delivery) {
    const result = yield* session(delivery)
    if (result._tag === "Failed") yield* Effect.logWarning(`relay to ${where} failed: ${result.error.message}`)
    return SmtpPeer.outcomes(delivery.recipients, where, result)
  }, Effect.annotateLogs({ adapter: name }))

  // A smarthost takes mail for any domain: relayed recipients have somewhere to go.
  return DA.DeliveryAdapter.of({ name, deliver, deliversOffSite: () => true })
}

export const layer = (options: SmtpRelayOptions): Layer.Layer<DA.DeliveryAdapter> => Layer.succeed(DA.DeliveryAdapter, make(options))
