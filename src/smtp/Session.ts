/**
 * What a session does at each protocol stage: connection limits at connect, sender checks at
 * MAIL, recipient authority at RCPT, and at DATA the stream → spool → trace header → commit
 * path that ends in `250 2.0.0 queued as <id>`.
 *
 * Sync-ack routes (see SyncDelivery): a recipient acknowledged synchronously is alone in its
 * transaction — another RCPT gets 452 4.5.3 and the client sends it in a new transaction (RFC
 * 5321 3.3) — and its message is handed to `SyncDelivery` instead of the queue.
 *
 * LMTP listeners (RFC 2033) answer DATA once per accepted recipient: the recipients on sync-ack
 * routes may share a transaction with each other and with queued ones, each sync recipient is
 * delivered on its own and gets its adapter's outcome, and the others share the queue commit's.
 *
 * Settings are read from the listener's `Ref` once per hook: a reload swaps the whole object, so
 * each command sees one consistent set of limits, and the next command the new one.
 *
 * The listener calls a handler when its command arrives. A handler that can decide at once
 * (no policy rule, no host lookup: the common case) does so and returns an `Exit`, which the
 * listener answers without forking a fiber; otherwise it returns the Effect that decides, which
 * runs as a fiber of the connection. DATA's direct path (untraced) returns a `Pending` answered
 * from callbacks (internal/directData.ts). Every failure carries its reply, and anything
 * unexpected is mapped by `SmtpReply.fromCause` to a 4xx.
 */
import type { Readable } from "node:stream"
import { Clock, Context, Data, Effect, Exit, LogLevel, Option, Ref, References } from "effect"
import type { SMTPServerAddress, SMTPServerSession } from "smtp-server"
import * as Policy from "../policy/Policy.ts"
import { type RcptDecision, Relay } from "../policy/Relay.ts"
import * as ListenerModes from "../auth/ListenerMode.ts"
import { MailQueue, type NewMessage } from "../queue/MailQueue.ts"
import type { MailQueueError } from "../queue/MailQueueError.ts"
import * as MessageId from "../queue/MessageId.ts"
import * as MessageEdit from "../policy/MessageEdit.ts"
import * as BodyWriter from "../spool/BodyWriter.ts"
import * as HeaderBlock from "../spool/HeaderBlock.ts"
import { Spool } from "../spool/Spool.ts"
import type { SpooledBody } from "../spool/SpooledBody.ts"
import type { SpoolError } from "../spool/SpoolError.ts"
import * as Telemetry from "../telemetry/Telemetry.ts"
import * as Address from "../protocol/Address.ts"
import type * as Dsn from "../protocol/Dsn.ts"
import type * as ProxyHeader from "../protocol/ProxyHeader.ts"
import type { Envelope } from "../protocol/Envelope.ts"
import { Priorities } from "../policy/Priorities.ts"
import type { ListenerOptions } from "./ListenerOptions.ts"
import * as SmtpReply from "../protocol/SmtpReply.ts"
import { SyncDelivery } from "./SyncDelivery.ts"
import * as Commands from "./internal/commands.ts"
import * as EditedEnvelope from "./internal/editedEnvelope.ts"
import * as MessageFields from "./internal/messageFields.ts"
import * as DirectData from "./internal/directData.ts"
import type { Pending } from "./internal/bridge.ts"
import { withSpanIf } from "../internal/spanIf.ts"
import { isDecided } from "../internal/decided.ts"
import * as HotPath from "../internal/hotPath.ts"

const { isAuthenticated } = MessageFields

/** A refusal decided by the session (limits, sequence, authority): its reply goes to the client as is. */
export class SessionReject extends Data.TaggedError("SessionReject")<{
  readonly reply: SmtpReply.SmtpReply
  readonly reason: string
}> {}

const reject = (reply: SmtpReply.SmtpReply, reason: string) => new SessionReject({ reply, reason })

export interface ConnectInfo {
  readonly id: string
  readonly remoteAddress: string
  readonly clientHostname?: string | undefined
  readonly secure: boolean
  /** The PROXY header the connection started with (its client is `remoteAddress` already). */
  readonly proxy?: ProxyHeader.ProxyHeader | undefined
}

type DataReply = string | ReadonlyArray<SmtpReply.SmtpReply>
type DataFailure = SessionReject | SpoolError | MailQueueError

export interface SessionHandlers {
  readonly connect: (info: ConnectInfo) => Effect.Effect<void, SessionReject>
  readonly mailFrom: (address: SMTPServerAddress, session: SMTPServerSession) => Effect.Effect<void, SessionReject>
  readonly rcptTo: (address: SMTPServerAddress, session: SMTPServerSession) => Effect.Effect<void, SessionReject>
  /** The reply text to DATA; on an LMTP listener, one reply per accepted recipient, in RCPT order. */
  readonly data: (stream: Readable, session: SMTPServerSession) => Effect.Effect<DataReply, DataFailure> | Pending<string, DataFailure>
  readonly close: (id: string) => void
  readonly closePolicy: (session: SMTPServerSession) => Effect.Effect<void>
  readonly connections: () => number
}

export interface SessionHooks {
  /** What the listener's mode requires before MAIL (TLS, AUTH). */
  readonly auth: ListenerModes.AuthSetup
  readonly isDraining: () => boolean
  readonly enterData: (sessionId: string) => void
  readonly leaveData: (sessionId: string) => void
}

export const make = Effect.fnUntraced(function*(settings: Ref.Ref<ListenerOptions>, hooks: SessionHooks) {
  // Fixed for the listener's life (a reload cannot rename it).
  const listener = Ref.getUnsafe(settings).name
  // Fixed too (a mode change needs a restart).
  const lmtp = Ref.getUnsafe(settings).mode === "lmtp"
  const queue = yield* MailQueue
  const spool = yield* Spool
  const telemetry = yield* Telemetry.Telemetry
  const relay = yield* Relay
  // The host app's policy rules, when it configured any (Incoming.layer always provides them).
  const policy = Option.getOrUndefined(yield* Effect.serviceOption(Policy.Policy))
  // Read at each command: a reload may add or remove rules. Every stage asks it before building
  // its context, so without rules no context is built at all.
  const hasRules = () => policy !== undefined && policy.rules.length > 0
  const enforce = <S extends Policy.Stage>(stage: S, ctx: Policy.StageContexts[S]) =>
    policy === undefined
      ? Effect.void
      : Effect.asVoid(policy.enforce(stage, ctx)).pipe(
        // A rule's refusal is a session refusal like any other: same reply path, same events.
        Effect.catchTag("PolicyRejected", (e) => Effect.fail(reject(e.reply, `policy_${e.rule}`)))
      )
  const connectContext = (session: SMTPServerSession): Policy.ConnectContext => ({
    listener,
    sessionId: session.id,
    clientAddress: session.remoteAddress,
    clientHostname: session.clientHostname,
    secure: session.secure,
    trusted: relay.isTrusted(session.remoteAddress)
  })
  const mailContext = (session: SMTPServerSession, mailFrom: string, declaredSize: number | undefined): Policy.MailContext => ({
    ...connectContext(session),
    helo: session.hostNameAppearsAs === "" ? undefined : session.hostNameAppearsAs,
    user: typeof session.user === "string" ? session.user : undefined,
    mailFrom,
    declaredSize
  })
  // Per-message spans only when something records them: a span costs microseconds even when the
  // tracer is off (the standalone server turns it off unless `[tracing]` is configured).
  const tracing = yield* References.TracerEnabled
  // Present when the host app's delivery can acknowledge some recipients synchronously.
  const sync = Option.getOrUndefined(yield* Effect.serviceOption(SyncDelivery))
  const isSync = (rcpt: string) => sync !== undefined && sync.isSync(rcpt)
  // Configured priorities by sender/recipient pattern, when the host app or config gave any.
  const priorities = Option.getOrUndefined(yield* Effect.serviceOption(Priorities))

  const perIp = new Map<string, number>()
  // Sessions counted against the limits, with their address, so close can give the slot back.
  const ipOf = new Map<string, string>()
  let total = 0

  // Metric updates and events from hooks that answer without an effect go through this context.
  const context = yield* Effect.context<never>()
  const metrics = Telemetry.metricsContext(context)
  const rejected = (stage: string) => (e: SessionReject) =>
    telemetry.publish({ _tag: "SessionRejected", reason: e.reason, stage, code: e.reply.code, listener })
  /** A refusal decided synchronously: published, then failed. */
  const refuse = (stage: string, e: SessionReject): Effect.Effect<never, SessionReject> =>
    Effect.andThen(rejected(stage)(e), Effect.fail(e))

  const connectRefusal = (info: ConnectInfo): SessionReject | undefined => {
    if (hooks.isDraining()) return reject(SmtpReply.shuttingDown, "draining")
    const options = Ref.getUnsafe(settings)
    if (total >= options.maxConnections) return reject(SmtpReply.tooManyConnections, "max_connections")
    if ((perIp.get(info.remoteAddress) ?? 0) >= options.maxConnectionsPerIp) {
      return reject(SmtpReply.tooManyConnectionsFromIp, "max_connections_per_ip")
    }
    return undefined
  }

  const connect = (info: ConnectInfo): Effect.Effect<void, SessionReject> => {
    const refusal = connectRefusal(info)
    if (refusal !== undefined) return refuse("connect", refusal)
    perIp.set(info.remoteAddress, (perIp.get(info.remoteAddress) ?? 0) + 1)
    ipOf.set(info.id, info.remoteAddress)
    total++
    telemetry.publishUnsafe({ _tag: "SessionConnect", peer: info.remoteAddress, listener }, metrics)
    if (!hasRules()) return Exit.void
    return enforce("connect", {
      listener,
      sessionId: info.id,
      clientAddress: info.remoteAddress,
      clientHostname: info.clientHostname,
      secure: info.secure,
      trusted: relay.isTrusted(info.remoteAddress)
    }).pipe(Effect.tapError(rejected("connect")))
  }

  /** Releases the rules' per-connection state (ConnectionLimit): run in the background by the listener. */
  const closePolicy = (session: SMTPServerSession): Effect.Effect<void> =>
    policy === undefined || !hasRules() ? Effect.void : policy.close(connectContext(session))

  const close = (id: string) => {
    const ip = ipOf.get(id)
    if (ip === undefined) return
    ipOf.delete(id)
    total--
    const n = (perIp.get(ip) ?? 1) - 1
    if (n <= 0) perIp.delete(ip)
    else perIp.set(ip, n)
  }

  const declaredSize = (address: SMTPServerAddress): number =>
    address.args !== false && address.args?.SIZE !== undefined ? Number(address.args.SIZE) : 0

  /** Everything MAIL checks before the policy rules; all of it is synchronous. */
  const mailRefusal = (address: SMTPServerAddress, session: SMTPServerSession): SessionReject | undefined => {
    if (hooks.isDraining()) return reject(SmtpReply.shuttingDown, "draining")
    const options = Ref.getUnsafe(settings)
    if (options.tls.mode === "required" && !session.secure) {
      return reject(SmtpReply.make(530, "5.7.0", "Must issue a STARTTLS command first"), "tls_required")
    }
    // Submission listeners require AUTH, except from trusted networks (which may relay on any
    // listener); TLS stays required for everyone there.
    const required = ListenerModes.mailRequirement(hooks.auth, session)
    if (required !== undefined && !(required === ListenerModes.authRequired && relay.isTrusted(session.remoteAddress))) {
      return reject(required, required === ListenerModes.authRequired ? "auth_required" : "tls_required")
    }
    // The address and the parameters were checked by the engine's parser (protocol/AddressCommand.ts).
    if (declaredSize(address) > options.maxSize) return reject(SmtpReply.messageTooBig(options.maxSize), "size")
    return undefined
  }

  // Backpressure at MAIL, so a client does not send a whole message only to get 452 after DATA.
  const backpressure = (): SessionReject | undefined =>
    queue.depthUnsafe() >= queue.maxDepth ? reject(SmtpReply.queueFull, "queue_full") : undefined

  const mailFrom = (address: SMTPServerAddress, session: SMTPServerSession): Effect.Effect<void, SessionReject> => {
    const refusal = mailRefusal(address, session)
    if (refusal !== undefined) return refuse("mail", refusal)
    if (!hasRules()) {
      const full = backpressure()
      return full === undefined ? Exit.void : refuse("mail", full)
    }
    // The engine has no HELO hook: HELO policy runs here, just before the MAIL policy.
    const declared = declaredSize(address)
    const ctx = mailContext(session, address.address, declared > 0 ? declared : undefined)
    return Effect.gen(function*() {
      yield* enforce("helo", ctx)
      yield* enforce("mail", ctx)
      const full = backpressure()
      if (full !== undefined) return yield* full
    }).pipe(Effect.tapError(rejected("mail")))
  }

  /** A refused recipient: counted by reason, published, failed. */
  const refuseRcpt = (address: SMTPServerAddress, e: SessionReject): Effect.Effect<never, SessionReject> => {
    Telemetry.recordRecipientUnsafe(listener, domainLabel(address.address), e.reason, metrics)
    return refuse("rcpt", e)
  }

  const rcptTo = (address: SMTPServerAddress, session: SMTPServerSession): Effect.Effect<void, SessionReject> => {
    const lower = address.address.toLowerCase()
    const already = session.envelope.rcptTo.some((r) => r.address.toLowerCase() === lower)
    if (!already && session.envelope.rcptTo.length >= Ref.getUnsafe(settings).maxRecipients) {
      return refuseRcpt(address, reject(SmtpReply.tooManyRecipients, "max_recipients"))
    }
    // Recipient authority first, and never skipped: no rule can turn this into an open relay.
    const decision = relay.checkRecipient(address.address, {
      authenticated: isAuthenticated(session),
      clientAddress: session.remoteAddress
    })
    // Decided from the lists (an Exit): answered now; a host lookup runs in the hook's fiber.
    return isDecided(decision) && Exit.isSuccess(decision)
      ? afterDecision(address, session, decision.value)
      : Effect.flatMap(decision, (d) => afterDecision(address, session, d))
  }

  const afterDecision = (
    address: SMTPServerAddress,
    session: SMTPServerSession,
    decision: RcptDecision
  ): Effect.Effect<void, SessionReject> => {
    switch (decision._tag) {
      case "BadAddress":
        return refuseRcpt(address, reject(SmtpReply.badRecipientSyntax("Bad recipient address syntax"), "rcpt_syntax"))
      case "Denied":
        return refuseRcpt(
          address,
          reject(decision.reply, decision.reason === "Relay" ? "relay_denied" : decision.reason === "UnknownMailbox" ? "unknown_mailbox" : "lookup_failed")
        )
    }
    const others = recipientsOf(session).filter((r) => r.toLowerCase() !== decision.address.toLowerCase())
    // LMTP replies per recipient, so there one reply never has to speak for two outcomes.
    if (!lmtp && others.length > 0 && (isSync(decision.address) || isSync(others[0]!))) {
      return refuseRcpt(address, reject(SmtpReply.separateTransaction, "sync_route_alone"))
    }
    const result = decision._tag === "Local" ? "accepted" : "relayed"
    if (!hasRules()) {
      Telemetry.recordRecipientUnsafe(listener, domainLabel(decision.address), result, metrics)
      return Exit.void
    }
    const mailFrom = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address
    return enforce("rcpt", { ...mailContext(session, mailFrom, undefined), rcptTo: decision.address, recipients: others }).pipe(
      Effect.tap(() => Telemetry.recordRecipient(listener, domainLabel(decision.address), result)),
      Effect.tapError((e) => Effect.andThen(rejected("rcpt")(e), Telemetry.recordRecipient(listener, domainLabel(address.address), e.reason)))
    )
  }

  /** A recipient domain as a metric label: one of ours by name, anything else as `other`. */
  const domainLabel = (address: string): string => {
    const m = Address.parse(address)
    if (m === undefined) return "invalid"
    if (m.domain === "") return relay.primaryDomain
    return relay.isLocalDomain(m.domain) ? m.domain : "other"
  }

  const recipientOf = (given: SMTPServerAddress) => MessageFields.recipientOf(given, relay.primaryDomain)
  const recipientsOf = (session: SMTPServerSession) => MessageFields.recipientsOf(session, relay.primaryDomain)

  const hasDataRules = () => policy !== undefined && policy.rules.some((r) => r.onData !== undefined)

  /**
   * The DATA-stage rules see the header block and a re-readable stream of the spooled body; the
   * edits of the enforced ones become a plan (MessageEdit.plan), whose header rewrites are
   * applied to the body here, before the commit. A refusal or a failure releases the body.
   */
  const dataStage = (
    received: SpooledBody,
    id: string,
    session: SMTPServerSession,
    mailFrom: string,
    rcptTo: ReadonlyArray<string>,
    options: ListenerOptions
  ): Effect.Effect<{ readonly body: SpooledBody; readonly plan: MessageEdit.Plan }, SessionReject | SpoolError> => {
    // Bodies the rules spooled (`newBody`): all released at the end but the one the message adopts.
    const started: Array<SpooledBody> = []
    let adopted: SpooledBody | undefined
    return Effect.gen(function*() {
      const block = yield* HeaderBlock.read(received)
      const scope = yield* Effect.scope
      const newBody = Effect.suspend(() =>
        BodyWriter.make(spool, { id: `${id}.body${started.length}`, maxSize: options.maxSize, lineEndings: "normalize" }, scope)
      ).pipe(Effect.map((w) => ({ ...w, end: Effect.tap(w.end, (b) => Effect.sync(() => started.push(b))) })))
      const edits = yield* policy!.enforceData({
        ...mailContext(session, mailFrom, undefined),
        recipients: rcptTo,
        size: received.size,
        messageId: id,
        headers: block.fields.map((f) => [f.name, f.value] as const),
        body: HeaderBlock.stream(received),
        newBody
      }).pipe(Effect.catchTag("PolicyRejected", (e) => Effect.fail(reject(e.reply, `policy_${e.rule}`))))
      const plan = MessageEdit.plan(edits, options.hostname)
      const body = plan.body === undefined
        ? yield* HeaderBlock.rewrite(received, plan.headerOps)
        : yield* HeaderBlock.replaceBody(received, plan.headerOps, plan.body)
      adopted = plan.body
      return { body, plan }
    }).pipe(
      Effect.scoped,
      Effect.tapError(() => received.release),
      Effect.ensuring(Effect.suspend(() => Effect.forEach(started.filter((b) => b !== adopted), (b) => b.release, { discard: true })))
    )
  }

  /** A message a rule took (a milter's discard, every recipient deleted): 250 as for any other, nothing stored, recorded. */
  const discarded = (body: SpooledBody, id: string, by: { readonly rule: string; readonly reason: string }) =>
    Effect.gen(function*() {
      yield* body.release
      yield* telemetry.publish({ _tag: "MessageDiscarded", id, ...by, listener })
      yield* Effect.logInfo(`message discarded by policy rule ${by.rule}: ${by.reason}`).pipe(Effect.annotateLogs({ message: id }))
      const queued = SmtpReply.queued(id)
      return `${queued.enhanced} ${queued.text}`
    })

  /** What the envelope keeps of RFC 6531 and RFC 3461 beyond the addresses (absent fields stay absent). */
  const extensionsOf = (session: SMTPServerSession): Pick<Envelope, "smtpUtf8" | "dsn" | "recipientDsn"> => {
    const mail = session.envelope.mailFrom === false ? undefined : Commands.parsedOf(session.envelope.mailFrom)
    const mailDsn = mail?.verb === "MAIL" ? mail.dsn : undefined
    const recipientDsn: Record<string, Dsn.RecipientDsn> = {}
    let any = false
    for (const r of session.envelope.rcptTo) {
      const parsed = Commands.parsedOf(r)
      const dsn = parsed?.verb === "RCPT" ? parsed.dsn : undefined
      if (dsn === undefined) continue
      const rcpt = recipientOf(r)
      if (rcpt === undefined) continue
      recipientDsn[rcpt] = dsn
      any = true
    }
    return {
      ...(session.envelope.smtpUtf8 === true ? { smtpUtf8: true } : {}),
      ...(mailDsn === undefined ? {} : { dsn: mailDsn }),
      ...(any ? { recipientDsn } : {})
    }
  }

  /** The message's priority (internal/messageFields.ts), with delivery's level when it gave one. */
  const withPriority = (session: SMTPServerSession, envelope: Envelope, listenerLevel: number | undefined, delivery: number | undefined) =>
    MessageFields.withPriority(session, envelope, {
      trusted: isAuthenticated(session) || relay.isTrusted(session.remoteAddress),
      listener: listenerLevel,
      configured: priorities?.of(envelope.mailFrom, envelope.rcptTo),
      delivery
    })
  const prioritized = (session: SMTPServerSession, envelope: Envelope, listenerLevel: number | undefined) =>
    sync?.priorityOf === undefined
      ? Effect.succeed(withPriority(session, envelope, listenerLevel, undefined))
      : Effect.map(sync.priorityOf(envelope), (level) => withPriority(session, envelope, listenerLevel, level))
  const receivedField = (session: SMTPServerSession, options: ListenerOptions, id: string, recipients: ReadonlyArray<string>, now: number) =>
    MessageFields.receivedField(session, { hostname: options.hostname, lmtp, id, recipients, now })

  /** The reply text of a queued message. */
  const queuedText = (queued: SmtpReply.SmtpReply) => `${queued.enhanced} ${queued.text}`

  // The direct path's services (internal/directData.ts).
  const directData: DirectData.DirectData<SessionReject> = {
    listener,
    spool,
    queue,
    telemetry,
    metrics,
    clock: Context.get(context, Clock.Clock),
    debug: yield* LogLevel.isEnabled("Debug"),
    timedOut: () => reject(SmtpReply.timeout, "commit_timeout")
  }

  const data = (stream: Readable, session: SMTPServerSession) => {
    const options = Ref.getUnsafe(settings)
    const id = MessageId.make()
    hooks.enterData(session.id)
    const receive = { id, maxSize: options.maxSize, lineEndings: options.lineEndings }
    // No DATA rules, SMTP, no recipient on a sync-ack route, and the priority its routes give
    // is known at once (it is unless the host app prioritizes with an effect): the body goes
    // straight to the queue, from callbacks when no span is recorded (most messages;
    // docs/benchmark.md, issue 20). The envelope cannot change during DATA.
    const rcptTo = recipientsOf(session)
    const envelope = lmtp || tracing || hasDataRules() || (sync !== undefined && rcptTo.some(sync.isSync))
      ? undefined
      : directEnvelope(session, rcptTo, options)
    if (envelope !== undefined) {
      return DirectData.transaction(directData, {
        stream,
        receive,
        leave: () => hooks.leaveData(session.id),
        message: (body, now) => ({ id, envelope, trace: receivedField(session, options, id, rcptTo, now), body, receivedAt: now }),
        timeoutMs: options.hookTimeoutMs
      })
    }
    const received = spool.receive(stream, receive).pipe(Effect.ensuring(Effect.sync(() => hooks.leaveData(session.id))))
    const transaction = Effect.flatMap(received, (body) => accept(body, id, session, rcptTo, options))
    return (tracing
      // The message id joins this transaction's trace to its deliveries (Dispatcher.deliver).
      ? Effect.andThen(Effect.annotateCurrentSpan({ message: id, listener }), transaction)
      : transaction).pipe(
        withSpanIf(tracing, "Session.data", () => ({ session: session.id })),
        Effect.tapError((e) =>
          e._tag === "SessionReject" ? rejected("data")(e) : telemetry.publish({
            _tag: "SessionRejected",
            // The reason's tag, not its text: a bounded set, fit for a metric label.
            reason: e._tag === "SpoolError" ? `spool_${e.reason._tag}` : `queue_${e.reason._tag}`,
            stage: "data",
            code: e.reply.code,
            listener
          })
        )
      )
  }

  /** The direct path's envelope, or undefined when delivery's priority for it needs an effect. */
  const directEnvelope = (session: SMTPServerSession, rcptTo: ReadonlyArray<string>, options: ListenerOptions): Envelope | undefined => {
    // Canonical already: the engine's parser wrote it (protocol/AddressCommand.ts).
    const mailFrom = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address
    const { smtpUtf8, ...dsn } = extensionsOf(session)
    const envelope: Envelope = { mailFrom, rcptTo, ...dsn, ...MessageFields.sessionFields(session, listener, smtpUtf8) }
    const delivery = sync?.priorityOf?.(envelope)
    if (delivery !== undefined && !(isDecided(delivery) && Exit.isSuccess(delivery))) return undefined
    return withPriority(session, envelope, options.priority, delivery?.value)
  }

  /**
   * The general path: DATA rules and their edits, synchronous delivery, LMTP's replies.
   *
   * One generator function for all messages, made here once: a generator closure made per message
   * (`Effect.gen(function*() {...})` inside the arrow) gets its own prototype and initial map when
   * first called, and V8 allocates maps in old space. Such a map points back at the closure, so
   * until the next mark-compact every scavenge kept the closure's context alive — the session, the
   * spooled body and the spool's receive state — and promoted it: ~5 KB per message, ~10% of what
   * a message allocates (issue #20).
   */
  const accept = Effect.fnUntraced(function*(
    received: SpooledBody,
    id: string,
    session: SMTPServerSession,
    rcptTo: ReadonlyArray<string>,
    options: ListenerOptions
  ) {
    const mailFrom = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address
    const { body, plan } = hasDataRules()
      ? yield* dataStage(received, id, session, mailFrom, rcptTo, options)
      : { body: received, plan: undefined }
    if (plan?.discard !== undefined) return yield* discarded(body, id, plan.discard)
    const { smtpUtf8, ...dsn } = extensionsOf(session)
    // Envelope edits: added recipients pass the same authority as RCPT (editedEnvelope.ts).
    const edited = yield* EditedEnvelope.apply(plan?.envelope ?? [], { mailFrom, rcptTo, ...dsn }, (a) =>
      relay.checkRecipient(a, { authenticated: isAuthenticated(session), clientAddress: session.remoteAddress }))
    if (edited._tag === "Deferred") return yield* Effect.andThen(body.release, reject(edited.reply, `policy_${edited.rule}`))
    if (edited.emptiedBy !== undefined) return yield* discarded(body, id, { rule: edited.emptiedBy, reason: "every recipient deleted" })
    const now = yield* Clock.currentTimeMillis
    const envelope = yield* prioritized(session, {
      ...edited.envelope,
      ...MessageFields.sessionFields(session, listener, smtpUtf8),
      ...(plan?.authentication === undefined ? {} : { authentication: plan.authentication }),
      ...(plan?.quarantine === undefined ? {} : { quarantine: plan.quarantine }),
      ...(plan?.annotations === undefined ? {} : { annotations: plan.annotations })
    }, options.priority)
    const trace = (plan?.prepend ?? "") + receivedField(session, options, id, rcptTo, now)
    // Quarantined on hold (a milter's): committed held, never delivered synchronously.
    const held = plan?.hold !== undefined
    const message: NewMessage = { id, envelope, trace, body, receivedAt: now, ...(held ? { held } : {}) }
    if (lmtp) return yield* lmtpOutcomes(message, session, options.hookTimeoutMs)
    const syncAck = held ? undefined : sync?.tryNow(message, { timeoutMs: options.hookTimeoutMs })
    if (syncAck !== undefined && Option.isSome(syncAck)) {
      const delivered = yield* syncAck.value.pipe(
        Effect.catchTag("SyncDeliveryError", (e) => Effect.fail(reject(e.reply, e.reason === "Rejected" ? "sync_rejected" : "sync_deferred")))
      )
      yield* telemetry.publish({ _tag: "SessionAccepted", id, listener })
      return `${delivered.enhanced} ${delivered.text}`
    }
    return queuedText(yield* commit(message, options.hookTimeoutMs))
  })

  /** The durable commit of `message` (it takes the body); its reply, `250 2.0.0 queued as <id>`. */
  const commit = (message: NewMessage, timeoutMs: number): Effect.Effect<SmtpReply.SmtpReply, SessionReject | MailQueueError> => {
    const { id, body } = message
    return queue.commit(message).pipe(
      withSpanIf(tracing, "Queue.commit", () => ({ message: id, recipients: message.envelope.rcptTo.length, size: body.size })),
      (commit) => HotPath.timeout(commit, timeoutMs),
      // Also when the connection closes under it (a finalizer, unlike tapCause).
      Effect.onError((cause) => Effect.andThen(body.release, telemetry.publish(DirectData.enqueueError(message, cause)))),
      Effect.catchTag("TimeoutError", () => Effect.fail(reject(SmtpReply.timeout, "commit_timeout"))),
      Effect.flatMap(() => {
        telemetry.publishUnsafe({ _tag: "MessageQueued", id, size: body.size, queueDepth: queue.depthUnsafe() }, metrics)
        telemetry.publishUnsafe({ _tag: "SessionAccepted", id, listener }, metrics)
        return LogLevel.isEnabled("Debug")
      }),
      Effect.flatMap((debug) => {
        const queued = SmtpReply.queued(id)
        // Annotating copies the fiber's context: only when the line will be written.
        return debug ? Effect.as(Effect.logDebug("message queued").pipe(Effect.annotateLogs({ message: id, size: body.size })), queued) : Effect.succeed(queued)
      })
    )
  }

  /**
   * LMTP's replies after DATA, one per accepted RCPT in order. Sync-ack recipients are delivered
   * first, each alone and concurrently (each within the hook deadline), from views of the body
   * that do not release it; then the rest are committed together, and the commit takes the body
   * (with none left, it is released here). A failure of one part is that part's replies only.
   */
  const lmtpOutcomes = (
    message: NewMessage,
    session: SMTPServerSession,
    timeoutMs: number
  ): Effect.Effect<ReadonlyArray<SmtpReply.SmtpReply>> =>
    Effect.gen(function*() {
      const { body, envelope } = message
      // Only recipients the client gave have a reply to carry a synchronous outcome; a held message waits.
      const given = new Set(recipientsOf(session))
      const syncNow = (r: string) => message.held !== true && given.has(r) && isSync(r)
      const syncRcpts = envelope.rcptTo.filter(syncNow)
      const queuedRcpts = envelope.rcptTo.filter((r) => !syncNow(r))
      const shared = { ...body, release: Effect.void }
      const outcomes = new Map<string, SmtpReply.SmtpReply>()
      yield* Effect.forEach(syncRcpts, (rcpt) => {
        const one = { ...message, body: shared, envelope: { ...envelope, rcptTo: [rcpt] } }
        const attempt = sync?.tryNow(one, { timeoutMs })
        if (attempt === undefined || Option.isNone(attempt)) return Effect.void
        return attempt.value.pipe(
          Effect.catchTag("SyncDeliveryError", (e) => Effect.succeed(e.reply)),
          Effect.map((reply) => void outcomes.set(rcpt, reply))
        )
      }, { concurrency: "unbounded", discard: true })
      if (queuedRcpts.length === 0) {
        yield* body.release
      } else {
        const queued = yield* commit({ ...message, envelope: { ...envelope, rcptTo: queuedRcpts } }, timeoutMs).pipe(
          Effect.catchCause((cause) => Effect.succeed(SmtpReply.fromCause(cause)))
        )
        for (const rcpt of queuedRcpts) outcomes.set(rcpt, queued)
      }
      if (syncRcpts.length > 0) yield* telemetry.publish({ _tag: "SessionAccepted", id: message.id, listener })
      // A recipient a rule deleted was accepted and dropped, as by a discard: 250.
      return session.envelope.rcptTo.map((r) => {
        const rcpt = recipientOf(r)
        if (rcpt === undefined) return SmtpReply.internalError
        return outcomes.get(rcpt) ?? (envelope.rcptTo.includes(rcpt) ? SmtpReply.internalError : SmtpReply.queued(message.id))
      })
    })

  return {
    connect,
    mailFrom,
    rcptTo,
    data,
    close,
    closePolicy,
    connections: () => total
  } satisfies SessionHandlers
})
