/**
 * `incoming cert status` and `incoming cert renew [--domain NAME]`: the managed certificates of
 * the configured server (`[acme]`), read from and written to its data dir.
 *
 * `status` reads the stored files (the server need not run): per name, its state, expiry,
 * renewal time and issuer. `renew` orders a new certificate now for every managed name (or the
 * one given), with the configured challenge — so the responder's port must be free, which it
 * is between the server's own orders — and stores it. A running server installs it on
 * `SIGHUP` (`systemctl reload incoming`), which re-reads certificate files without dropping a
 * connection; otherwise its renewal loop finds it on disk and does not order again.
 */
import { hostname as osHostname } from "node:os"
import { Console, Data, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { renewAt } from "../acme/AcmeOptions.ts"
import * as CertStore from "../acme/CertStore.ts"
import * as Issuer from "../acme/Issuer.ts"
import * as AcmeFiles from "../acme/ListenerFiles.ts"
import * as Load from "../config/Load.ts"
import * as Options from "../config/Options.ts"

export class CertCliError extends Data.TaggedError("CertCliError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

const configFlag = Flag.String("config").pipe(
  Flag.withDescription("config file; default ./incoming.toml, then /etc/incoming/incoming.toml if present"),
  Flag.optional
)

/** The configured ACME setup: its options with the managed names, and the store. */
const setup = (configPath: string | undefined) =>
  Effect.gen(function*() {
    const loaded = yield* Load.loadFromProcess({ configPath })
    const options = Options.toIncomingOptions(loaded.config)
    if (options.acme === undefined) return yield* new CertCliError({ detail: "no [acme] section in the configuration: no managed certificates" })
    const names = AcmeFiles.domains(options.acme, options.listeners, options.hostname ?? osHostname())
    const store = CertStore.paths(loaded.config.data_dir, options.acme.directory)
    return { acme: { ...options.acme, domains: names }, store }
  })

const status = Command.make("status", { config: configFlag }, (f) =>
  Effect.gen(function*() {
    const { acme, store } = yield* setup(Option.getOrUndefined(f.config))
    yield* Console.log(`CA ${acme.directory}, store ${store.dir}`)
    const now = Date.now()
    for (const name of acme.domains) {
      const read = CertStore.read(store, name)
      if (read._tag === "Missing") yield* Console.log(`${name}: missing (issued when the server starts)`)
      else if (read._tag === "Unusable") yield* Console.log(`${name}: unusable (${read.problem}); a new one is issued at start`)
      else {
        const s = read.stored
        const due = renewAt(acme, s.notBefore, s.notAfter)
        const state = s.notAfter < now ? "EXPIRED" : due <= now ? "valid, due for renewal" : "valid"
        yield* Console.log(
          `${name}: ${state}; expires ${new Date(s.notAfter).toISOString()}; renewal from ${new Date(due).toISOString()}; issuer ${s.issuer}`
        )
      }
    }
  })).pipe(Command.withDescription("show the managed certificates: state, expiry, renewal time, issuer"))

const renew = Command.make("renew", {
  config: configFlag,
  domain: Flag.String("domain").pipe(Flag.withDescription("renew this managed name only"), Flag.optional)
}, (f) =>
  Effect.gen(function*() {
    const { acme, store } = yield* setup(Option.getOrUndefined(f.config))
    const only = Option.getOrUndefined(f.domain)?.toLowerCase()
    if (only !== undefined && !acme.domains.includes(only)) {
      return yield* new CertCliError({ detail: `${only} is not a managed name (${acme.domains.join(", ")})` })
    }
    for (const name of only === undefined ? acme.domains : [only]) {
      const started = Date.now()
      const issued = yield* Issuer.issue(acme, store, name).pipe(Effect.mapError((e) => new CertCliError({ detail: e.message })))
      yield* Effect.try({
        try: () => CertStore.writePair(store, name, issued),
        catch: (e) => new CertCliError({ detail: `${name}: cannot store the certificate: ${e instanceof Error ? e.message : String(e)}` })
      })
      yield* Console.log(`${name}: issued in ${Date.now() - started} ms, stored in ${store.cert(name)}`)
    }
    yield* Console.log("a running server installs it on SIGHUP (systemctl reload incoming)")
  })).pipe(Command.withDescription("order new certificates now (a running server installs them on SIGHUP)"))

export const cert = Command.make("cert").pipe(
  Command.withDescription("managed (ACME) certificates"),
  Command.withSubcommands([status, renew])
)
