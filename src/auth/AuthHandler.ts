/**
 * What happens when a client sends AUTH: the Effect behind smtp-server's `onAuth`.
 *
 * smtp-server parses the SASL exchange (PLAIN, LOGIN, CRAM-MD5), answers `*` cancels with 501,
 * refuses a second AUTH with 503 and sends 235 2.7.0 on success; it has no failure limits, no
 * transaction check and no TLS check when STARTTLS is not offered. This module adds them:
 *
 * - AUTH during a mail transaction → 503 5.5.1 (RFC 4954 4).
 * - AUTH over clear text, unless allowed → 538 5.7.11 (defence in depth: the listener should not
 *   even advertise AUTH before TLS, see ListenerMode.ts).
 * - Failed attempts are counted per connection and per client IP (sliding window). Each failure
 *   is answered after a delay of `failureDelay × failures on this connection` (Effect.sleep), so
 *   guessing is slow; past `maxFailuresPerConnection`, or when the IP has used up
 *   `maxFailuresPerIp` in the window, the answer is 421 4.7.0 and smtp-server closes the
 *   connection. A blocked IP is refused before its credentials are even checked.
 * - A wrong password → 535 5.7.8; a store that cannot answer → 454 4.7.0 (not counted: it is
 *   our failure, not the client's); an unsupported mechanism → 504 5.5.4.
 *
 * PLAIN with an authorization identity different from the authentication identity (acting as
 * someone else) is refused like a wrong password: there is no proxy authorization.
 */
import { Cause, Clock, Data, Duration, Effect, Exit, Metric, Option } from "effect"
import type { SMTPServerAuthentication, SMTPServerSession } from "smtp-server"
import * as SlidingWindow from "../policy/internal/SlidingWindow.ts"
import * as SmtpReply from "../protocol/SmtpReply.ts"
import { temporaryAuthFailure, type UserStore } from "./UserStore.ts"

export const authSucceeded = SmtpReply.make(235, "2.7.0", "Authentication successful")
export const invalidCredentials = SmtpReply.make(535, "5.7.8", "Authentication credentials invalid")
export const tooManyFailures = SmtpReply.make(421, "4.7.0", "Too many authentication failures, closing connection")
export const inTransaction = SmtpReply.make(503, "5.5.1", "AUTH not permitted during a mail transaction")
export const alreadyAuthenticated = SmtpReply.make(503, "5.5.1", "Already authenticated")
export const encryptionRequired = SmtpReply.make(538, "5.7.11", "Encryption required for requested authentication mechanism")
export const mechanismUnsupported = SmtpReply.make(504, "5.5.4", "Unrecognized authentication type")

export type AuthRejectReason =
  | { readonly _tag: "InvalidCredentials"; readonly user: string }
  | { readonly _tag: "TooManyFailures"; readonly scope: "connection" | "ip" }
  | { readonly _tag: "InTransaction" }
  | { readonly _tag: "AlreadyAuthenticated" }
  | { readonly _tag: "EncryptionRequired" }
  | { readonly _tag: "MechanismUnsupported"; readonly method: string }
  | { readonly _tag: "StoreUnavailable"; readonly detail: string }

export class AuthRejected extends Data.TaggedError("AuthRejected")<{ readonly reason: AuthRejectReason }> {
  get reply(): SmtpReply.SmtpReply {
    switch (this.reason._tag) {
      case "InvalidCredentials":
        return invalidCredentials
      case "TooManyFailures":
        return tooManyFailures
      case "InTransaction":
        return inTransaction
      case "AlreadyAuthenticated":
        return alreadyAuthenticated
      case "EncryptionRequired":
        return encryptionRequired
      case "MechanismUnsupported":
        return mechanismUnsupported
      case "StoreUnavailable":
        return temporaryAuthFailure
    }
  }
  override get message(): string {
    return `AUTH refused (${this.reason._tag}): ${SmtpReply.format(this.reply)}`
  }
}

export interface AuthHandlerOptions {
  readonly store: UserStore["Service"]
  /** Failures on one connection before 421 (default 3). */
  readonly maxFailuresPerConnection?: number
  /** Failures from one IP within `ipWindow` before it is refused outright (default 10). */
  readonly maxFailuresPerIp?: number
  /** Default 15 minutes. */
  readonly ipWindow?: Duration.Input
  /** Delay per failure on the connection: the n-th failure waits n × this (default 1 s). */
  readonly failureDelay?: Duration.Input
  /** Accept AUTH on a connection without TLS (default false: only for tests and loopback setups). */
  readonly allowInsecure?: boolean
  /** IPs tracked for failures before the least recently used is forgotten (default 100 000; fails open). */
  readonly maxEntries?: number
}

export interface AuthHandler {
  /** Mechanisms to advertise: PLAIN and LOGIN, plus CRAM-MD5 when the store has `cramSecret`. */
  readonly methods: ReadonlyArray<string>
  /**
   * The `onAuth` Effect: succeeds with smtp-server's response (`{ user }`, the user name as a
   * string — the session reads `session.user` as one) or fails with `AuthRejected`, whose
   * `reply` goes back through `callback(SmtpReply.toEngineError(reply))`.
   */
  readonly onAuth: (auth: SMTPServerAuthentication, session: SMTPServerSession) => Effect.Effect<{ readonly user: string }, AuthRejected>
  /** Failures recorded for `ip` in the current window. */
  readonly ipFailures: (ip: string) => Effect.Effect<number>
}

export const attemptsTotal = Metric.counter("incoming_auth_attempts_total", {
  description: "AUTH attempts by mechanism and result (success, invalid, too_many_failures, refused, store_unavailable)",
  incremental: true
})

const resultOf = (exit: Exit.Exit<unknown, AuthRejected>): string => {
  const fail = Exit.isFailure(exit) ? exit.cause.reasons.find(Cause.isFailReason) : undefined
  switch (fail?.error.reason._tag) {
    case "InvalidCredentials":
      return "invalid"
    case "TooManyFailures":
      return "too_many_failures"
    case "StoreUnavailable":
      return "store_unavailable"
    case undefined:
      return "interrupted"
    default:
      return "refused"
  }
}

export const make = (options: AuthHandlerOptions): AuthHandler => {
  const maxPerConnection = options.maxFailuresPerConnection ?? 3
  const maxPerIp = options.maxFailuresPerIp ?? 10
  const delay = Duration.fromInputUnsafe(options.failureDelay ?? Duration.seconds(1))
  const perIp = SlidingWindow.make({
    limit: maxPerIp,
    windowMs: Duration.toMillis(Duration.fromInputUnsafe(options.ipWindow ?? Duration.minutes(15))),
    maxEntries: options.maxEntries ?? 100_000
  })
  // Keyed by smtp-server's session object, which lives exactly as long as the connection (it
  // survives STARTTLS): nothing to release on close.
  const perConnection = new WeakMap<SMTPServerSession, number>()
  const store = options.store
  const methods = store.cramSecret === undefined ? ["PLAIN", "LOGIN"] : ["PLAIN", "LOGIN", "CRAM-MD5"]
  const reject = (reason: AuthRejectReason) => Effect.fail(new AuthRejected({ reason }))

  const check = (auth: SMTPServerAuthentication): Effect.Effect<boolean, AuthRejected> => {
    const user = auth.username ?? ""
    const unavailable = (e: { readonly message: string }) =>
      new AuthRejected({ reason: { _tag: "StoreUnavailable", detail: e.message } })
    switch (auth.method) {
      case "PLAIN":
        if (auth.authzid !== undefined && auth.authzid !== "" && auth.authcid !== "" && auth.authzid !== auth.authcid) {
          return Effect.succeed(false)
        }
        return store.verify(user, auth.password ?? "").pipe(Effect.mapError(unavailable))
      case "LOGIN":
        return store.verify(user, auth.password ?? "").pipe(Effect.mapError(unavailable))
      case "CRAM-MD5": {
        const secret = store.cramSecret
        if (secret === undefined) return reject({ _tag: "MechanismUnsupported", method: auth.method })
        return secret(user).pipe(
          Effect.mapError(unavailable),
          Effect.map(Option.match({ onNone: () => false, onSome: (s) => auth.validatePassword(s) }))
        )
      }
      default:
        return reject({ _tag: "MechanismUnsupported", method: auth.method })
    }
  }

  const onAuth = (auth: SMTPServerAuthentication, session: SMTPServerSession) =>
    attempt(auth, session).pipe(
      Effect.onExit((exit) =>
        Metric.update(
          attemptsTotal.pipe(Metric.withAttributes({
            mechanism: auth.method,
            result: Exit.isSuccess(exit) ? "success" : resultOf(exit)
          })),
          1
        )
      )
    )

  const attempt = (auth: SMTPServerAuthentication, session: SMTPServerSession) =>
    Effect.gen(function*() {
      if (session.envelope.mailFrom !== false) return yield* reject({ _tag: "InTransaction" })
      if (session.user !== undefined && session.user !== null && session.user !== false && session.user !== "") {
        return yield* reject({ _tag: "AlreadyAuthenticated" })
      }
      if (!session.secure && options.allowInsecure !== true) return yield* reject({ _tag: "EncryptionRequired" })
      const ip = session.remoteAddress
      if (perIp.count(ip, yield* Clock.currentTimeMillis) >= maxPerIp) {
        return yield* reject({ _tag: "TooManyFailures", scope: "ip" })
      }
      const ok = yield* check(auth)
      const user = auth.username ?? ""
      if (ok && user !== "") return { user }

      const failures = (perConnection.get(session) ?? 0) + 1
      perConnection.set(session, failures)
      const ipCount = perIp.record(ip, yield* Clock.currentTimeMillis)
      yield* Effect.logInfo("authentication failed").pipe(
        Effect.annotateLogs({ user, method: auth.method, failures, ipFailures: ipCount })
      )
      yield* Effect.sleep(Duration.times(delay, failures))
      if (failures >= maxPerConnection) return yield* reject({ _tag: "TooManyFailures", scope: "connection" })
      if (ipCount >= maxPerIp) return yield* reject({ _tag: "TooManyFailures", scope: "ip" })
      return yield* reject({ _tag: "InvalidCredentials", user })
    })

  return {
    methods,
    onAuth,
    ipFailures: (ip) => Effect.map(Clock.currentTimeMillis, (now) => perIp.count(ip, now))
  }
}
