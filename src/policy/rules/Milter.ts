/**
 * The `milter` rule: runs each SMTP session through a mail filter that speaks the milter
 * protocol (rspamd's proxy, OpenDKIM, OpenDMARC, ClamAV's, site filters), as Postfix does.
 *
 * One connection per SMTP session, opened at connect and negotiated once, reused by every
 * transaction of the session and closed (QUIT) when the session closes; a new transaction after
 * an unfinished one starts with ABORT. Stages: connect, HELO (sent again only when the name
 * changes; we evaluate HELO at MAIL, like every rule), MAIL, each RCPT, then at DATA the header
 * fields, end of headers, the body from the spool in chunks of at most 64 KiB, and end of
 * message, whose modification requests become message edits (milter/Modifications.ts): headers,
 * recipients, sender, quarantine (held in the queue); a replaced body is written into a new
 * spooled body as its chunks arrive (`DataContext.newBody`), never collected. Steps the filter
 * declined in the negotiation are not sent; steps it said it would not answer are not waited for.
 *
 * Replies: continue, and accept (this filter is done with the message, or with the session when
 * said at connect or HELO), go on to the next rule; reject is 550 5.7.1, tempfail 451 4.7.1, a
 * reply code of the filter's own is passed on (its class decides reject or defer). At RCPT a
 * refusal refuses that recipient only. Discard (at any stage of a transaction) accepts the
 * message and stores it nowhere (a `Discard` edit at DATA).
 *
 * A filter that cannot be reached, breaks the protocol, closes, or says nothing for `timeout`
 * (each reply; a progress reply starts it again) gives the `on_error` verdict — continue
 * (Postfix's `milter_default_action = accept`) or 451 4.7.1 — for the rest of the session, and
 * is never the cause of a 5xx. The connection is dropped then; the next session opens a new one.
 */
import { isIPv4, isIPv6 } from "node:net"
import { Effect, Exit, Metric, Result, Scope, Stream } from "effect"
import * as SmtpReply from "../../protocol/SmtpReply.ts"
import * as MessageEdit from "../MessageEdit.ts"
import type * as Policy from "../Policy.ts"
import * as Verdict from "../Verdict.ts"
import * as Codec from "../milter/Codec.ts"
import * as Connection from "../milter/Connection.ts"
import * as Macros from "../milter/Macros.ts"
import * as Message from "../milter/Message.ts"
import * as Modifications from "../milter/Modifications.ts"
import type { BodyWriter } from "../../spool/BodyWriter.ts"

export interface MilterOptions {
  readonly name?: string | undefined
  readonly observe?: boolean | undefined
  readonly address: Connection.Address
  /** Deadline of connecting and of each reply (default 5 s). */
  readonly timeoutMs?: number | undefined
  /** What a failing filter means: let the mail through (default) or defer it. */
  readonly onError?: "accept" | "tempfail" | undefined
  /** Our host name, the `j` macro. */
  readonly hostname: string
}

export const defaults = { timeoutMs: 5_000, onError: "accept" } as const

export const tempfailReply = SmtpReply.make(451, "4.7.1", "Service unavailable - try again later")
export const rejectReply = SmtpReply.make(550, "5.7.1", "Command rejected")

export const repliesTotal = Metric.counter("incoming_milter_replies_total", {
  description: "milter replies by milter, stage and reply",
  incremental: true
})
export const errorsTotal = Metric.counter("incoming_milter_errors_total", {
  description: "milter failures (unreachable, timeout, protocol, closed) by milter and reason",
  incremental: true
})

/** The milter's state in one SMTP session. */
interface SessionState {
  readonly scope: Scope.Closeable
  conn: Connection.Connection | undefined
  /** Set once the filter failed: every later stage gives the `on_error` verdict. */
  failed: boolean
  /** The filter accepted the whole session (at connect or HELO). */
  sessionDone: boolean
  heloSent: string | undefined
  /** A MAIL was sent and no end of message finished it: the next MAIL starts with ABORT. */
  open: boolean
  /** The filter is done with this transaction (accept). */
  messageDone: boolean
  /** The filter said discard during this transaction. */
  discard: boolean
}

type Step = "connect" | "helo" | "mail" | "rcpt" | "data" | "header" | "endOfHeaders" | "body" | "endOfMessage"

/** Per step: the negotiation flag that skips it, the one that drops its reply, and its macros. */
const steps: Record<Step, { readonly skip: number; readonly noReply: number; readonly macros?: Codec.MacroStage; readonly command?: Codec.Command }> = {
  connect: { skip: Codec.Step.NoConnect, noReply: Codec.Step.NoReplyConnect, macros: "connect", command: Codec.Command.Connect },
  helo: { skip: Codec.Step.NoHelo, noReply: Codec.Step.NoReplyHelo, macros: "helo", command: Codec.Command.Helo },
  mail: { skip: Codec.Step.NoMail, noReply: Codec.Step.NoReplyMail, macros: "mail", command: Codec.Command.Mail },
  rcpt: { skip: Codec.Step.NoRcpt, noReply: Codec.Step.NoReplyRcpt, macros: "rcpt", command: Codec.Command.Rcpt },
  data: { skip: Codec.Step.NoData, noReply: Codec.Step.NoReplyData, macros: "data", command: Codec.Command.Data },
  header: { skip: Codec.Step.NoHeaders, noReply: Codec.Step.NoReplyHeader },
  endOfHeaders: { skip: Codec.Step.NoEndOfHeaders, noReply: Codec.Step.NoReplyEndOfHeaders, macros: "endOfHeaders", command: Codec.Command.EndOfHeaders },
  body: { skip: Codec.Step.NoBody, noReply: Codec.Step.NoReplyBody },
  endOfMessage: { skip: 0, noReply: 0, macros: "endOfMessage", command: Codec.Command.EndOfMessage }
}

const continued: Connection.Answer = { reply: { _tag: "Continue" }, modifications: [] }

const clientOf = (address: string): Codec.ClientAddress =>
  isIPv4(address)
    ? { family: "inet", address, port: 0 }
    : isIPv6(address)
    ? { family: "inet6", address, port: 0 }
    : { family: "unknown" }

export const make = (options: MilterOptions): Effect.Effect<Policy.Rule, never, Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "milter"
    const where = Connection.formatAddress(options.address)
    const timeoutMs = options.timeoutMs ?? defaults.timeoutMs
    const onError = options.onError ?? defaults.onError
    const errorVerdict = onError === "tempfail" ? Verdict.defer(tempfailReply) : Verdict.Continue
    // Closing the rule's scope (shutdown, reload) closes every session's connection.
    const outer = yield* Effect.scope
    const sessions = new Map<string, SessionState>()

    const count = (stage: Step, reply: string) =>
      Metric.update(repliesTotal.pipe(Metric.withAttributes({ milter: name, stage, reply: reply.toLowerCase() })), 1)

    const drop = (state: SessionState) =>
      Effect.suspend(() => {
        state.conn = undefined
        return Scope.close(state.scope, Exit.void)
      })

    /** A failure of the filter: recorded, the connection dropped, the `on_error` verdict from now on. */
    const failed = (state: SessionState, stage: Step, e: Connection.MilterError) =>
      Effect.gen(function*() {
        state.failed = true
        yield* Metric.update(errorsTotal.pipe(Metric.withAttributes({ milter: name, reason: e.reason._tag.toLowerCase() })), 1)
        yield* Effect.logWarning(`milter ${name} at ${stage}: ${e.message}; on_error = ${onError}`)
        yield* drop(state)
        return errorVerdict
      })

    const stateOf = (ctx: Policy.ConnectContext): SessionState => {
      let state = sessions.get(ctx.sessionId)
      if (state === undefined) {
        state = {
          scope: Scope.forkUnsafe(outer),
          conn: undefined,
          failed: false,
          sessionDone: false,
          heloSent: undefined,
          open: false,
          messageDone: false,
          discard: false
        }
        sessions.set(ctx.sessionId, state)
      }
      return state
    }

    const sourceOf = (ctx: Policy.ConnectContext & Partial<Policy.RcptContext & Policy.DataContext>): Macros.MacroSource => ({
      hostname: options.hostname,
      listener: ctx.listener,
      clientAddress: ctx.clientAddress,
      clientHostname: ctx.clientHostname,
      helo: ctx.helo,
      secure: ctx.secure,
      user: ctx.user,
      mailFrom: ctx.mailFrom,
      rcptTo: ctx.rcptTo,
      queueId: ctx.messageId
    })

    /** Sends one step (macros first) unless the filter declined it; waits for the reply unless it said it would not give one. */
    const exchange = (
      conn: Connection.Connection,
      step: Step,
      source: Macros.MacroSource,
      packet: Uint8Array,
      onBody?: (chunk: Uint8Array) => Effect.Effect<void>
    ) => {
      const spec = steps[step]
      const { macros: requested, steps: negotiated } = conn.negotiated
      if ((negotiated & spec.skip) !== 0) return Effect.succeed(continued)
      const pairs = spec.macros === undefined ? [] : Macros.forStage(spec.macros, source, requested[spec.macros])
      const packets = pairs.length === 0 || spec.command === undefined ? [packet] : [Codec.macros(spec.command, pairs), packet]
      if ((negotiated & spec.noReply) !== 0) return Effect.as(conn.send(packets), continued)
      return conn.ask(packets, step === "endOfMessage", onBody)
    }

    /** The connection of the session, opened and told of the client on first use. */
    const connection = (state: SessionState, ctx: Policy.ConnectContext) =>
      Effect.gen(function*() {
        if (state.conn !== undefined) return { conn: state.conn, answer: undefined }
        const conn = yield* Connection.open(options.address, timeoutMs).pipe(Scope.provide(state.scope))
        state.conn = conn
        const answer = yield* exchange(conn, "connect", sourceOf(ctx), Codec.connect(ctx.clientHostname ?? `[${ctx.clientAddress}]`, clientOf(ctx.clientAddress)))
        return { conn, answer }
      })

    /** A final reply as a verdict, with what it means for the rest of the session. */
    const verdictOf = (state: SessionState, step: Step, answer: Connection.Answer): Effect.Effect<Verdict.Verdict> => {
      const reply = answer.reply
      return Effect.as(count(step, reply._tag), (() => {
        switch (reply._tag) {
          case "Continue":
          case "Skip":
            return Verdict.Continue
          case "Accept":
            if (step === "connect" || step === "helo") state.sessionDone = true
            else state.messageDone = true
            return Verdict.Continue
          case "Discard":
            state.discard = true
            state.messageDone = true
            return Verdict.Continue
          case "Reject":
            if (step !== "rcpt") state.open = false
            return Verdict.reject(rejectReply)
          case "Tempfail":
            if (step !== "rcpt") state.open = false
            return Verdict.defer(tempfailReply)
          case "ReplyCode": {
            if (step !== "rcpt") state.open = false
            const parts = Codec.replyParts(reply.code, reply.text)
            const smtp = SmtpReply.make(parts.code, parts.enhanced, parts.text)
            return reply.code >= 500 ? Verdict.reject(smtp) : Verdict.defer(smtp)
          }
        }
      })())
    }

    /**
     * Runs `body` for a session whose filter is still in play; failures become the `on_error`
     * verdict, and an interruption (the policy deadline, the session going away) drops the
     * connection, whose state is unknown from then on.
     */
    const guarded = (
      ctx: Policy.ConnectContext,
      stage: Step,
      body: (state: SessionState, conn: Connection.Connection) => Effect.Effect<Verdict.Verdict, Connection.MilterError>
    ): Effect.Effect<Verdict.Verdict> =>
      Effect.suspend(() => {
        const state = stateOf(ctx)
        if (state.failed) return Effect.succeed(errorVerdict)
        if (state.sessionDone) return Effect.succeed(Verdict.Continue)
        return Effect.gen(function*() {
          const { answer, conn } = yield* connection(state, ctx)
          if (answer !== undefined) {
            const verdict = yield* verdictOf(state, "connect", answer)
            if (verdict._tag !== "Continue" || state.sessionDone || stage === "connect") return verdict
          }
          return yield* body(state, conn)
        }).pipe(
          Effect.catchTag("MilterError", (e) => failed(state, stage, e)),
          Effect.onInterrupt(() => Effect.andThen(Effect.sync(() => (state.failed = true)), drop(state)))
        )
      })

    const onHelo = (ctx: Policy.HeloContext) =>
      guarded(ctx, "helo", (state, conn) => {
        if (ctx.helo === undefined || ctx.helo === state.heloSent) return Effect.succeed(Verdict.Continue)
        state.heloSent = ctx.helo
        return Effect.flatMap(exchange(conn, "helo", sourceOf(ctx), Codec.helo(ctx.helo)), (a) => verdictOf(state, "helo", a))
      })

    const onMailFrom = (ctx: Policy.MailContext) =>
      guarded(ctx, "mail", (state, conn) =>
        Effect.gen(function*() {
          if (state.open) yield* conn.send([Codec.abort()])
          state.open = true
          state.messageDone = false
          state.discard = false
          const args = ctx.declaredSize === undefined ? [] : [`SIZE=${ctx.declaredSize}`]
          return yield* verdictOf(state, "mail", yield* exchange(conn, "mail", sourceOf(ctx), Codec.mail(ctx.mailFrom, args)))
        }))

    const onRcptTo = (ctx: Policy.RcptContext) =>
      guarded(ctx, "rcpt", (state, conn) =>
        state.messageDone || !state.open
          ? Effect.succeed(Verdict.Continue)
          : Effect.flatMap(exchange(conn, "rcpt", sourceOf(ctx), Codec.rcpt(ctx.rcptTo)), (a) => verdictOf(state, "rcpt", a)))

    const onData = (ctx: Policy.DataContext) =>
      guarded(ctx, "data", (state, conn) =>
        Effect.gen(function*() {
          if (state.discard) return discarded()
          if (state.messageDone || !state.open) return Verdict.Continue
          const source = sourceOf(ctx)
          const data = yield* verdictOf(state, "data", yield* exchange(conn, "data", source, Codec.data()))
          if (data._tag !== "Continue" || state.messageDone) return state.discard ? discarded() : data
          const sent = yield* sendMessage(state, conn, source, ctx.body ?? Stream.empty)
          if (sent !== undefined) return sent
          const replacement = replacementOf(ctx, (conn.negotiated.actions & Codec.Action.ChangeBody) !== 0)
          const answer = yield* exchange(conn, "endOfMessage", source, Codec.endOfMessage(), replacement.write)
          state.open = false
          const verdict = yield* verdictOf(state, "endOfMessage", answer)
          if (state.discard) return discarded()
          if (verdict._tag !== "Continue") return verdict
          const { edits, ignored } = Modifications.editsOf(answer.modifications, conn.negotiated.actions)
          if (replacement.refused()) ignored.push("ReplaceBody (not negotiated)")
          if (ignored.length > 0) yield* Effect.logWarning(`milter ${name} at end of message: ${ignored.join("; ")}: ignored`)
          const body = yield* Effect.result(replacement.end)
          if (Result.isFailure(body)) {
            // The filter's answer was read to its end: the connection is fine, this message is not.
            yield* Metric.update(errorsTotal.pipe(Metric.withAttributes({ milter: name, reason: "replace_body" })), 1)
            yield* Effect.logWarning(`milter ${name}: its new body cannot be kept: ${body.failure.message}; on_error = ${onError}`)
            return errorVerdict
          }
          return Verdict.continueWith(body.success === undefined ? edits : [...edits, MessageEdit.replaceBody(body.success)])
        }))

    /**
     * Where a replaced body goes as its chunks arrive: a new spooled body (`ctx.newBody`, started
     * at the first chunk), never a buffer of ours. Refused (and noted) when the filter did not
     * negotiate it or nothing can be spooled.
     */
    const replacementOf = (ctx: Policy.DataContext, negotiated: boolean) => {
      let writer: BodyWriter | undefined
      let refused = false
      return {
        write: (chunk: Uint8Array): Effect.Effect<void> =>
          Effect.suspend(() => {
            if (writer !== undefined) return writer.write(chunk)
            if (!negotiated || ctx.newBody === undefined) return Effect.sync(() => void (refused = true))
            return Effect.flatMap(ctx.newBody, (w) => {
              writer = w
              return w.write(chunk)
            })
          }),
        end: Effect.suspend(() => (writer === undefined ? Effect.succeed(undefined) : writer.end)),
        refused: () => refused
      }
    }

    /**
     * Header fields, end of headers and the body, streamed from the spool. A final reply other
     * than continue on the way ends it (its verdict); `Skip` ends the body only.
     */
    const sendMessage = (
      state: SessionState,
      conn: Connection.Connection,
      source: Macros.MacroSource,
      body: Stream.Stream<Uint8Array, unknown>
    ): Effect.Effect<Verdict.Verdict | undefined, Connection.MilterError> =>
      Effect.gen(function*() {
        const leadingSpace = (conn.negotiated.steps & Codec.Step.HeaderLeadingSpace) !== 0
        let head: Uint8Array = new Uint8Array(0)
        let inBody = false
        let skipping = (conn.negotiated.steps & Codec.Step.NoBody) !== 0
        let outcome: Verdict.Verdict | undefined
        const settle = (step: Step, a: Connection.Answer) =>
          Effect.map(verdictOf(state, step, a), (v) => {
            if (a.reply._tag === "Skip" && step === "body") skipping = true
            else if (v._tag !== "Continue" || state.messageDone) outcome = v
            return outcome === undefined
          })
        // Body bytes not sent yet: chunks go out full (65535 bytes) whatever the spool's read
        // sizes, since each one costs a round trip to the filter.
        let carry: Uint8Array = new Uint8Array(0)
        const sendChunk = (chunk: Uint8Array) =>
          Effect.flatMap(exchange(conn, "body", source, Codec.body(chunk)), (a) => settle("body", a))
        const sendBody = (bytes: Uint8Array, flush = false) =>
          Effect.gen(function*() {
            let pending = carry.byteLength === 0 ? bytes : concat(carry, bytes)
            while (!skipping && outcome === undefined && (pending.byteLength >= Codec.maxBodyChunk || (flush && pending.byteLength > 0))) {
              yield* sendChunk(pending.subarray(0, Codec.maxBodyChunk))
              pending = pending.subarray(Codec.maxBodyChunk)
            }
            carry = pending
            return outcome === undefined && !skipping
          })
        const startBody = (block: Uint8Array, end: number) =>
          Effect.gen(function*() {
            const { bodyStart, fields } = Message.split(block.subarray(0, end), leadingSpace)
            for (const f of fields) {
              if (!(yield* settle("header", yield* exchange(conn, "header", source, Codec.header(f.name, f.value))))) return false
            }
            if (!(yield* settle("endOfHeaders", yield* exchange(conn, "endOfHeaders", source, Codec.endOfHeaders())))) return false
            inBody = true
            return yield* sendBody(block.subarray(bodyStart))
          })
        yield* Stream.runForEachWhile(
          Stream.mapError(body, (e) => new Connection.MilterError({ address: where, reason: { _tag: "Unavailable", detail: `reading the message: ${String(e)}` }, cause: e })),
          (chunk) => {
            if (inBody) return sendBody(chunk)
            head = head.byteLength === 0 ? chunk : concat(head, chunk)
            const end = Message.headerEnd(head)
            // A header block that never ends is sent as far as it goes (bounded like HeaderBlock.read).
            if (end === -1 && head.byteLength < maxHeaderBlock) return Effect.succeed(true)
            return startBody(head, end === -1 ? head.byteLength : end)
          }
        )
        if (!inBody && outcome === undefined) yield* startBody(head, head.byteLength)
        if (inBody) yield* sendBody(new Uint8Array(0), true)
        return outcome
      })

    const discarded = () => Verdict.continueWith([MessageEdit.discard(`discarded by milter ${name}`)])

    const onClose = (ctx: Policy.ConnectContext) =>
      Effect.suspend(() => {
        const state = sessions.get(ctx.sessionId)
        if (state === undefined) return Effect.void
        sessions.delete(ctx.sessionId)
        const conn = state.conn
        return (conn === undefined ? Effect.void : Effect.ignore(conn.send([Codec.quit()]))).pipe(Effect.andThen(drop(state)))
      })

    return {
      name,
      observe: options.observe,
      onConnect: (ctx) => guarded(ctx, "connect", () => Effect.succeed(Verdict.Continue)),
      onHelo,
      onMailFrom,
      onRcptTo,
      onData,
      onClose
    } satisfies Policy.Rule
  })

const maxHeaderBlock = 1024 * 1024

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.byteLength + b.byteLength)
  out.set(a)
  out.set(b, a.byteLength)
  return out
}
