/**
 * Delivery straight to each recipient's domain (`type = "mx"`): the recipients of a message are
 * grouped by domain, and each domain gets one SMTP transaction carrying all of its recipients,
 * sent to the domain's MX hosts (`mx/MxResolver.ts`) in preference order — every address of a
 * host in turn, the next host when none answers — over nodemailer's SMTP client
 * (`internal/smtpPeer.ts`, shared with the smarthost relay).
 *
 * Outcomes per recipient: 2xx delivered; 4xx, DNS trouble and connection trouble retried on the
 * route's schedule; 5xx dead-lettered with the peer's reply (which the bounce quotes). A null MX
 * or a domain that does not exist is permanent. A message that needs SMTPUTF8 or 8BITMIME from
 * a peer that lacks it fails for good (5.6.7 / 5.6.3): it is never silently downgraded.
 *
 * Per domain: at most `maxConnectionsPerDomain` transactions at once; connections are kept
 * idle and reused (RSET) up to `maxMessagesPerConnection` (`mx/ConnectionPool.ts`); a domain
 * whose MXes all refuse connections several times in a row is paused (`mx/DomainBreaker.ts`).
 * STARTTLS is opportunistic (no certificate check, RFC 7435) unless `tls: "required"`, which
 * verifies the certificate against the MX host's name and retries when it cannot.
 *
 * With `mtaSts`, a domain's MTA-STS policy (RFC 8461, `mx/MtaSts.ts`) is honoured: in `enforce`
 * mode only the MX hosts it lists are tried, each with STARTTLS and a certificate valid for the
 * host, and a domain none of whose hosts qualifies is retried (never bounced: the policy or the
 * hosts may be fixed meanwhile); in `testing` mode delivery goes on as usual and what enforce
 * would have refused is logged and counted (`incoming_mta_sts_failures_total`).
 */
import { hostname } from "node:os"
import { domainToASCII } from "node:url"
import { Clock, Effect, Layer, Metric, Semaphore, type Scope, Stream } from "effect"
import * as Dns from "../dns/Dns.ts"
import * as TrustedCa from "../internal/trustedCa.ts"
import * as DA from "./DeliveryAdapter.ts"
import * as SmtpPeer from "./internal/smtpPeer.ts"
import * as ConnectionPool from "./mx/ConnectionPool.ts"
import * as DomainBreaker from "./mx/DomainBreaker.ts"
import * as MessageNeeds from "./mx/MessageNeeds.ts"
import * as MtaSts from "./mx/MtaSts.ts"
import * as MtaStsPolicy from "./mx/MtaStsPolicy.ts"
import * as MxResolver from "./mx/MxResolver.ts"

export type MxTlsPolicy =
  /** STARTTLS when offered, without checking the certificate; plain text otherwise (the default). */
  | "opportunistic"
  /** STARTTLS with a certificate valid for the MX host's name, or no delivery (retried). */
  | "required"
  /** Never STARTTLS. */
  | "disabled"

/** A message about to be sent: extra header fields to put in front (a DKIM signature). */
export interface Prepared {
  readonly prefix: Uint8Array
}

export interface MxOptions {
  /** Adapter name in events and logs (default `mx`). */
  readonly name?: string
  /** Port of the MX hosts (default 25; tests point it elsewhere). */
  readonly port?: number
  /** Our name in EHLO (default: the host name). */
  readonly heloName?: string
  /** The local address to connect from. */
  readonly localAddress?: string
  readonly tls?: MxTlsPolicy
  /**
   * Extra trusted CA certificates (PEM), besides Node's default CAs: for `tls: "required"`, for
   * MX hosts under an MTA-STS policy in force, and for MTA-STS policy hosts.
   */
  readonly tlsCa?: string | Buffer | ReadonlyArray<string | Buffer>
  /**
   * Honour MTA-STS policies (RFC 8461) when present; off when absent. `port` is the policy
   * hosts' HTTPS port (443; tests point it elsewhere).
   */
  readonly mtaSts?: { readonly port?: number | undefined; readonly timeoutMs?: number | undefined } | undefined
  readonly connectTimeoutMs?: number
  readonly greetingTimeoutMs?: number
  readonly socketTimeoutMs?: number
  readonly maxConnectionsPerDomain?: number
  readonly maxMessagesPerConnection?: number
  /** How long an unused connection is kept for the next message (0: never reused). */
  readonly idleTimeoutMs?: number
  /** Attempts in a row with no MX taking a connection before the domain is paused. */
  readonly pauseAfterFailures?: number
  readonly pauseMs?: number
  /** Runs before each transaction (a DKIM signer): header fields to prepend. */
  readonly prepare?: (delivery: DA.Delivery) => Effect.Effect<Prepared, DA.DeliveryError>
}

/** What an option left out means; the config schema shows these (`check-config`). */
export const defaults = {
  port: 25,
  tls: "opportunistic",
  connectTimeoutMs: 30_000,
  greetingTimeoutMs: 60_000,
  socketTimeoutMs: 60_000,
  maxConnectionsPerDomain: 5,
  maxMessagesPerConnection: 100,
  idleTimeoutMs: 10_000,
  pauseAfterFailures: 3,
  pauseMs: 5 * 60_000,
  mtaStsPort: MtaSts.defaults.port
} as const

const transactions = (domain: string, result: string) =>
  Metric.counter("incoming_mx_transactions_total", {
    description: "outbound SMTP transactions by destination domain and result (sent, refused, failed, unreachable, skipped)",
    incremental: true,
    attributes: { domain, result }
  })
const connections = (domain: string, kind: "opened" | "reused" | "failed") =>
  Metric.counter("incoming_mx_connections_total", {
    description: "outbound SMTP connections by destination domain: opened, reused from the pool, or failed to open",
    incremental: true,
    attributes: { domain, kind }
  })

const stsFailures = (domain: string, mode: MtaStsPolicy.Mode, failure: "mx_mismatch" | "starttls" | "certificate") =>
  Metric.counter("incoming_mta_sts_failures_total", {
    description: "MTA-STS policy failures by destination domain, policy mode (enforce: refused, testing: reported) and kind",
    incremental: true,
    attributes: { domain, mode, failure }
  })

const domainOf = (rcpt: string) => rcpt.slice(rcpt.lastIndexOf("@") + 1).toLowerCase()

/** The A-label form DNS needs (`bücher.test` → `xn--bcher-kva.test`); the name itself when already ASCII. */
const asciiDomain = (domain: string) => (MessageNeeds.nonAscii(domain) ? domainToASCII(domain) || domain : domain)

type Recipients = ReadonlyArray<{ readonly rcpt: string; readonly attempt: number }>

export const make = (options: MxOptions = {}): Effect.Effect<DA.DeliveryAdapter["Service"], never, Dns.Dns | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "mx"
    const dns = yield* Dns.Dns
    const port = options.port ?? defaults.port
    const tls = options.tls ?? defaults.tls
    const perDomain = options.maxConnectionsPerDomain ?? defaults.maxConnectionsPerDomain
    const pool = yield* ConnectionPool.make({
      maxTransactions: options.maxMessagesPerConnection ?? defaults.maxMessagesPerConnection,
      idleMs: options.idleTimeoutMs ?? defaults.idleTimeoutMs
    })
    const breaker = DomainBreaker.make({
      failures: options.pauseAfterFailures ?? defaults.pauseAfterFailures,
      pauseMs: options.pauseMs ?? defaults.pauseMs
    })
    // Extra CAs add to Node's default set (a `ca` option alone would replace it, and real MXes fail).
    const trustedCa = TrustedCa.withDefaults(options.tlsCa)
    const mtaSts = options.mtaSts === undefined ? undefined : yield* MtaSts.make({
      port: options.mtaSts.port,
      timeoutMs: options.mtaSts.timeoutMs,
      ca: trustedCa,
      localAddress: options.localAddress
    })
    const gates = new Map<string, Semaphore.Semaphore>()
    const gate = (domain: string) => {
      let s = gates.get(domain)
      if (s === undefined) gates.set(domain, s = Semaphore.makeUnsafe(perDomain))
      return s
    }

    /** `enforce`: an MTA-STS policy in force, which requires verified STARTTLS whatever `tls` says. */
    const peerOptions = (address: string, mxName: string, enforce: boolean): SmtpPeer.PeerOptions => ({
      host: address,
      port,
      implicitTls: false,
      startTls: enforce ? "required" : tls,
      tls: {
        rejectUnauthorized: enforce || tls === "required",
        // The certificate must be valid for the MX host's name, not for the address we dialled.
        servername: mxName,
        ca: trustedCa
      },
      heloName: options.heloName ?? hostname(),
      localAddress: options.localAddress,
      connectTimeoutMs: options.connectTimeoutMs ?? defaults.connectTimeoutMs,
      greetingTimeoutMs: options.greetingTimeoutMs ?? defaults.greetingTimeoutMs,
      socketTimeoutMs: options.socketTimeoutMs ?? defaults.socketTimeoutMs
    })

    /**
     * The first MX address that completes the handshake, or every failure on the way. Under an
     * MTA-STS policy, TLS failures are counted (`enforce`: they refused the host) or reported
     * (`testing`: the connection is used all the same).
     */
    const connect = (domain: string, hosts: ReadonlyArray<MxResolver.Host>, sts: MtaSts.Known | undefined) =>
      Effect.gen(function*() {
        const failures: Array<string> = []
        let tlsFailures = 0
        const enforce = sts?.policy.mode === "enforce"
        for (const host of hosts) {
          for (const address of host.addresses) {
            const opened = yield* SmtpPeer.open(peerOptions(address, host.name, enforce)).pipe(Effect.result)
            if (opened._tag === "Success") {
              yield* Metric.update(connections(domain, "opened"), 1)
              const peer = opened.success
              if (sts?.policy.mode === "testing" && (!peer.secure || peer.certificate?.valid !== true)) {
                const failure = peer.secure ? "certificate" : "starttls"
                yield* Metric.update(stsFailures(domain, "testing", failure), 1)
                yield* Effect.logWarning(
                  `MTA-STS (testing) of ${domain}: ${host.name} [${address}] would be refused under enforce: ` +
                    (peer.secure ? `certificate not valid for ${host.name} (${peer.certificate?.error ?? "unverified"})` : "no STARTTLS") +
                    "; delivering anyway"
                )
              }
              return { peer, host: host.name, failures, tlsFailures }
            }
            yield* Metric.update(connections(domain, "failed"), 1)
            if (enforce && opened.failure.stage === "tls") {
              tlsFailures++
              yield* Metric.update(stsFailures(domain, "enforce", /STARTTLS/.test(opened.failure.detail) ? "starttls" : "certificate"), 1)
            }
            failures.push(`${host.name} [${address}]: ${opened.failure.detail}`)
            yield* Effect.logDebug(`MX ${host.name} [${address}] of ${domain}: ${opened.failure.stage}: ${opened.failure.detail}`)
          }
        }
        return { peer: undefined, host: undefined, failures, tlsFailures }
      })

    /**
     * The MX hosts an MTA-STS policy lets us try (all of them but under `enforce`), after
     * reporting the ones it does not list.
     */
    const allowedHosts = (domain: string, hosts: ReadonlyArray<MxResolver.Host>, sts: MtaSts.Known) =>
      Effect.gen(function*() {
        const policy = sts.policy
        const unlisted = hosts.filter((h) => !MtaStsPolicy.allows(policy, h.name))
        if (unlisted.length === 0) return hosts
        const mode = policy.mode === "enforce" ? "enforce" : "testing"
        yield* Metric.update(stsFailures(domain, mode, "mx_mismatch"), unlisted.length)
        yield* Effect.logWarning(
          `MTA-STS (${mode}, id ${sts.id}) of ${domain} does not list MX ${unlisted.map((h) => h.name).join(", ")} ` +
            `(policy mx: ${policy.mx.join(", ")}); ${mode === "enforce" ? "not tried" : "delivering anyway"}`
        )
        return mode === "enforce" ? hosts.filter((h) => MtaStsPolicy.allows(policy, h.name)) : hosts
      })

    /** A refusal of the whole group for a need the peer cannot meet, if there is one. */
    const unmetNeed = (
      peer: SmtpPeer.Peer,
      delivery: DA.Delivery,
      recipients: Recipients,
      needs: Effect.Effect<MessageNeeds.Needs, DA.DeliveryError>
    ) =>
      Effect.gen(function*() {
        const utf8 = peer.extensions.has("SMTPUTF8")
        const eight = peer.extensions.has("8BITMIME")
        if (utf8 && eight) return undefined
        if (!utf8 && [delivery.envelope.mailFrom, ...recipients.map((r) => r.rcpt)].some(MessageNeeds.nonAscii)) {
          return `550 5.6.7 ${peer.where} does not support SMTPUTF8, which the addresses need (RFC 6531)`
        }
        const found = yield* needs
        if (!utf8 && delivery.envelope.smtpUtf8 === true && found.utf8Header) {
          return `550 5.6.7 ${peer.where} does not support SMTPUTF8, which the message's UTF-8 header needs (RFC 6532)`
        }
        if (!eight && (found.eightBitBody || found.utf8Header)) {
          return `554 5.6.3 ${peer.where} does not support 8BITMIME and the message has 8-bit content; it is not converted`
        }
        return undefined
      })

    /** One transaction for `recipients`, all at `domain`, on a pooled or new connection. */
    const toDomain = (
      delivery: DA.Delivery,
      domain: string,
      recipients: Recipients,
      body: Stream.Stream<Uint8Array, DA.DeliveryError>,
      needs: Effect.Effect<MessageNeeds.Needs, DA.DeliveryError>
    ): Effect.Effect<ReadonlyArray<DA.RecipientOutcome>, DA.DeliveryError> =>
      Effect.gen(function*() {
        const all = (f: (rcpt: string) => DA.RecipientOutcome) => recipients.map((r) => f(r.rcpt))
        const paused = yield* breaker.pausedUntil(domain)
        if (paused !== undefined) {
          yield* Metric.update(transactions(domain, "skipped"), 1)
          return all((rcpt) => DA.retry(rcpt, `451 4.4.1 delivery to ${domain} is paused: its MX hosts refused connections`, paused))
        }
        const destination = yield* MxResolver.resolve(asciiDomain(domain)).pipe(Effect.provideService(Dns.Dns, dns))
        switch (destination._tag) {
          case "NullMx":
            return all((rcpt) => DA.reject(rcpt, `556 5.1.10 ${domain} accepts no mail (null MX, RFC 7505)`))
          case "NoSuchDomain":
            return all((rcpt) => DA.reject(rcpt, `550 5.1.2 ${destination.detail}`))
          case "Trouble":
            return all((rcpt) => DA.retry(rcpt, `451 4.4.3 ${destination.detail}`))
          case "Hosts":
            break
        }
        const found = mtaSts === undefined ? undefined : yield* mtaSts.policyFor(asciiDomain(domain))
        const sts = found?.policy.mode === "none" ? undefined : found
        const hosts = sts === undefined ? destination.hosts : yield* allowedHosts(domain, destination.hosts, sts)
        if (hosts.length === 0) {
          // Retried, not bounced: the policy or the MX records may be corrected meanwhile (§5).
          yield* Metric.update(transactions(domain, "skipped"), 1)
          return all((rcpt) =>
            DA.retry(rcpt, `451 4.7.5 no MX host of ${domain} is allowed by its MTA-STS policy (enforce, mx: ${sts!.policy.mx.join(", ")})`)
          )
        }
        // Connections opened under an enforced policy are kept apart: they were verified for it.
        const poolKey = sts?.policy.mode === "enforce" ? `${domain} mta-sts:${sts.id}` : domain
        return yield* gate(domain).withPermits(1)(Effect.gen(function*() {
          let peer = yield* pool.take(poolKey)
          if (peer !== undefined) yield* Metric.update(connections(domain, "reused"), 1)
          let failures: ReadonlyArray<string> = []
          for (let round = 0; round < 2; round++) {
            if (peer === undefined) {
              const connected = yield* connect(domain, hosts, sts)
              failures = connected.failures
              peer = connected.peer
              if (peer === undefined) {
                yield* Metric.update(transactions(domain, "unreachable"), 1)
                const until = yield* breaker.failed(domain)
                if (until !== undefined) yield* Effect.logWarning(`no MX of ${domain} took a connection; pausing the domain until ${new Date(until).toISOString()}`)
                const reply = connected.tlsFailures > 0
                  ? `451 4.7.5 no MX host of ${domain} offered STARTTLS with a valid certificate, which its MTA-STS policy requires (enforce)`
                  : `451 4.4.1 no MX host of ${domain} took a connection`
                return all((rcpt) => DA.retry(rcpt, `${reply}: ${failures.join("; ")}`))
              }
              breaker.succeeded(domain)
            }
            const refusal = yield* unmetNeed(peer, delivery, recipients, needs)
            if (refusal !== undefined) {
              yield* pool.give(poolKey, peer, true)
              yield* Metric.update(transactions(domain, "refused"), 1)
              return all((rcpt) => DA.reject(rcpt, refusal))
            }
            const result = yield* SmtpPeer.send(peer, {
              from: delivery.envelope.mailFrom,
              to: recipients.map((r) => r.rcpt),
              size: delivery.size,
              priority: delivery.envelope.priority
            }, body)
            yield* pool.give(poolKey, peer, SmtpPeer.reusable(peer, result))
            // A pooled connection that had gone stale carried nothing: once more on a new one.
            if (result._tag === "Failed" && result.stale === true && round === 0) {
              peer = undefined
              continue
            }
            yield* Metric.update(transactions(domain, result._tag === "Sent" ? "sent" : result._tag === "Refused" ? "refused" : "failed"), 1)
            if (result._tag === "Failed") yield* Effect.logWarning(`delivery to ${domain} via ${peer.where} failed: ${result.error.message}`)
            const remote = peer.name
            return SmtpPeer.outcomes(recipients, peer.where, result).map((o) => (o._tag === "Ok" ? o : { ...o, remote }))
          }
          return all((rcpt) => DA.retry(rcpt, `451 4.4.2 connections to ${domain} kept closing`))
        }))
      }).pipe(Effect.annotateLogs({ domain }))

    const deliver = Effect.fn("MxAdapter.deliver")(function*(delivery: DA.Delivery) {
      const started = yield* Clock.currentTimeMillis
      const prefix = options.prepare === undefined ? undefined : (yield* options.prepare(delivery)).prefix
      const stored = delivery.body.pipe(
        Stream.mapError((e) => new DA.DeliveryError({ reason: { _tag: "Failed", detail: e.message }, cause: e }))
      )
      const body = prefix === undefined ? stored : Stream.concat(Stream.succeed(prefix), stored)
      // Read only when a peer lacks SMTPUTF8 or 8BITMIME, and then once for all domains.
      const needs = yield* Effect.cached(MessageNeeds.scan(stored))
      const groups = new Map<string, Array<{ readonly rcpt: string; readonly attempt: number }>>()
      for (const r of delivery.recipients) {
        const d = domainOf(r.rcpt)
        const list = groups.get(d) ?? []
        list.push(r)
        groups.set(d, list)
      }
      const outcomes = yield* Effect.forEach([...groups], ([domain, recipients]) => toDomain(delivery, domain, recipients, body, needs), {
        concurrency: "unbounded"
      })
      yield* Effect.logDebug(`delivered ${delivery.id} to ${groups.size} domain(s) in ${(yield* Clock.currentTimeMillis) - started} ms`)
      return outcomes.flat()
    }, Effect.annotateLogs({ adapter: name }))

    return DA.DeliveryAdapter.of({ name, deliver, deliversOffSite: () => true })
  })

export const layer = (options: MxOptions = {}): Layer.Layer<DA.DeliveryAdapter, never, Dns.Dns> => Layer.effect(DA.DeliveryAdapter, make(options))
