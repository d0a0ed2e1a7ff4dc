/**
 * The email-authentication rules: `spf`, `dkim`, `dmarc`, `arc` and `iprev`, each an ordinary
 * policy rule (names, observe mode, `PolicyVerdict` events and metrics work as for every rule)
 * over one shared `Checks` (Checks.ts), which runs each check once per transaction.
 *
 * Every rule adds its results to the message (`Authentication-Results:`, written by the session
 * from the typed results: MessageEdit.ts) and counts them in `incoming_auth_results_total`.
 * What each may refuse:
 * - `spf` at MAIL: `fail = "reject"` → 550 5.7.23, `permerror = "reject"` → 550 5.7.24; by default
 *   it only records.
 * - `dmarc` at the end of DATA enforces the author domain's policy by default: `p=reject` →
 *   550 5.7.1 (nothing is queued), `p=quarantine` → accepted and marked (`Envelope.quarantine`,
 *   which a route can match), `p=none` → recorded. In observe mode it only records.
 * - `dkim`, `arc` and `iprev` record.
 *
 * DNS trouble is never a 5xx: a `temperror` lets the message through (`temperror = "continue"`,
 * the default) or defers it with 451 4.4.3 (`temperror = "defer"`); a check that fails outright
 * does the same. Authenticated sessions and trusted networks are our own users: the rules skip
 * them unless `check_authenticated` / `check_trusted` is set.
 */
import { Effect } from "effect"
import * as SmtpReply from "../../../protocol/SmtpReply.ts"
import * as AuthenticationResults from "../../../protocol/AuthenticationResults.ts"
import type { AuthResult } from "../../../protocol/AuthenticationResults.ts"
import * as MessageEdit from "../../MessageEdit.ts"
import type { ConnectContext, HeloContext, PolicyError, Rule } from "../../Policy.ts"
import * as Verdict from "../../Verdict.ts"
import * as Checks from "./Checks.ts"

export interface CommonOptions {
  readonly name?: string | undefined
  readonly observe?: boolean | undefined
  /** Check authenticated (AUTH) sessions too (default false: they are our users). */
  readonly checkAuthenticated?: boolean | undefined
  /** Check clients in the trusted networks too (default false). */
  readonly checkTrusted?: boolean | undefined
  /** On DNS trouble or a failed check: let the message through (default) or defer with 451 4.4.3. */
  readonly temperror?: "continue" | "defer" | undefined
}

export interface SpfOptions extends CommonOptions {
  /** `spf=fail` at MAIL: record (default) or refuse with 550 5.7.23. */
  readonly fail?: "record" | "reject" | undefined
  /** `spf=permerror` (a broken record): record (default) or refuse with 550 5.7.24. */
  readonly permerror?: "record" | "reject" | undefined
}

export type DkimOptions = CommonOptions

export interface ArcOptions extends CommonOptions {
  /**
   * Seal the message with our key (configured on the checks: `ChecksOptions.arcSeal`) when its
   * chain is absent or passes: for mail we forward, so the next hop can trust our results. The
   * seal carries the results of the rules before this one and its own: put `arc` last.
   */
  readonly seal?: boolean | undefined
}
export type IprevOptions = CommonOptions
export type DmarcOptions = CommonOptions

export const dnsTrouble = SmtpReply.make(451, "4.4.3", "Temporary DNS failure during authentication checks, try again later")

const skips = (options: CommonOptions, ctx: HeloContext | ConnectContext): boolean =>
  (options.checkAuthenticated !== true && "user" in ctx && ctx.user !== undefined) ||
  (options.checkTrusted !== true && ctx.trusted === true)

const defers = (options: CommonOptions) => options.temperror === "defer"

/**
 * Runs a check; with `temperror = "continue"` a failed check becomes `fallback` (a temperror
 * result), otherwise its `PolicyError` goes to the pipeline, which defers.
 */
const checked = <A>(options: CommonOptions, check: Effect.Effect<A, PolicyError>, fallback: (e: PolicyError) => A): Effect.Effect<A, PolicyError> =>
  defers(options)
    ? check
    : check.pipe(Effect.catchTag("PolicyError", (e) => Effect.as(Effect.logWarning(`authentication check failed, continuing: ${e.message}`), fallback(e))))

/** Records results and hands them on as an edit. */
const report = (options: CommonOptions, results: ReadonlyArray<AuthResult>): Effect.Effect<Verdict.Verdict> =>
  Effect.as(
    Checks.record(results),
    defers(options) && results.some((r) => r.result === "temperror")
      ? Verdict.defer(dnsTrouble)
      : Verdict.continueWith([MessageEdit.authResults(results)])
  )

const temperror = (method: string, properties: Record<string, string> = {}) => (e: PolicyError): AuthResult => ({
  method,
  result: "temperror",
  reason: e.reason.detail,
  properties
})

const forget = (checks: Checks.Checks["Service"]) => (ctx: ConnectContext) => checks.forget(ctx.sessionId)

export const spf = (checks: Checks.Checks["Service"], options: SpfOptions = {}): Rule => {
  const outcome = (ctx: Parameters<Checks.Checks["Service"]["spf"]>[0]) =>
    checked(options, checks.spf(ctx), (e): Checks.SpfOutcome => ({
      helo: undefined,
      mailFrom: temperror("spf", ctx.mailFrom === "" ? {} : { "smtp.mailfrom": ctx.mailFrom })(e),
      passDomain: undefined
    }))
  return {
    name: options.name ?? "spf",
    observe: options.observe,
    onMailFrom: (ctx) =>
      skips(options, ctx) ? Effect.succeed(Verdict.Continue) : Effect.map(outcome(ctx), ({ mailFrom }) => {
        const domain = ctx.mailFrom === "" ? ctx.helo ?? "" : ctx.mailFrom.slice(ctx.mailFrom.lastIndexOf("@") + 1)
        switch (mailFrom.result) {
          case "fail":
            return options.fail === "reject"
              ? Verdict.reject(SmtpReply.make(550, "5.7.23", `SPF validation failed: ${domain} does not allow this host to send its mail`))
              : Verdict.Continue
          case "permerror":
            return options.permerror === "reject"
              ? Verdict.reject(SmtpReply.make(550, "5.7.24", `SPF validation error: the SPF record of ${domain} is invalid`))
              : Verdict.Continue
          case "temperror":
            return defers(options) ? Verdict.defer(dnsTrouble) : Verdict.Continue
          default:
            return Verdict.Continue
        }
      }),
    onData: (ctx) =>
      skips(options, ctx)
        ? Effect.succeed(Verdict.Continue)
        : Effect.flatMap(outcome(ctx), (o) => report(options, o.helo === undefined ? [o.mailFrom] : [o.helo, o.mailFrom])),
    onClose: forget(checks)
  }
}

export const dkim = (checks: Checks.Checks["Service"], options: DkimOptions = {}): Rule => ({
  name: options.name ?? "dkim",
  observe: options.observe,
  onData: (ctx) =>
    skips(options, ctx) ? Effect.succeed(Verdict.Continue) : Effect.flatMap(
      checked(options, Effect.map(checks.message(ctx), (m) => m.dkim), (e) => [temperror("dkim")(e)]),
      (results) => report(options, results)
    ),
  onClose: forget(checks)
})

export const arc = (checks: Checks.Checks["Service"], options: ArcOptions = {}): Rule => ({
  name: options.name ?? "arc",
  observe: options.observe,
  onData: (ctx) =>
    skips(options, ctx) ? Effect.succeed(Verdict.Continue) : Effect.gen(function*() {
      const result = yield* checked(options, Effect.map(checks.message(ctx), (m) => m.arc), temperror("arc"))
      const verdict = yield* report(options, [result])
      if (options.seal !== true || !checks.canSeal || verdict._tag !== "Continue") return verdict
      // The seal's ARC-Authentication-Results is our Authentication-Results as it will be written.
      const before = (ctx.edits ?? []).flatMap(({ edit }) => edit._tag === "AuthResults" ? edit.results : [])
      const value = AuthenticationResults.format({ authservId: checks.hostname, results: [...before, result] })
        .slice(AuthenticationResults.headerName.length + 1).trim()
      const lines = yield* checked(options, checks.seal(ctx, value), () => [])
      const sealHeaders = lines.flatMap((line) => {
        const colon = line.indexOf(":")
        return colon > 0 ? [MessageEdit.prependHeader(line.slice(0, colon), line.slice(colon + 1))] : []
      })
      return Verdict.continueWith([...Verdict.editsOf(verdict), ...sealHeaders])
    }),
  onClose: forget(checks)
})

export const iprev = (checks: Checks.Checks["Service"], options: IprevOptions = {}): Rule => ({
  name: options.name ?? "iprev",
  observe: options.observe,
  onData: (ctx) =>
    skips(options, ctx) ? Effect.succeed(Verdict.Continue) : Effect.flatMap(
      checked(options, checks.iprev(ctx), temperror("iprev", { "policy.iprev": ctx.clientAddress })),
      (result) => report(options, [result])
    ),
  onClose: forget(checks)
})

export const dmarcReject = (domain: string) =>
  SmtpReply.make(550, "5.7.1", `Message rejected: the DMARC policy of ${domain} says to reject mail that fails authentication`)

export const dmarc = (checks: Checks.Checks["Service"], options: DmarcOptions = {}): Rule => ({
  name: options.name ?? "dmarc",
  observe: options.observe,
  onData: (ctx) =>
    skips(options, ctx) ? Effect.succeed(Verdict.Continue) : Effect.gen(function*() {
      const o = yield* checked(options, checks.dmarc(ctx), (e): Checks.DmarcOutcome => ({
        result: temperror("dmarc")(e),
        policy: undefined,
        domain: undefined
      }))
      if (o.result.result !== "fail" || o.policy === undefined || o.policy === "none") return yield* report(options, [o.result])
      yield* Checks.record([o.result])
      const domain = o.domain ?? "the sender's domain"
      return o.policy === "reject"
        ? Verdict.reject(dmarcReject(domain))
        : Verdict.continueWith([
          MessageEdit.authResults([o.result]),
          MessageEdit.quarantine(`DMARC policy of ${domain} is quarantine and the message failed DMARC`)
        ])
    }),
  onClose: forget(checks)
})
