/**
 * ConnectionLimit: at most `max` simultaneous connections per client IP, refused at connect with
 * 421 4.7.0 (the connection is closed; the client retries later).
 *
 * The rule counts the sessions it admitted, by session id, and gives the slot back in `onClose`,
 * so the session must call `Policy.close` for every closed connection. A session refused by a
 * later rule, or one whose connect this rule observed without enforcing, is released all the
 * same because only sessions it counted are released. The listener's own `maxConnectionsPerIp`
 * still applies; this rule is for host apps that want a different or per-network limit
 * (`exempt`).
 */
import { Effect } from "effect"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import type { Rule } from "../Policy.ts"
import * as Verdict from "../Verdict.ts"

export interface ConnectionLimitOptions {
  readonly name?: string
  readonly observe?: boolean
  readonly max: number
  /** Clients not limited (e.g. trusted relays). */
  readonly exempt?: (clientAddress: string) => boolean
}

export interface ConnectionLimit extends Rule {
  /** Connections currently counted for `ip`. */
  readonly connections: (ip: string) => number
}

export const make = (options: ConnectionLimitOptions): ConnectionLimit => {
  const perIp = new Map<string, number>()
  const counted = new Map<string, string>()
  return {
    name: options.name ?? "connection_limit",
    observe: options.observe,
    connections: (ip) => perIp.get(ip) ?? 0,
    onConnect: (ctx) =>
      Effect.sync(() => {
        if (options.exempt?.(ctx.clientAddress) === true) return Verdict.Continue
        const n = perIp.get(ctx.clientAddress) ?? 0
        if (n >= options.max) return Verdict.disconnect(SmtpReply.tooManyConnectionsFromIp)
        perIp.set(ctx.clientAddress, n + 1)
        counted.set(ctx.sessionId, ctx.clientAddress)
        return Verdict.Continue
      }),
    onClose: (ctx) =>
      Effect.sync(() => {
        const ip = counted.get(ctx.sessionId)
        if (ip === undefined) return
        counted.delete(ctx.sessionId)
        const n = (perIp.get(ip) ?? 1) - 1
        if (n <= 0) perIp.delete(ip)
        else perIp.set(ip, n)
      })
  }
}
