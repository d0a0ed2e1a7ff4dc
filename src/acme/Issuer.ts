/**
 * One issuance: an order for one name at the CA, its challenge answered by our own responder,
 * and the certificate downloaded — with `acme-client` (RFC 8555, HTTP-01 and TLS-ALPN-01)
 * doing the protocol, which is nothing to hand-write. The account key is made on first use and
 * kept in the store; the certificate's key is new at every issuance (ECDSA P-256 or RSA 2048).
 *
 * acme-client verifies a challenge itself before telling the CA by default, by fetching it
 * over the public DNS; that would bypass the resolver the CA uses and the proxy in front of us,
 * so it is switched off: the CA's own validation is the one that counts.
 */
import { readFileSync } from "node:fs"
import { Agent } from "node:https"
import type * as AcmeClient from "acme-client"
import { Duration, Effect } from "effect"
import * as TrustedCa from "../internal/trustedCa.ts"
import { AcmeError, detailOf } from "./AcmeError.ts"
import { type AcmeOptions, directoryUrl } from "./AcmeOptions.ts"
import * as CertStore from "./CertStore.ts"
import * as Responder from "./Responder.ts"

export interface Issued {
  readonly cert: string
  readonly key: Buffer
}

type Acme = typeof AcmeClient

/**
 * acme-client, loaded at the first order: it pulls in axios, node-forge and an X.509 library,
 * seconds of start-up on a busy machine, which every `incoming` command and every server
 * without `[acme]` would otherwise pay.
 */
const loadAcme: Effect.Effect<Acme> = Effect.promise(() => import("acme-client"))

/** How long one order may take, validation included, before it counts as failed. */
const orderTimeout = Duration.minutes(5)

const networkCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "CERT_HAS_EXPIRED", "DEPTH_ZERO_SELF_SIGNED_CERT", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "SELF_SIGNED_CERT_IN_CHAIN"])

const storage = (domain: string) => (cause: unknown) => new AcmeError({ domain, reason: { _tag: "Storage", detail: detailOf(cause) }, cause })

/**
 * The HTTP client's settings. acme-client talks through one shared axios instance and takes no
 * agent per client, so these are process-wide: one ACME setup per process.
 *
 * - `directoryCaFile` is trusted for the CA's HTTPS.
 * - Its own retries of a failed request (5 by default, waiting 5, 10, ... 25 s: over a minute
 *   for a CA that is down) are cut to 2 short ones: the manager's backoff, minutes to hours,
 *   is the retry that matters, and an order should fail fast enough to be logged as such.
 */
const configureHttp = (acme: Acme, file: string | undefined): Effect.Effect<void, AcmeError> =>
  Effect.try({
    try: () => {
      const defaults = acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number; retryDefaultDelay: number } }
      if (defaults.acmeSettings !== undefined) Object.assign(defaults.acmeSettings, { retryMaxAttempts: 2, retryDefaultDelay: 1 })
      if (file !== undefined) acme.axios.defaults.httpsAgent = new Agent({ ca: TrustedCa.withDefaults(readFileSync(file, "utf8")), keepAlive: false })
    },
    catch: (cause) => new AcmeError({ domain: "*", reason: { _tag: "Ca", detail: `directory_ca ${file}: ${detailOf(cause)}` }, cause })
  })

const accountKey = (acme: Acme, store: CertStore.StorePaths, domain: string): Effect.Effect<Buffer, AcmeError> =>
  Effect.gen(function*() {
    const existing = yield* Effect.try({ try: () => CertStore.readAccountKey(store), catch: storage(domain) })
    if (existing !== undefined) return existing
    const key = yield* Effect.promise(() => acme.crypto.createPrivateEcdsaKey("P-256"))
    yield* Effect.try({
      try: () => {
        CertStore.ensureDir(store)
        CertStore.writeFileAtomic(store.accountKey, key)
      },
      catch: storage(domain)
    })
    return key
  })

const certificateKey = (acme: Acme, options: AcmeOptions) =>
  Effect.promise(() => options.keyType === "rsa-2048" ? acme.crypto.createPrivateRsaKey(2048) : acme.crypto.createPrivateEcdsaKey("P-256"))

/** Issues a certificate for `domain`; the responder is bound for the duration. */
export const issue = Effect.fn("Acme.issue")(function*(options: AcmeOptions, store: CertStore.StorePaths, domain: string) {
  const acme = yield* loadAcme
  yield* configureHttp(acme, options.directoryCaFile)
  const account = yield* accountKey(acme, store, domain)
  const key = yield* certificateKey(acme, options)
  const [, csr] = yield* Effect.promise(() => acme.crypto.createCsr({ commonName: domain, altNames: [domain] }, key))
  const pending = Responder.makePending()
  yield* Responder.serve(domain, options.challenge, { http: options.httpListen, tlsAlpn: options.tlsAlpnListen }, pending)
  // Set once our answer is up: a failure after it is the CA's validation failing, unless the CA was unreachable.
  let answered = false
  const client = new acme.Client({ directoryUrl: directoryUrl(options.directory), accountKey: account, backoffMin: 1000, backoffMax: 10_000 })
  const cert = yield* Effect.tryPromise({
    try: () =>
      client.auto({
        csr,
        ...(options.email !== undefined ? { email: options.email } : {}),
        termsOfServiceAgreed: true,
        challengePriority: [options.challenge],
        skipChallengeVerification: true,
        challengeCreateFn: async (authz, challenge, keyAuthorization) => {
          if (challenge.type === "http-01") pending.http.set(challenge.token, keyAuthorization)
          else {
            const [challengeKey, challengeCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization)
            Responder.addAlpn(pending, authz.identifier.value, { cert: challengeCert, key: challengeKey })
          }
          answered = true
        },
        challengeRemoveFn: async (authz, challenge) => {
          pending.http.delete(challenge.token)
          pending.alpn.delete(authz.identifier.value.toLowerCase())
        }
      }),
    catch: (cause) => {
      const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : ""
      const tag = answered && !networkCodes.has(code) ? "Challenge" as const : "Ca" as const
      return new AcmeError({ domain, reason: { _tag: tag, detail: detailOf(cause) }, cause })
    }
  }).pipe(
    Effect.timeoutOrElse({
      duration: orderTimeout,
      orElse: () =>
        Effect.fail(new AcmeError({ domain, reason: { _tag: "Ca", detail: `no certificate within ${Duration.format(orderTimeout)}` } }))
    })
  )
  return { cert, key } satisfies Issued
}, Effect.scoped)
