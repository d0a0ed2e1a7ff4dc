/**
 * Shared helpers for the SMTP tests: a raw socket that does not wait for a greeting (early
 * talkers, connection refusals), waiting for a delivery by id in a layer shared by several
 * tests, the enhanced-status-code check, and a throwaway self-signed certificate.
 */
import { execFileSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { connect as netConnect, type Socket } from "node:net"
import { join } from "node:path"
import { Effect, PubSub, type Scope } from "effect"
import { Captured, type SmtpClient, SmtpClient as SmtpClientModule } from "../../src/testing/index.ts"
import { Telemetry, type TelemetryEvent } from "../../src/telemetry/Telemetry.ts"

export interface RawSocket {
  readonly socket: Socket
  /** Everything the server sent so far. */
  readonly received: () => string
  /** Completes once the server's output matches `re` (fails after `timeoutMs`). */
  readonly waitFor: (re: RegExp, timeoutMs?: number) => Effect.Effect<string, Error>
  /** Completes when the connection is closed. */
  readonly closed: Effect.Effect<void>
}

/** A plain TCP connection that hands itself out as soon as it is connected (before any greeting). */
export const raw = (options: { readonly port: number; readonly host?: string; readonly localAddress?: string }) =>
  Effect.acquireRelease(
    Effect.callback<RawSocket, Error>((resume) => {
      const socket = netConnect({
        port: options.port,
        host: options.host ?? "127.0.0.1",
        ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {})
      })
      let text = ""
      let isClosed = false
      const listeners = new Set<() => void>()
      const notify = () => {
        for (const l of [...listeners]) l()
      }
      socket.setEncoding("utf8")
      socket.on("data", (chunk: string) => {
        text += chunk
        notify()
      })
      socket.on("close", () => {
        isClosed = true
        notify()
      })
      socket.on("error", () => undefined)
      const waitFor = (re: RegExp, timeoutMs = 5_000) =>
        Effect.callback<string, Error>((r) => {
          const check = () => {
            if (re.test(text)) {
              listeners.delete(check)
              r(Effect.succeed(text))
            } else if (isClosed) {
              listeners.delete(check)
              r(Effect.fail(new Error(`closed before ${re} matched; got ${JSON.stringify(text)}`)))
            }
          }
          listeners.add(check)
          check()
          return Effect.sync(() => listeners.delete(check))
        }).pipe(Effect.timeoutOrElse({
          duration: timeoutMs,
          orElse: () => Effect.fail(new Error(`timed out waiting for ${re}; got ${JSON.stringify(text)}`))
        }))
      const closed = Effect.callback<void>((r) => {
        const check = () => {
          if (isClosed) {
            listeners.delete(check)
            r(Effect.void)
          }
        }
        listeners.add(check)
        check()
        return Effect.sync(() => listeners.delete(check))
      })
      socket.once("connect", () => resume(Effect.succeed({ socket, received: () => text, waitFor, closed })))
      socket.once("error", (e) => resume(Effect.fail(e)))
    }),
    (r) => Effect.sync(() => r.socket.destroy())
  )

/** Waits (bounded) until the delivered message with this queue id shows up in the capturing adapter. */
export const awaitDeliveredId = (id: string, timeoutMs = 5_000) =>
  Effect.gen(function*() {
    let n = 1
    while (true) {
      const all = yield* Captured.use((c) => c.awaitDelivered(n))
      const found = all.find((m) => m.id === id)
      if (found !== undefined) return found
      n = all.length + 1
    }
  }).pipe(Effect.timeoutOrElse({
    duration: timeoutMs,
    orElse: () => Effect.die(new Error(`message ${id} was not delivered within ${timeoutMs} ms`))
  }))

/** Extracts the queue id from `250 2.0.0 queued as <id>`. */
export const queuedId = (reply: SmtpClient.Reply): string => {
  const m = /^2\.0\.0 queued as ([0-9A-Z]{16})$/.exec(reply.text)
  if (reply.code !== 250 || m === null) throw new Error(`not a queued reply: ${reply.code} ${reply.text}`)
  return m[1]!
}

/**
 * One transaction on an open client (after EHLO): MAIL, each RCPT, DATA and the body. Returns
 * the reply to the final dot. `body` is sent as is (no dot-stuffing, no line-ending changes).
 */
export const transaction = (
  c: SmtpClient.SmtpClient,
  o: { readonly from: string; readonly to: ReadonlyArray<string>; readonly body: string | Buffer }
) =>
  Effect.gen(function*() {
    const mail = yield* c.command(`MAIL FROM:<${o.from}>`)
    if (mail.code !== 250) return mail
    for (const rcpt of o.to) {
      const r = yield* c.command(`RCPT TO:<${rcpt}>`)
      if (r.code !== 250) return r
    }
    const data = yield* c.command("DATA")
    if (data.code !== 354) return data
    yield* c.write(o.body)
    yield* c.write(".\r\n")
    return yield* c.read
  })

export const simpleBody = (subject: string, text = "hello") =>
  `From: a@sender.test\r\nTo: user@example.test\r\nSubject: ${subject}\r\n\r\n${text}\r\n`

/** A reply line carrying exactly one RFC 3463 enhanced status code whose class matches the reply. */
const oneEnhancedCode = /^(\d)\d{2}[ -]([245])\.\d{1,3}\.\d{1,3} (?![245]\.\d{1,3}\.\d{1,3}(?:\s|$))/

/** The reply lines (of one reply) that break the one-enhanced-code rule. */
export const enhancedCodeViolations = (lines: ReadonlyArray<string>): ReadonlyArray<string> =>
  lines.filter((line) => {
    const m = oneEnhancedCode.exec(line)
    return m === null || m[1] !== m[2]
  })

/** A subscription to telemetry events taken now; `drain` returns what was published since. */
export const subscribeEvents: Effect.Effect<
  { readonly drain: Effect.Effect<ReadonlyArray<TelemetryEvent>> },
  never,
  Telemetry | Scope.Scope
> = Effect.gen(function*() {
  const sub = yield* Telemetry.use((t) => t.subscribe)
  return { drain: PubSub.takeAll(sub) }
})

/** Polls `check` every 10 ms until it holds or `timeoutMs` passes (for state with no event to await). */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, timeoutMs = 2_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return false
      yield* Effect.sleep(10)
    }
    return true
  })

export const hasOpenssl = (() => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

/** Writes a fresh self-signed certificate and key for `mx.test` into `dir` (openssl CLI). */
export const selfSignedCert = (dir: string): { readonly cert: string; readonly key: string } => {
  const cert = join(dir, "cert.pem")
  const key = join(dir, "key.pem")
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=mx.test", "-addext", "subjectAltName=DNS:mx.test"
  ], { stdio: "ignore" })
  return { cert, key }
}

/** A file that is not a certificate, for the bad-certificate test. */
export const garbageFile = (dir: string, name: string): string => {
  const path = join(dir, name)
  writeFileSync(path, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
  return path
}

/**
 * A whole transaction on a new connection: EHLO, then each command with the reply it must get
 * (code and enhanced code), DATA with a simple body; returns the queue id from the 250.
 */
export const sendVia = (
  port: number,
  commands: ReadonlyArray<readonly [command: string, code: number, enhanced: string]>,
  subject: string
) =>
  Effect.gen(function*() {
    const c = yield* SmtpClientModule.connect({ port })
    yield* c.command("EHLO client.test")
    for (const [command, code, enhanced] of commands) {
      const r = yield* c.command(command)
      if (r.code !== code || !r.text.startsWith(`${enhanced} `)) {
        return yield* Effect.die(new Error(`${command}: expected ${code} ${enhanced}, got ${r.code} ${r.text}`))
      }
    }
    const data = yield* c.command("DATA")
    if (data.code !== 354) return yield* Effect.die(new Error(`DATA: ${data.code} ${data.text}`))
    yield* c.write(`${simpleBody(subject)}.\r\n`)
    return queuedId(yield* c.read)
  })

/** `sendVia`, then the message as the capturing adapter received it. */
export const deliverVia = (
  port: number,
  commands: ReadonlyArray<readonly [command: string, code: number, enhanced: string]>,
  subject: string
) => Effect.flatMap(sendVia(port, commands, subject), (id) => awaitDeliveredId(id))
