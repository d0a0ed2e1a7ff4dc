/**
 * Vitest setup (vitest.config.ts `setupFiles`): no test may reach the real DNS.
 *
 * Every query method of node:dns (callback and promise APIs, `Resolver` instances and the
 * module-level functions) is wrapped: a query is let through only when every server of its
 * resolver is a loopback address on a port other than 53 — the dnsmasq a test started itself.
 * Anything else (the system's resolvers, a public server) throws, and is recorded so the test
 * fails even when the caller swallowed the error (mailauth turns a throwing resolver into
 * `temperror`). Tests give their code a zone (`ZoneDns`) or a local dnsmasq instead.
 */
import dns from "node:dns"
import { syncBuiltinESMExports } from "node:module"
import { afterEach } from "vitest"

const methods = [
  "resolve",
  "resolve4",
  "resolve6",
  "resolveAny",
  "resolveCaa",
  "resolveCname",
  "resolveMx",
  "resolveNaptr",
  "resolveNs",
  "resolvePtr",
  "resolveSoa",
  "resolveSrv",
  "resolveTxt",
  "reverse"
] as const

const violations: Array<string> = []

/** `127.0.0.1:5353`, `[::1]:5353`: loopback with a port of its own (a test's dnsmasq). */
export const isTestServer = (server: string): boolean => {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(server.includes("]") || server.split(":").length === 2 ? server : `[${server}]`)
  if (m === null) return false
  const [, host, port] = m
  const loopback = host === "::1" || /^127\./.test(host ?? "")
  return loopback && port !== undefined && port !== "53"
}

const guarded = (name: string, original: (...args: Array<unknown>) => unknown, servers: (self: unknown) => ReadonlyArray<string>) =>
  function(this: unknown, ...args: Array<unknown>) {
    const used = servers(this)
    if (used.length === 0 || !used.every(isTestServer)) {
      const message = `a test reached the real DNS: ${name}(${JSON.stringify(args[0])}) via ${used.join(", ") || "the system resolvers"}; ` +
        "give the code under test a zone (ZoneDns) or a local dnsmasq"
      violations.push(message)
      throw new Error(message)
    }
    return original.apply(this, args)
  }

type Patchable = Record<string, unknown> & { getServers?: () => Array<string> }

const patch = (target: Patchable, label: string, servers: (self: unknown) => ReadonlyArray<string>) => {
  for (const method of methods) {
    const original = target[method]
    if (typeof original !== "function") continue
    target[method] = guarded(`${label}.${method}`, original as (...args: Array<unknown>) => unknown, servers)
  }
}

const ownServers = (self: unknown) => (self as Patchable).getServers?.() ?? []
patch(dns.Resolver.prototype as unknown as Patchable, "Resolver", ownServers)
patch(dns.promises.Resolver.prototype as unknown as Patchable, "promises.Resolver", ownServers)
patch(dns as unknown as Patchable, "dns", () => dns.getServers())
patch(dns.promises as unknown as Patchable, "dns.promises", () => dns.getServers())
syncBuiltinESMExports()

/** Takes the violations recorded so far (for the test of the guard itself). */
export const takeViolations = (): ReadonlyArray<string> => violations.splice(0)

afterEach(() => {
  if (violations.length === 0) return
  const found = violations.splice(0)
  throw new Error(found.join("\n"))
})
