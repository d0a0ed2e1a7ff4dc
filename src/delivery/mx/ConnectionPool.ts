/**
 * Idle SMTP connections kept per destination domain, so the next message to the same domain
 * skips the TCP, greeting, EHLO and TLS handshakes (RFC 5321 §3.3 allows many transactions per
 * session; RSET separates them). A connection is reused up to `maxTransactions` times and idles
 * at most `idleMs`; a sweeper fiber in the pool's scope closes the stale ones, and closing the
 * scope closes them all (QUIT).
 */
import { Clock, Effect, Schedule, type Scope } from "effect"
import * as SmtpPeer from "../internal/smtpPeer.ts"

export interface PoolOptions {
  readonly maxTransactions: number
  readonly idleMs: number
}

export interface ConnectionPool {
  /** An idle, still-open connection to `domain` with transactions left, if there is one. */
  readonly take: (domain: string) => Effect.Effect<SmtpPeer.Peer | undefined>
  /** Gives a connection back after a transaction: kept when it can carry another, else closed. */
  readonly give: (domain: string, peer: SmtpPeer.Peer, reusable: boolean) => Effect.Effect<void>
  /** Idle connections now (all domains), for tests and metrics. */
  readonly idle: () => number
}

interface Idle {
  readonly peer: SmtpPeer.Peer
  readonly since: number
}

export const make = (options: PoolOptions): Effect.Effect<ConnectionPool, never, Scope.Scope> =>
  Effect.gen(function*() {
    const idle = new Map<string, Array<Idle>>()
    const fresh = (entry: Idle, now: number) =>
      !entry.peer.closed() && entry.peer.transactions < options.maxTransactions && now - entry.since < options.idleMs

    const sweep = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const [domain, list] of idle) {
        const keep = list.filter((e) => fresh(e, now))
        for (const e of list) if (!keep.includes(e)) yield* SmtpPeer.close(e.peer)
        if (keep.length === 0) idle.delete(domain)
        else idle.set(domain, keep)
      }
    })
    yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(Math.max(250, Math.min(options.idleMs, 5_000)))))
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        for (const list of idle.values()) for (const e of list) yield* SmtpPeer.close(e.peer)
        idle.clear()
      })
    )

    const take = (domain: string) =>
      Effect.gen(function*() {
        const list = idle.get(domain)
        if (list === undefined) return undefined
        const now = yield* Clock.currentTimeMillis
        while (list.length > 0) {
          const entry = list.pop()!
          if (fresh(entry, now)) return entry.peer
          yield* SmtpPeer.close(entry.peer)
        }
        idle.delete(domain)
        return undefined
      })

    const give = (domain: string, peer: SmtpPeer.Peer, reusable: boolean) =>
      Effect.gen(function*() {
        if (!reusable || options.maxTransactions <= peer.transactions || options.idleMs <= 0) return yield* SmtpPeer.close(peer)
        const now = yield* Clock.currentTimeMillis
        const list = idle.get(domain) ?? []
        list.push({ peer, since: now })
        idle.set(domain, list)
      })

    return { take, give, idle: () => [...idle.values()].reduce((n, l) => n + l.length, 0) }
  })
