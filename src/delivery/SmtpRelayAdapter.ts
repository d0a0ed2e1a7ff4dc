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
import * as TrustedCa from "../internal/trustedCa.ts"
import type * as Dsn from "../protocol/Dsn.ts"
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
    /** Extra trusted CA certificates (PEM), trusted besides Node's default set (not instead of it). */
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
      // Added to Node's default CAs, not instead of them (see `trustedCa.ts`).
      ca: TrustedCa.withDefaults(options.tls?.ca)
    },
    auth: options.auth,
    heloName: options.heloName ?? hostname(),
    connectTimeoutMs: options.connectTimeoutMs ?? defaults.connectTimeoutMs,
    greetingTimeoutMs: options.greetingTimeoutMs ?? defaults.greetingTimeoutMs,
    socketTimeoutMs: options.socketTimeoutMs ?? defaults.socketTimeoutMs
  }

  /**
   * One connection per attempt: connect, (AUTH), then a MAIL/RCPT/DATA transaction per group of
   * recipients with the same DSN parameters (one group without any: nodemailer sends one
   * NOTIFY/ORCPT for a whole transaction, so recipients that differ go in transactions of their
   * own), QUIT. The outcomes are data.
   */
  const session = (delivery: DA.Delivery): Effect.Effect<ReadonlyArray<DA.RecipientOutcome>> =>
    Effect.acquireUseRelease(
      SmtpPeer.open(peerOptions),
      (peer) =>
        Effect.forEach(byDsn(delivery), (group) =>
          SmtpPeer.send(peer, {
            from: delivery.envelope.mailFrom,
            to: group.recipients.map((r) => r.rcpt),
            size: delivery.size,
            ...(group.dsn === undefined ? {} : { dsn: group.dsn })
          }, delivery.body).pipe(
            Effect.tap((result) => result._tag === "Failed" ? Effect.logWarning(`relay to ${where} failed: ${result.error.message}`) : Effect.void),
            Effect.map((result) => SmtpPeer.outcomes(group.recipients, where, result))
          )).pipe(Effect.map((all) => all.flat())),
      SmtpPeer.close
    ).pipe(
      Effect.catch((failure) =>
        Effect.as(
          Effect.logWarning(`relay to ${where} failed: ${failure.detail}`),
          SmtpPeer.outcomes(delivery.recipients, where, { _tag: "Failed", error: new Error(failure.detail) })
        )
      )
    )

  const deliver = Effect.fn("SmtpRelayAdapter.deliver")(function*(delivery: DA.Delivery) {
    return yield* session(delivery)
  }, Effect.annotateLogs({ adapter: name }))

  // A smarthost takes mail for any domain: relayed recipients have somewhere to go.
  return DA.DeliveryAdapter.of({ name, deliver, deliversOffSite: () => true })
}

/** The delivery's recipients grouped by their DSN parameters, each group with MAIL's RET/ENVID added. */
const byDsn = (delivery: DA.Delivery) => {
  const groups = new Map<string, { dsn: (Dsn.MailDsn & Dsn.RecipientDsn) | undefined; recipients: Array<DA.Delivery["recipients"][number]> }>()
  for (const r of delivery.recipients) {
    const own = delivery.envelope.recipientDsn?.[r.rcpt]
    const dsn = delivery.envelope.dsn === undefined && own === undefined ? undefined : { ...delivery.envelope.dsn, ...own }
    const key = JSON.stringify(dsn ?? null)
    const group = groups.get(key) ?? { dsn, recipients: [] }
    group.recipients.push(r)
    groups.set(key, group)
  }
  return [...groups.values()]
}

export const layer = (options: SmtpRelayOptions): Layer.Layer<DA.DeliveryAdapter> => Layer.succeed(DA.DeliveryAdapter, make(options))
