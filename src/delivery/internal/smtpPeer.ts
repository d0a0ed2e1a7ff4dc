/**
 * One SMTP peer as the outbound adapters (the smarthost relay and the MX adapter) see it, on
 * nodemailer's `SMTPConnection`: open (connect, EHLO, STARTTLS by policy, optional AUTH), run
 * transactions on it — several, with RSET between them, when a caller reuses the connection —
 * and close it. The outcome of a transaction is data (`Transaction`), never a failure: which
 * recipients the peer accepted, refused, or left undecided.
 *
 * Both adapters share this module so that they map the peer's answers to recipient outcomes the
 * same way: a RCPT refused with 5xx is dead-lettered with the peer's reply, with 4xx retried;
 * the reply to the final dot applies to every accepted recipient; anything that is not the
 * peer's verdict on the message — refused or dropped connections, timeouts, a failed TLS
 * upgrade, refused credentials — is retried.
 */
import type * as Dsn from "../../protocol/Dsn.ts"
import { createRequire } from "node:module"
import type SMTPConnection from "nodemailer/lib/smtp-connection/index.js"
import { isIP } from "node:net"
import { TLSSocket } from "node:tls"
import type { Readable } from "node:stream"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Effect, Redacted, type Stream } from "effect"
import * as DA from "../DeliveryAdapter.ts"
import { fillRetry, fromReply } from "./replyOutcome.ts"

// nodemailer's CommonJS build: its ES build imports node:http as an ES module (for its fetch
// helper), which loads undici, ~15 MiB resident in every server, used or not (see
// internal/nodeHttp.ts). The CommonJS one requires it, which reads nothing.
const SmtpConnection = createRequire(import.meta.url)("nodemailer/lib/smtp-connection") as typeof SMTPConnection

export type StartTlsPolicy =
  /** Upgrade when the peer offers STARTTLS; carry on in plain text when it does not. */
  | "opportunistic"
  /** Refuse to send unless the connection is upgraded (the attempt is retried). */
  | "required"
  /** Never upgrade (a loopback or trusted-network peer). */
  | "disabled"

export interface PeerOptions {
  /** Host name or address to connect to (an address: nodemailer then asks no DNS). */
  readonly host: string
  readonly port: number
  /** TLS from the first byte (SMTPS). */
  readonly implicitTls: boolean
  readonly startTls: StartTlsPolicy
  readonly tls: {
    readonly rejectUnauthorized: boolean
    /** Name for SNI and certificate verification; default `host` when it is a name. */
    readonly servername?: string | undefined
    readonly ca?: string | Buffer | ReadonlyArray<string | Buffer> | undefined
  }
  readonly auth?: { readonly user: string; readonly pass: string | Redacted.Redacted<string> } | undefined
  readonly heloName: string
  /** Our address to connect from. */
  readonly localAddress?: string | undefined
  readonly connectTimeoutMs: number
  readonly greetingTimeoutMs: number
  readonly socketTimeoutMs: number
}

type SmtpError = SMTPConnection.SMTPError & {
  readonly recipient?: string | undefined
  readonly rejectedErrors?: ReadonlyArray<SMTPConnection.SMTPError & { readonly recipient?: string | undefined }> | undefined
}

/** An open connection. `closed` turns true when the socket ends or fails. */
export interface Peer {
  /** `address:port` as dialled. */
  readonly where: string
  /** The host's name (the MX name for an address found through it): a bounce's `Remote-MTA`. */
  readonly name: string
  readonly connection: SMTPConnection
  /** The EHLO keywords the peer announced (upper case: `SMTPUTF8`, `8BITMIME`, `SIZE`...). */
  readonly extensions: ReadonlySet<string>
  readonly secure: boolean
  /**
   * Under TLS, whether the certificate chains to a trusted CA and is valid for `name` (checked
   * even when the policy does not refuse a bad one: MTA-STS testing mode reports it); undefined
   * without TLS.
   */
  readonly certificate: { readonly valid: boolean; readonly error: string | undefined } | undefined
  readonly closed: () => boolean
  /** Transactions run on this connection so far. */
  transactions: number
}

/** Why a peer could not be opened: the path, never the message. */
export interface OpenFailure {
  readonly _tag: "OpenFailure"
  /** `connect`: no TCP session or no greeting; `greeting`: the peer refused us; `tls`, `auth`: policy or credentials. */
  readonly stage: "connect" | "greeting" | "tls" | "auth"
  readonly where: string
  readonly detail: string
}

export type Transaction =
  | { readonly _tag: "Sent"; readonly info: SMTPConnection.SentMessageInfo }
  | { readonly _tag: "Refused"; readonly error: SmtpError }
  /** `stale`: a reused connection failed before the transaction began (RSET): nothing was sent. */
  | { readonly _tag: "Failed"; readonly error: SmtpError | Error; readonly stale?: boolean | undefined }

/** Errors that carry the peer's verdict on this message (as opposed to the path to the peer). */
const verdictCodes = new Set(["EENVELOPE", "EMESSAGE"])

/**
 * The keywords of the peer's EHLO reply. nodemailer 10.6 has no public API for them: it keeps
 * them in the private `_supportedExtensions` (which it reads itself for SIZE, 8BITMIME, SMTPUTF8,
 * DSN) and the reply's lines in `_ehloLines`. Reading those is the only way to learn before MAIL
 * whether a message that needs an extension can go, which RFC 6531/6152 require us to know; if a
 * later nodemailer renames them, the set comes out empty and such messages fail for good
 * (5.6.7/5.6.3) rather than go out downgraded — the safe direction.
 */
const extensionsOf = (connection: SMTPConnection): ReadonlySet<string> => {
  const c = connection as unknown as { readonly _supportedExtensions?: ReadonlyArray<string>; readonly _ehloLines?: ReadonlyArray<string> }
  // _ehloLines: the reply's lines without their code; the keyword is the first word (MT-PRIORITY, which nodemailer does not know).
  const keywords = [...(c._supportedExtensions ?? []), ...(c._ehloLines ?? []).map((line) => line.split(/\s+/)[0] ?? "")]
  return new Set(keywords.filter((k) => k !== "").map((e) => e.toUpperCase()))
}

/**
 * Runs `f` with `parameter` appended to the MAIL FROM command nodemailer writes meanwhile: it has
 * no option for parameters it does not know (MT-PRIORITY). `SMTPConnection.send` writes MAIL
 * before it returns, so the command cannot escape the window.
 */
const withMailParameter = (connection: SMTPConnection, parameter: string | undefined, f: () => void): void => {
  if (parameter === undefined) return f()
  const c = connection as unknown as { _sendCommand: (command: string, ...rest: Array<unknown>) => void }
  const original = c._sendCommand
  c._sendCommand = function(this: unknown, command: string, ...rest: Array<unknown>) {
    return original.call(this, command.startsWith("MAIL FROM:") ? `${command} ${parameter}` : command, ...rest)
  }
  try {
    f()
  } finally {
    c._sendCommand = original
  }
}

const connectionOptions = (o: PeerOptions): SMTPConnection.Options => ({
  host: o.host,
  port: o.port,
  secure: o.implicitTls,
  ignoreTLS: !o.implicitTls && o.startTls === "disabled",
  requireTLS: !o.implicitTls && o.startTls === "required",
  opportunisticTLS: !o.implicitTls && o.startTls === "opportunistic",
  name: o.heloName,
  ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}),
  connectionTimeout: o.connectTimeoutMs,
  greetingTimeout: o.greetingTimeoutMs,
  socketTimeout: o.socketTimeoutMs,
  logger: false,
  tls: {
    rejectUnauthorized: o.tls.rejectUnauthorized,
    // SNI carries names only (RFC 6066): no servername for a peer given by address.
    ...(o.tls.servername !== undefined || isIP(o.host) === 0 ? { servername: o.tls.servername ?? o.host } : {}),
    ...(o.tls.ca !== undefined ? { ca: o.tls.ca as string | Buffer | Array<string | Buffer> } : {})
  }
})

/** The verdict on the peer's certificate, from the TLS socket nodemailer exposes (`_socket`, public in its typings). */
const certificateOf = (connection: SMTPConnection): Peer["certificate"] => {
  const socket = connection._socket
  if (!(socket instanceof TLSSocket)) return undefined
  const error = socket.authorizationError as Error | string | null | undefined
  return { valid: socket.authorized, error: error === null || error === undefined ? undefined : String(error) }
}

/** The stage an error of `connect()` belongs to, from nodemailer's error codes. */
const stageOf = (error: SmtpError | Error): OpenFailure["stage"] => {
  const code = (error as SmtpError).code
  if (code === "ETLS") return "tls"
  // A certificate refused during STARTTLS comes as a socket error (ESOCKET) that keeps the TLS
  // code: DEPTH_ZERO_SELF_SIGNED_CERT, ERR_TLS_CERT_ALTNAME_INVALID, UNABLE_TO_VERIFY_LEAF_SIGNATURE...
  const original = (error as { readonly originalCode?: unknown }).originalCode
  if (typeof original === "string" && /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_/.test(original)) return "tls"
  if (code === "EAUTH") return "auth"
  if (code === "EPROTOCOL" && (error as SmtpError).responseCode !== undefined) return "greeting"
  return "connect"
}

/**
 * Opens a connection and runs the handshake. Interrupting it closes the socket. A peer that is
 * open must be given back with `close` (or `acquireRelease` around `open`).
 */
export const open = (options: PeerOptions): Effect.Effect<Peer, OpenFailure> => {
  const where = `${options.host.includes(":") ? `[${options.host}]` : options.host}:${options.port}`
  return Effect.callback<Peer, OpenFailure>((resume) => {
    const connection = new SmtpConnection(connectionOptions(options))
    let closed = false
    let settled = false
    const fail = (stage: OpenFailure["stage"], detail: string) => {
      if (settled) return
      settled = true
      connection.close()
      resume(Effect.fail({ _tag: "OpenFailure", stage, where, detail }))
    }
    // Errors may come at any time (a late socket reset): a listener stays so they never become
    // an unhandled 'error' event; whoever waits on the connection learns of it through `closed`.
    connection.on("error", (error: SmtpError) => {
      closed = true
      fail(stageOf(error), error.message)
    })
    connection.on("end", () => {
      closed = true
      fail("connect", "connection closed during the handshake")
    })
    const ready = () => {
      if (settled) return
      settled = true
      resume(Effect.succeed({
        where,
        name: options.tls.servername ?? options.host,
        connection,
        extensions: extensionsOf(connection),
        secure: connection.secure,
        certificate: certificateOf(connection),
        closed: () => closed,
        transactions: 0
      }))
    }
    connection.connect((error) => {
      if (error !== undefined && error !== null) return fail(stageOf(error), error.message)
      if (!options.implicitTls && options.startTls === "required" && !connection.secure) {
        return fail("tls", "STARTTLS is required but the connection is not encrypted")
      }
      if (options.auth === undefined) return ready()
      const pass = typeof options.auth.pass === "string" ? options.auth.pass : Redacted.value(options.auth.pass)
      connection.login({ user: options.auth.user, pass }, (loginError) => {
        if (loginError !== undefined && loginError !== null) return fail("auth", loginError.message)
        ready()
      })
    })
    return Effect.sync(() => {
      settled = true
      connection.close()
    })
  })
}

export interface Envelope {
  readonly from: string
  readonly to: ReadonlyArray<string>
  readonly size?: number | undefined
  /** Ask for `BODY=8BITMIME` when the peer offers it. */
  readonly use8BitMime?: boolean | undefined
  /**
   * RFC 3461 parameters, sent when the peer offers DSN: RET/ENVID on MAIL, and NOTIFY/ORCPT on
   * every RCPT of this transaction (nodemailer takes one set per transaction).
   */
  readonly dsn?: Dsn.MailDsn & Dsn.RecipientDsn | undefined
  /** RFC 6710 `MT-PRIORITY` (-9..9), sent when the peer offers it. */
  readonly priority?: number | undefined
}

/** nodemailer's form of `Envelope.dsn` (it xtext-encodes the values itself). */
const nodemailerDsn = (dsn: Dsn.MailDsn & Dsn.RecipientDsn) => ({
  ...(dsn.ret === undefined ? {} : { ret: dsn.ret }),
  ...(dsn.envid === undefined ? {} : { envid: dsn.envid }),
  ...(dsn.notify === undefined ? {} : { notify: [...dsn.notify] }),
  ...(dsn.orcpt === undefined ? {} : { orcpt: `${dsn.orcpt.type};${dsn.orcpt.address}` })
})

/**
 * One transaction (MAIL, RCPT..., DATA) on an open peer; RSET first when the connection has
 * carried one already. The body stream is read once. Never fails: the outcome is data.
 */
export const send = (peer: Peer, envelope: Envelope, body: Stream.Stream<Uint8Array, unknown>): Effect.Effect<Transaction> =>
  Effect.callback<Transaction>((resume) => {
    const connection = peer.connection
    let stream: Readable | undefined
    let settled = false
    const finish = (result: Transaction) => {
      if (settled) return
      settled = true
      connection.removeListener("error", onError)
      connection.removeListener("end", onEnd)
      stream?.destroy()
      resume(Effect.succeed(result))
    }
    // Before MAIL was sent (during RSET) a failure is `stale`: the message never left.
    let started = false
    const onError = (error: Error) => finish({ _tag: "Failed", error, stale: !started })
    const onEnd = () => finish({ _tag: "Failed", error: new Error("connection closed before the transaction completed"), stale: !started })
    connection.on("error", onError)
    connection.on("end", onEnd)
    if (peer.closed()) {
      finish({ _tag: "Failed", error: new Error("connection already closed"), stale: true })
      return
    }
    const transaction = () => {
      started = true
      peer.transactions++
      // nodemailer takes a Node stream: the body Stream is read as one, its failure an 'error'.
      const readable = NodeStream.toReadableNever(body)
      stream = readable
      const priority = envelope.priority !== undefined && peer.extensions.has("MT-PRIORITY") ? `MT-PRIORITY=${envelope.priority}` : undefined
      withMailParameter(connection, priority, () => connection.send(
        {
          from: envelope.from,
          to: [...envelope.to],
          ...(envelope.size !== undefined ? { size: envelope.size } : {}),
          use8BitMime: envelope.use8BitMime ?? true,
          ...(envelope.dsn === undefined ? {} : { dsn: nodemailerDsn(envelope.dsn) })
        } as Parameters<typeof connection.send>[0],
        readable,
        (error, info) => {
          if (error !== null) finish(verdictCodes.has(error.code ?? "") ? { _tag: "Refused", error } : { _tag: "Failed", error })
          else finish({ _tag: "Sent", info })
        }
      ))
    }
    if (peer.transactions === 0) return transaction()
    connection.reset((error) => (error !== null ? finish({ _tag: "Failed", error, stale: !started }) : transaction()))
    return Effect.sync(() => {
      settled = true
      stream?.destroy()
      connection.close()
    })
  })

/** QUIT and close; safe to call on a connection that is already gone. */
export const close = (peer: Peer): Effect.Effect<void> =>
  Effect.sync(() => {
    if (peer.closed()) return
    try {
      peer.connection.quit()
    } catch {
      peer.connection.close()
    }
  })

/** Whether a transaction left the connection fit for another one (only a clean finish does). */
export const reusable = (peer: Peer, result: Transaction): boolean => !peer.closed() && result._tag !== "Failed"

/**
 * Per-recipient outcomes of a transaction, with `where` naming the peer in the replies kept for
 * the queue and bounces.
 */
export const outcomes = (
  recipients: ReadonlyArray<{ readonly rcpt: string }>,
  where: string,
  result: Transaction
): ReadonlyArray<DA.RecipientOutcome> => {
  const decided = new Map<string, DA.RecipientOutcome>()
  const perRecipient = (errors: ReadonlyArray<SMTPConnection.SMTPError & { readonly recipient?: string | undefined }> | undefined) => {
    for (const e of errors ?? []) {
      if (e.recipient !== undefined) decided.set(e.recipient, fromReply(e.recipient, e.responseCode ?? 0, e.response ?? e.message))
    }
  }
  switch (result._tag) {
    case "Sent": {
      perRecipient(result.info.rejectedErrors)
      for (const rcpt of result.info.accepted) decided.set(rcpt, DA.ok(rcpt, `${where} said: ${result.info.response}`))
      return fillRetry(recipients, decided, `${where} gave no answer for this recipient`)
    }
    case "Refused": {
      const error = result.error
      perRecipient(error.rejectedErrors)
      if (error.responseCode === 530) {
        // "Authentication required" / "must issue STARTTLS first": our configuration, not the message.
        return fillRetry(recipients, decided, `${where} said: ${error.response ?? error.message}`)
      }
      if (error.responseCode !== undefined) {
        // MAIL, DATA or the final dot refused: the reply is the verdict for everyone left.
        for (const { rcpt } of recipients) {
          if (!decided.has(rcpt)) decided.set(rcpt, fromReply(rcpt, error.responseCode, `${where} said: ${error.response ?? error.message}`))
        }
      } else if (error.code === "EMESSAGE" && error.command === "MAIL FROM") {
        // nodemailer refuses locally a message over the SIZE the peer announced.
        for (const { rcpt } of recipients) decided.set(rcpt, DA.reject(rcpt, `552 5.3.4 ${where}: ${error.message}`))
      }
      return fillRetry(recipients, decided, `${where}: ${error.message}`)
    }
    case "Failed":
      return fillRetry(recipients, decided, `delivery to ${where} failed: ${result.error.message}`)
  }
}
