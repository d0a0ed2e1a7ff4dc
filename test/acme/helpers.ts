/**
 * What the ACME tests share: pebble validating against our responder on free loopback ports,
 * with the test names resolved to 127.0.0.1 by a dnsmasq of the test's own.
 */
import { Effect, type Scope } from "effect"
import type { AcmeOptions } from "../../src/acme/AcmeOptions.ts"
import * as AcmeDefaults from "../../src/acme/AcmeOptions.ts"
import { TestIncoming } from "../../src/testing/index.ts"
import * as Dnsmasq from "../support/dnsmasq.ts"
import * as Pebble from "../support/pebble.ts"

export const ready = Pebble.available && Dnsmasq.available

/** Says, once per test file, why its tests are skipped. */
export const warnIfSkipped = (file: string) => {
  if (!Pebble.available) console.warn(`${file}: ${Pebble.skipMessage}`)
  if (!Dnsmasq.available) console.warn(`${file}: ${Dnsmasq.skipMessage}`)
}

export const name = "mx.acme.test"
/** A second managed name, for SNI. */
export const other = "smtp.acme.test"

export interface Setup {
  readonly dir: string
  readonly dataDir: string
  readonly pebble: Pebble.Pebble
  readonly acme: AcmeOptions
  /** Starts another pebble like the first (same ports and files), for a CA that comes back. */
  readonly restartPebble: Effect.Effect<Pebble.Pebble, Error, Scope.Scope>
}

export const setup = (challenge: AcmeOptions["challenge"], extra: Partial<AcmeOptions> = {}, pebble: Partial<Pebble.PebbleOptions> = {}) =>
  Effect.gen(function*() {
    const dir = yield* TestIncoming.tempDir("incoming-acme-")
    const [httpPort, tlsPort] = yield* Effect.promise(() => Promise.all([Pebble.freePort(), Pebble.freePort()]))
    const dns = yield* Dnsmasq.start({ A: { [name]: "127.0.0.1", [other]: "127.0.0.1" } })
    const pebbleOptions: Pebble.PebbleOptions = { dir, httpPort, tlsPort, dnsServer: dns.server, ...pebble }
    const ca = yield* Pebble.start(pebbleOptions)
    const acme: AcmeOptions = {
      ...AcmeDefaults.defaults,
      directory: ca.directory,
      email: "postmaster@acme.test",
      domains: [],
      challenge,
      httpListen: { host: "127.0.0.1", port: httpPort },
      tlsAlpnListen: { host: "127.0.0.1", port: tlsPort },
      directoryCaFile: ca.httpsCaFile,
      retryBaseMs: 500,
      retryMaxMs: 2_000,
      ...extra
    }
    const restartPebble = Pebble.start({ ...pebbleOptions, ports: ca.ports })
    return { dir, dataDir: `${dir}/data`, pebble: ca, acme, restartPebble } satisfies Setup
  })

