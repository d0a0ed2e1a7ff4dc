/**
 * The start-up preflight of `[acme]` and the listeners that use it (part of `Load.ts`'s checks,
 * so `incoming check-config` reports them): a directory that is a known name or an https URL,
 * names that a CA can certify (no wildcard: that needs DNS-01), a listener with `tls.acme` that
 * has TLS on and no certificate files of its own, a `directory_ca` that is a PEM file, and a
 * challenge responder that does not take a listener's port.
 */
import { Effect, FileSystem } from "effect"
import * as AcmeOptions from "../acme/AcmeOptions.ts"
import type { ConfigIssue } from "./ConfigError.ts"
import type { IncomingConfig } from "./IncomingConfig.ts"
import { formatPath, type Path } from "./Shape.ts"
import { formatDuration } from "./Units.ts"

const hostNamePattern = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i

/** `[acme]` and the listeners that use it. */
export const acmeChecks = Effect.fnUntraced(function*(config: IncomingConfig, sourceOf: (path: Path) => string) {
  const fs = yield* FileSystem.FileSystem
  const issues: Array<ConfigIssue> = []
  const add = (path: Path, message: string) => issues.push({ source: sourceOf(path), path: formatPath(path), message })
  const users = config.listeners.flatMap((l, i) => (l.tls.acme ? [i] : []))
  for (const i of users) {
    const l = config.listeners[i]!
    if (config.acme === undefined) add(["listeners", i, "tls", "acme"], "needs an [acme] section (the CA, the names, the challenge)")
    if (l.tls.mode === "disabled") add(["listeners", i, "tls", "mode"], `tls.acme needs TLS: set tls.mode ("optional", "required" or "implicit")`)
    for (const key of ["cert", "key", "sni"] as const) {
      if (l.tls[key] !== undefined) add(["listeners", i, "tls", key], "not used with tls.acme (the managed certificates are): remove one of the two")
    }
  }
  const a = config.acme
  if (a === undefined) return issues
  if (!(a.directory in AcmeOptions.directories)) {
    const url = URL.canParse(a.directory) ? new URL(a.directory) : undefined
    if (url === undefined || url.protocol !== "https:") {
      add(["acme", "directory"], `expected ${Object.keys(AcmeOptions.directories).map((n) => `"${n}"`).join(" or ")} or an https:// directory URL, got ${JSON.stringify(a.directory)}`)
    }
  }
  if (a.email !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(a.email)) add(["acme", "email"], `not an e-mail address: ${JSON.stringify(a.email)}`)
  for (const [i, d] of a.domains.entries()) {
    if (!hostNamePattern.test(d)) add(["acme", "domains", i], `not a host name: ${JSON.stringify(d)}`)
    else if (d.startsWith("*.")) add(["acme", "domains", i], `${d}: a wildcard needs the DNS-01 challenge, which is not supported (name each host)`)
  }
  if (a.domains.length === 0) {
    if (users.length === 0) add(["acme", "domains"], "no names to certify: list them here, or set tls.acme = true on a listener (its host name is then used)")
    for (const i of users) {
      const name = config.listeners[i]!.hostname ?? config.hostname
      if (!hostNamePattern.test(name)) {
        add(["listeners", i, "hostname"], `${JSON.stringify(name)} cannot be certified (not a public host name): set it, or list the names in acme.domains`)
      }
    }
  }
  if (a.renew_before !== undefined && a.renew_before <= 0) add(["acme", "renew_before"], "must be more than 0")
  if (a.retry_base > a.retry_max) add(["acme", "retry_base"], `${formatDuration(a.retry_base)} is more than acme.retry_max (${formatDuration(a.retry_max)})`)
  if (a.directory_ca !== undefined) {
    const text = yield* fs.readFileString(a.directory_ca).pipe(Effect.option)
    if (text._tag === "None") add(["acme", "directory_ca"], `not readable by this user (or not found): ${a.directory_ca}`)
    else if (!text.value.includes("-----BEGIN CERTIFICATE-----")) add(["acme", "directory_ca"], `not a PEM certificate file: ${a.directory_ca}`)
  }
  const responder = a.challenge === "http-01" ? { key: "http_listen", at: a.http_listen } : { key: "tls_alpn_listen", at: a.tls_alpn_listen }
  const clash = config.listeners.findIndex((l) => l.port !== 0 && l.port === responder.at.port && (l.host === responder.at.host || l.host === "0.0.0.0" || responder.at.host === "0.0.0.0"))
  if (responder.at.port !== 0 && clash >= 0) add(["acme", responder.key], `same port as listeners[${clash}] (${responder.at.port})`)
  return issues
})

