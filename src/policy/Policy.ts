/**
 * The policy pipeline: ordered rules, each a plain value with one optional hook per SMTP stage,
 * evaluated at that stage until one of them decides.
 *
 * A hook returns `Effect<Verdict, PolicyError>`. `run` evaluates the rules in order, the first
 * verdict that is not `Continue` wins. Every hook has a deadline; a timeout, a `PolicyError` or
 * a defect in a rule becomes a `Defer` (451 4.4.2 / 451 4.7.1 / 451 4.3.0), never a 5xx: a broken
 * rule must make senders retry, not bounce (guarantee 4). A rule in observe mode is evaluated and
 * recorded (observer callback and the `incoming_policy_verdicts_total` metric) but its verdict
 * is ignored, so operators can try a rule on live traffic before enforcing it.
 *
 * Host apps add rules as Effects (a rule's hooks may need services: `Rule<R>`); the built-ins
 * under `rules/` are ordinary rules. Recipient authority is deliberately not a rule (Relay.ts).
 *
 * The DATA stage runs after the message is spooled: its context has the parsed header block and
 * the body as a re-readable `Stream` (each run reads the spooled copy afresh, from memory or the
 * spool file, so a 50 MiB message is never held whole), and its `Continue` / `Accept` verdicts
 * may carry message edits (MessageEdit.ts); a rule that replaces the body writes the new one
 * through `newBody`. `enforceData` returns the edits of the enforced
 * rules in order; each rule sees the edits of the rules before it in `ctx.edits`.
 */
import { Cause, Context, Data, Duration, Effect, Layer, Metric, type Stream } from "effect"
import * as SmtpReply from "../protocol/SmtpReply.ts"
import type { BodyWriter } from "../spool/BodyWriter.ts"
import type { SpoolError } from "../spool/SpoolError.ts"
import type { MessageEdit, RuleEdit } from "./MessageEdit.ts"
import * as Verdict from "./Verdict.ts"

export type Stage = "connect" | "helo" | "mail" | "rcpt" | "data"

/** What every stage knows about the connection. */
export interface ConnectContext {
  readonly listener: string
  readonly sessionId: string
  readonly clientAddress: string
  /** Reverse-DNS name when known. */
  readonly clientHostname?: string | undefined
  readonly secure: boolean
  /** The client is in the relay's trusted networks (set by the session; absent means no). */
  readonly trusted?: boolean | undefined
}

/** After HELO/EHLO. smtp-server has no HELO hook, so the session evaluates this stage at MAIL. */
export interface HeloContext extends ConnectContext {
  /** The HELO/EHLO argument as sent; `undefined` when the client skipped it. */
  readonly helo: string | undefined
  /** The authenticated user, if the session did AUTH. */
  readonly user: string | undefined
}

export interface MailContext extends HeloContext {
  /** Reverse path; "" for the null sender `<>`. */
  readonly mailFrom: string
  /** The SIZE= the client declared, if any. */
  readonly declaredSize: number | undefined
}

export interface RcptContext extends MailContext {
  /** The recipient being decided. */
  readonly rcptTo: string
  /** Recipients accepted so far in this transaction. */
  readonly recipients: ReadonlyArray<string>
}

export interface DataContext extends MailContext {
  readonly recipients: ReadonlyArray<string>
  /** Bytes received. */
  readonly size: number
  /** The header block as received, as (name, value) pairs, unfolded, in order. */
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  /** The queue id the message will have. */
  readonly messageId?: string | undefined
  /**
   * The message as received (without our trace header), read afresh from the spool each time the
   * stream runs; reading a spilled body that vanished fails with `SpoolError`.
   */
  readonly body?: Stream.Stream<Uint8Array, SpoolError> | undefined
  /** The edits of the enforced rules that ran before this one, in order. */
  readonly edits?: ReadonlyArray<RuleEdit> | undefined
  /**
   * Starts a new body for a `ReplaceBody` edit (what follows the header block), spooled like DATA:
   * bounded memory, the listener's size cap, line endings normalised to CRLF. The session
   * releases every body started here that no applied `ReplaceBody` edit carries. Absent where
   * nothing can be spooled (a rule tested on its own).
   */
  readonly newBody?: Effect.Effect<BodyWriter> | undefined
}

export interface StageContexts {
  readonly connect: ConnectContext
  readonly helo: HeloContext
  readonly mail: MailContext
  readonly rcpt: RcptContext
  readonly data: DataContext
}

/** Why a rule could not decide. Every reason defers the command (4xx): the sender retries. */
export type PolicyErrorReason =
  | { readonly _tag: "LookupFailed"; readonly detail: string }
  | { readonly _tag: "Unavailable"; readonly detail: string }
  | { readonly _tag: "Misconfigured"; readonly detail: string }

export class PolicyError extends Data.TaggedError("PolicyError")<{
  readonly rule: string
  readonly reason: PolicyErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    return `policy rule ${this.rule}: ${this.reason._tag}: ${this.reason.detail}`
  }
  get reply(): SmtpReply.SmtpReply {
    return policyUnavailable
  }
}

export type Hook<C, R> = (ctx: C) => Effect.Effect<Verdict.Verdict, PolicyError, R>

export interface Rule<R = never> {
  readonly name: string
  /** Evaluate and record, but never enforce. */
  readonly observe?: boolean | undefined
  readonly onConnect?: Hook<ConnectContext, R> | undefined
  readonly onHelo?: Hook<HeloContext, R> | undefined
  readonly onMailFrom?: Hook<MailContext, R> | undefined
  readonly onRcptTo?: Hook<RcptContext, R> | undefined
  readonly onData?: Hook<DataContext, R> | undefined
  /** Releases per-connection state (ConnectionLimit); runs for every closed session, decided or not. */
  readonly onClose?: ((ctx: ConnectContext) => Effect.Effect<void, never, R>) | undefined
}

const hookOf = <S extends Stage, R>(rule: Rule<R>, stage: S): Hook<StageContexts[S], R> | undefined => {
  switch (stage) {
    case "connect":
      return rule.onConnect as Hook<StageContexts[S], R> | undefined
    case "helo":
      return rule.onHelo as Hook<StageContexts[S], R> | undefined
    case "mail":
      return rule.onMailFrom as Hook<StageContexts[S], R> | undefined
    case "rcpt":
      return rule.onRcptTo as Hook<StageContexts[S], R> | undefined
    default:
      return rule.onData as Hook<StageContexts[S], R> | undefined
  }
}

/** One evaluated rule, as recorded: `verdict` is what the rule decided (or what its failure became). */
export interface PolicyEvent {
  readonly rule: string
  readonly stage: Stage
  readonly verdict: Verdict.Verdict
  readonly mode: "enforce" | "observe"
  /** Set when the verdict comes from a timeout, a PolicyError or a defect rather than the rule. */
  readonly failure?: "timeout" | "error" | "defect" | undefined
  readonly sessionId: string
}

/** Where evaluations are recorded (a Telemetry publisher, a log, a test's Ref). Must not fail. */
export type PolicyObserver = (event: PolicyEvent) => Effect.Effect<void>

export interface RunOptions {
  /** Deadline per hook (default 10 s). */
  readonly timeout?: Duration.Input | undefined
  readonly observer?: PolicyObserver | undefined
}

/** The outcome of a stage: the winning verdict and the rule that gave it (none when all continued). */
export interface Decision {
  readonly verdict: Verdict.Verdict
  readonly rule: string | undefined
  /** DATA stage: the edits of the enforced rules, in order (empty at other stages). */
  readonly edits: ReadonlyArray<RuleEdit>
}

const noEdits: ReadonlyArray<RuleEdit> = []

export const policyTimeout = SmtpReply.make(451, "4.4.2", "Policy check timed out, try again later")
export const policyUnavailable = SmtpReply.make(451, "4.7.1", "Policy check unavailable, try again later")
export const policyDefect = SmtpReply.make(451, "4.3.0", "Temporary local problem, try again later")

export const defaultTimeout = Duration.seconds(10)

export const verdictsTotal = Metric.counter("incoming_policy_verdicts_total", {
  description: "policy rule evaluations by rule, stage, verdict and mode",
  incremental: true
})

// One attributed metric per label set, built once: withAttributes on every evaluation would
// rebuild the metric key on the hot path.
const attributed = new Map<string, Metric.Metric<number, unknown>>()
const counterFor = (rule: string, stage: Stage, verdict: Verdict.VerdictTag, mode: PolicyEvent["mode"]) => {
  const key = `${rule}\u0000${stage}\u0000${verdict}\u0000${mode}`
  let m = attributed.get(key)
  if (m === undefined) {
    m = verdictsTotal.pipe(Metric.withAttributes({ rule, stage, verdict: verdict.toLowerCase(), mode }))
    attributed.set(key, m)
  }
  return m
}

type Evaluated = { readonly verdict: Verdict.Verdict; readonly failure?: PolicyEvent["failure"] }

const evaluate = <C, R>(hook: Hook<C, R>, ctx: C, timeout: Duration.Input): Effect.Effect<Evaluated, never, R> =>
  Effect.suspend(() => hook(ctx)).pipe(
    Effect.timeout(timeout),
    Effect.map((verdict): Evaluated => ({ verdict })),
    Effect.catchCause((cause): Effect.Effect<Evaluated> => {
      // Interruption is the session going away (or drain): let it through, nothing to answer.
      if (cause.reasons.length > 0 && cause.reasons.every(Cause.isInterruptReason)) return Effect.failCause(cause as Cause.Cause<never>)
      const failure = cause.reasons.find(Cause.isFailReason)
      if (failure !== undefined) {
        return Cause.isTimeoutError(failure.error)
          ? Effect.succeed({ verdict: Verdict.defer(policyTimeout), failure: "timeout" })
          : Effect.succeed({ verdict: Verdict.defer(policyUnavailable), failure: "error" })
      }
      return Effect.as(
        Effect.logError("policy rule defect", Cause.pretty(cause)),
        { verdict: Verdict.defer(policyDefect), failure: "defect" } as Evaluated
      )
    })
  )

/**
 * Runs `rules` for `stage` in order. First enforced non-Continue verdict wins; observed rules are
 * recorded and skipped. Never fails: failures of rules are already verdicts.
 */
export const run = <S extends Stage, R = never>(
  rules: ReadonlyArray<Rule<R>>,
  stage: S,
  ctx: StageContexts[S],
  options: RunOptions = {}
): Effect.Effect<Decision, never, R> =>
  Effect.gen(function*() {
    const timeout = options.timeout ?? defaultTimeout
    let edits = noEdits
    for (const rule of rules) {
      const hook = hookOf(rule, stage)
      if (hook === undefined) continue
      // Later DATA rules see what earlier ones did (rspamd can be told the auth results).
      const input = edits.length === 0 ? ctx : { ...ctx, edits }
      const { failure, verdict } = yield* evaluate(hook, input, timeout)
      const mode = rule.observe === true ? "observe" : "enforce"
      yield* Metric.update(counterFor(rule.name, stage, verdict._tag, mode), 1)
      if (options.observer !== undefined) {
        yield* options.observer({ rule: rule.name, stage, verdict, mode, failure, sessionId: ctx.sessionId })
      }
      if (mode === "observe") continue
      // Edits count at DATA only: earlier stages have no message to edit.
      const made: ReadonlyArray<MessageEdit> = stage === "data" ? Verdict.editsOf(verdict) : []
      if (made.length > 0) edits = [...edits, ...made.map((edit) => ({ rule: rule.name, edit }))]
      if (verdict._tag !== "Continue") return { verdict, rule: rule.name, edits }
    }
    return { verdict: Verdict.Continue, rule: undefined, edits }
  })

/**
 * Runs every rule's `onClose` (errors are impossible; defects are logged and ignored), each within
 * the hook deadline: a hook that does not finish is interrupted and logged, so a stuck rule cannot
 * hold up the drain that waits for it.
 */
export const close = <R>(rules: ReadonlyArray<Rule<R>>, ctx: ConnectContext, options: RunOptions = {}): Effect.Effect<void, never, R> =>
  Effect.forEach(rules, (rule) =>
    rule.onClose === undefined
      ? Effect.void
      : Effect.suspend(() => rule.onClose!(ctx)).pipe(
        Effect.timeoutOrElse({
          duration: options.timeout ?? defaultTimeout,
          orElse: () => Effect.logWarning(`policy rule ${rule.name} onClose timed out`)
        }),
        Effect.catchDefect((d) => Effect.logError(`policy rule ${rule.name} onClose defect`, d))
      ), {
    discard: true
  })

/** A refusal decided by the pipeline; it carries its reply, so `SmtpReply.fromCause` maps it as is. */
export class PolicyRejected extends Data.TaggedError("PolicyRejected")<{
  readonly rule: string
  readonly stage: Stage
  readonly verdict: "Reject" | "Defer" | "Disconnect"
  readonly reply: SmtpReply.SmtpReply
}> {
  override get message(): string {
    return `${this.rule} at ${this.stage}: ${SmtpReply.format(this.reply)}`
  }
}

/** `run`, then fail with `PolicyRejected` when the winning verdict refuses; succeeds with the verdict otherwise. */
export const enforce = <S extends Stage, R = never>(
  rules: ReadonlyArray<Rule<R>>,
  stage: S,
  ctx: StageContexts[S],
  options: RunOptions = {}
): Effect.Effect<"Continue" | "Accept", PolicyRejected, R> =>
  Effect.flatMap(run(rules, stage, ctx, options), ({ rule, verdict }) => {
    switch (verdict._tag) {
      case "Continue":
      case "Accept":
        return Effect.succeed(verdict._tag)
      default:
        return Effect.fail(new PolicyRejected({ rule: rule ?? "?", stage, verdict: verdict._tag, reply: verdict.reply }))
    }
  })

/** The DATA stage: `enforce`, succeeding with the edits the enforced rules made, in order. */
export const enforceData = <R = never>(
  rules: ReadonlyArray<Rule<R>>,
  ctx: DataContext,
  options: RunOptions = {}
): Effect.Effect<ReadonlyArray<RuleEdit>, PolicyRejected, R> =>
  Effect.flatMap(run(rules, "data", ctx, options), ({ edits, rule, verdict }) => {
    switch (verdict._tag) {
      case "Continue":
      case "Accept":
        return Effect.succeed(edits)
      default:
        return Effect.fail(new PolicyRejected({ rule: rule ?? "?", stage: "data", verdict: verdict._tag, reply: verdict.reply }))
    }
  })

/** The configured pipeline as a service, for the session to yield. */
export class Policy extends Context.Service<Policy, {
  readonly rules: ReadonlyArray<Rule>
  readonly run: <S extends Stage>(stage: S, ctx: StageContexts[S]) => Effect.Effect<Decision>
  readonly enforce: <S extends Stage>(stage: S, ctx: StageContexts[S]) => Effect.Effect<"Continue" | "Accept", PolicyRejected>
  readonly enforceData: (ctx: DataContext) => Effect.Effect<ReadonlyArray<RuleEdit>, PolicyRejected>
  readonly close: (ctx: ConnectContext) => Effect.Effect<void>
}>()("incoming/Policy") {}

export interface PolicyOptions extends RunOptions {
  readonly rules: ReadonlyArray<Rule>
}

export const make = (options: PolicyOptions): Policy["Service"] =>
  Policy.of({
    rules: options.rules,
    run: (stage, ctx) => run(options.rules, stage, ctx, options),
    enforce: (stage, ctx) => enforce(options.rules, stage, ctx, options),
    enforceData: (ctx) => enforceData(options.rules, ctx, options),
    close: (ctx) => close(options.rules, ctx, options)
  })

export const layer = (options: PolicyOptions): Layer.Layer<Policy> => Layer.succeed(Policy, make(options))

/**
 * Replaces the rules of a running server (reload), and the per-hook deadline when one is given;
 * a stage already running finishes with the old ones.
 */
export class PolicySwap extends Context.Service<PolicySwap, {
  readonly replace: (rules: ReadonlyArray<Rule>, options?: { readonly timeout?: Duration.Input | undefined }) => Effect.Effect<void>
}>()("incoming/PolicySwap") {}

/** A `Policy` that delegates to the rules the last `replace` installed, plus its `PolicySwap`. */
export const makeSwappable = (initial: PolicyOptions): { readonly policy: Policy["Service"]; readonly swap: PolicySwap["Service"] } => {
  let options = initial
  let current = make(options)
  const policy = Policy.of({
    get rules() {
      return current.rules
    },
    run: (stage, ctx) => current.run(stage, ctx),
    enforce: (stage, ctx) => current.enforce(stage, ctx),
    enforceData: (ctx) => current.enforceData(ctx),
    close: (ctx) => current.close(ctx)
  })
  const swap = PolicySwap.of({
    replace: (rules, next) =>
      Effect.sync(() => {
        options = next?.timeout === undefined ? { ...options, rules } : { ...options, rules, timeout: next.timeout }
        current = make(options)
      })
  })
  return { policy, swap }
}

/** No rules: every stage continues. */
export const layerEmpty: Layer.Layer<Policy> = layer({ rules: [] })
