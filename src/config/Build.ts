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
import { Duration, Effect, type Scope } from "effect"
import * as AuthHandler from "../auth/AuthHandler.ts"
import * as UserFile from "../auth/UserFile.ts"
import type { IncomingOptions } from "../IncomingOptions.ts"
import type * as Policy from "../policy/Policy.ts"
import * as ConnectionLimit from "../policy/rules/ConnectionLimit.ts"
import * as HelloRequired from "../policy/rules/HelloRequired.ts"
import * as MaxRecipients from "../policy/rules/MaxRecipients.ts"
import * as RateLimiter from "../policy/rules/RateLimiter.ts"
import * as SizeLimit from "../policy/rules/SizeLimit.ts"
import * as TlsRequired from "../policy/rules/TlsRequired.ts"
import type { AuthChoice, RuleChoice, Runner } from "./Options.ts"

/** One rule; a rate limiter's sweeper is forked into the current scope. */
export const rule = (choice: RuleChoice): Effect.Effect<Policy.Rule, never, Scope.Scope> => {
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

/** The complete `IncomingOptions` of a runner: its data plus the rules and the user store. */
export const options = (runner: Runner): Effect.Effect<IncomingOptions, never, Scope.Scope> =>
  Effect.map(Effect.forEach(runner.policies.rules, rule), (rules): IncomingOptions => ({
    ...runner.options,
    ...(runner.auth !== undefined ? { auth: auth(runner.auth) } : {}),
    policies: { rules, timeoutMs: runner.policies.timeoutMs }
  }))
