/**
 * The parts of a `Runner` that are live objects rather than data: the policy rules (the rate
 * limiter runs a sweeper fiber, so it needs a scope) and the AUTH user store over the users file.
 * `options` completes the `IncomingOptions` that `Incoming.layer` takes; `incoming serve` runs it
 * inside the layer it builds (`Layer.unwrap`), so the sweeper lives exactly as long as the server.
 *
 * The users file is opened, not read, here: `UserFile.make` reads it on each AUTH and again when
 * it changes, so `incoming users passwd` takes effect without a restart. Load.ts has already
 * checked that the file exists.
 */
import { readFileSync } from "node:fs"
import { hostname as osHostname } from "node:os"
import { Data, Duration, Effect, type Scope } from "effect"
import { Dns } from "../dns/Dns.ts"
import * as AuthHandler from "../auth/AuthHandler.ts"
import * as UserFile from "../auth/UserFile.ts"
import type { IncomingOptions } from "../IncomingOptions.ts"
import type * as Policy from "../policy/Policy.ts"
import * as ConnectionLimit from "../policy/rules/ConnectionLimit.ts"
import * as HelloRequired from "../policy/rules/HelloRequired.ts"
import * as MaxRecipients from "../policy/rules/MaxRecipients.ts"
import * as Milter from "../policy/rules/Milter.ts"
import * as RateLimiter from "../policy/rules/RateLimiter.ts"
import * as SizeLimit from "../policy/rules/SizeLimit.ts"
import * as TlsRequired from "../policy/rules/TlsRequired.ts"
import * as AuthRules from "../policy/rules/auth/AuthRules.ts"
import * as Checks from "../policy/rules/auth/Checks.ts"
import * as Dnsbl from "../policy/rules/spam/Dnsbl.ts"
import * as Greylist from "../policy/rules/spam/Greylist.ts"
import * as Rspamd from "../policy/rules/spam/Rspamd.ts"
import type { GreylistStoreError } from "../policy/rules/spam/GreylistStore.ts"
import * as SqliteGreylistStore from "../policy/rules/spam/SqliteGreylistStore.ts"
import type { AuthChoice, RuleChoice, Runner } from "./Options.ts"

/**
 * A rule that could not be built at start (or reload): its store would not open. Named by its
 * place in the config (`policies[2]`), like a config problem: `serve` exits 1 with this line, a
 * reload keeps the running configuration.
 */
export class RuleBuildError extends Data.TaggedError("RuleBuildError")<{
  /** `policies[2]`. */
  readonly path: string
  readonly cause: GreylistStoreError
}> {
  override get message(): string {
    return `${this.path}: ${this.cause.message}`
  }
}

/**
 * One rule; a rate limiter's sweeper is forked into the current scope. The email-authentication
 * rules share `checks` (one per build: they memoize per transaction together).
 */
export const rule = (
  choice: RuleChoice,
  checks?: Checks.Checks["Service"],
  hostname: string = osHostname()
): Effect.Effect<Policy.Rule, GreylistStoreError, Scope.Scope | Dns> => {
  if (choice.rule === "spf" || choice.rule === "dkim" || choice.rule === "dmarc" || choice.rule === "arc" || choice.rule === "iprev") {
    if (checks === undefined) return Effect.die(new Error(`policy rule ${choice.rule} needs the authentication checks`))
    return Effect.succeed(AuthRules[choice.rule](checks, choice.options))
  }
  switch (choice.rule) {
    case "rate_limit":
      return Effect.map(RateLimiter.make(choice.options), (limiter) => limiter.rule)
    case "tls_required":
      return Effect.succeed(TlsRequired.make(choice.options))
    case "hello_required":
      return Effect.succeed(HelloRequired.make(choice.options))
    case "max_recipients":
      return Effect.succeed(MaxRecipients.make(choice.options))
    case "size_limit":
      return Effect.succeed(SizeLimit.make(choice.options))
    case "connection_limit":
      return Effect.succeed(ConnectionLimit.make(choice.options))
    case "dnsbl":
      // Its test-entry checks run in the scope: a reload stops the old rule's.
      return Effect.gen(function*() {
        const dnsbl = yield* Dnsbl.make(yield* Dns, choice.options)
        return dnsbl.rule
      })
    case "greylist":
      // The store is opened in the scope (closed on reload or stop). greylist.db was checked at
      // load; one that still cannot be opened (locked since, ...) stops the start with its reason.
      return Effect.gen(function*() {
        const store = yield* SqliteGreylistStore.make(choice.dataDir)
        const greylist = yield* Greylist.make(store, choice.options)
        return greylist.rule
      })
    case "rspamd":
      return Rspamd.make(choice.options)
    case "milter":
      return Milter.make({ ...choice.options, hostname })
  }
}

export const auth = (choice: AuthChoice): AuthHandler.AuthHandlerOptions => ({
  store: UserFile.make(choice.usersFile),
  maxFailuresPerConnection: choice.maxFailuresPerConnection,
  maxFailuresPerIp: choice.maxFailuresPerIp,
  ipWindow: Duration.millis(choice.ipWindowMs),
  failureDelay: Duration.millis(choice.failureDelayMs),
  allowInsecure: choice.allowInsecure
})

const authRules = new Set(["spf", "dkim", "dmarc", "arc", "iprev"])

/**
 * The complete `IncomingOptions` of a runner: its data plus the rules and the user store. The
 * authentication rules ask the DNS through the server's `Dns` (built once, at start).
 */
export const options = (runner: Runner): Effect.Effect<IncomingOptions, RuleBuildError, Scope.Scope | Dns> =>
  Effect.gen(function*() {
    // The ARC seal key, read here (Load.ts checked the file): the checks compute its body hash.
    const sealing = runner.policies.rules.find((r) => r.rule === "arc" && r.seal !== undefined)
    const seal = sealing?.rule === "arc" && sealing.seal !== undefined ? sealing.seal : undefined
    const checks = runner.policies.rules.some((r) => authRules.has(r.rule))
      ? yield* Checks.make(yield* Dns, {
        hostname: runner.options.hostname ?? osHostname(),
        ...(seal === undefined ? {} : {
          arcSeal: { signingDomain: seal.signingDomain, selector: seal.selector, privateKey: readFileSync(seal.privateKeyFile, "utf8") }
        })
      })
      : undefined
    const hostname = runner.options.hostname ?? osHostname()
    const rules = yield* Effect.forEach(runner.policies.rules, (choice, i) =>
      rule(choice, checks, hostname).pipe(Effect.mapError((cause) => new RuleBuildError({ path: `policies[${i}]`, cause }))))
    return {
      ...runner.options,
      ...(runner.auth !== undefined ? { auth: auth(runner.auth) } : {}),
      policies: { rules, timeoutMs: runner.policies.timeoutMs }
    }
  })
