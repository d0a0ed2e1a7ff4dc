/**
 * A raw SMTP client that upgrades with STARTTLS and stays open: for tests that look at the
 * certificate a listener presents (verified against a given root) and keep the session to
 * talk on later. Replies are read line by line; a command resolves with its final reply line.
 */
import { connect as netConnect, type Socket } from "node:net"
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from "node:tls"
import { Effect, type Scope } from "effect"

export interface Session {
  /** The certificate presented, and whether it verified against `ca` for `servername`. */
  readonly peer: PeerCertificate
  readonly fingerprint: string
  readonly authorized: boolean
  readonly authorizationError: string | undefined
  /** Sends one line (CRLF added) and resolves with the final reply line. */
  readonly command: (line: string) => Effect.Effect<string, Error>
}

const replies = (socket: Socket | TLSSocket) => {
  let buffer = ""
  const waiting: Array<(line: string) => void> = []
  const ready: Array<string> = []
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString("latin1")
    let i: number
    while ((i = buffer.indexOf("\r\n")) >= 0) {
      const line = buffer.slice(0, i)
      buffer = buffer.slice(i + 2)
      // Only final lines ("250 ", not "250-") end a reply.
      if (/^\d{3}(?: |$)/.test(line)) {
        const w = waiting.shift()
        if (w !== undefined) w(line)
        else ready.push(line)
      }
    }
  }
  socket.on("data", onData)
  return {
    next: () =>
      new Promise<string>((resolve, reject) => {
        const r = ready.shift()
        if (r !== undefined) return resolve(r)
        waiting.push(resolve)
        socket.once("close", () => reject(new Error("connection closed")))
      }),
    detach: () => socket.off("data", onData)
  }
}

/** Connects, says EHLO, upgrades with STARTTLS asking for `servername`, and says EHLO again. */
export const open = (port: number, servername: string, ca: string): Effect.Effect<Session, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const plain = netConnect({ port, host: "127.0.0.1" })
        await new Promise<void>((resolve, reject) => {
          plain.once("connect", resolve)
          plain.once("error", reject)
        })
        const r = replies(plain)
        const send = async (line: string) => {
          plain.write(`${line}\r\n`)
          return r.next()
        }
        await r.next()
        await send("EHLO client.test")
        const go = await send("STARTTLS")
        if (!go.startsWith("220")) throw new Error(`STARTTLS refused: ${go}`)
        r.detach()
        const secure = tlsConnect({ socket: plain, servername, ca, rejectUnauthorized: false })
        await new Promise<void>((resolve, reject) => {
          secure.once("secureConnect", resolve)
          secure.once("error", reject)
        })
        secure.on("error", () => undefined)
        const sr = replies(secure)
        const command = (line: string) =>
          Effect.tryPromise({
            try: async () => {
              secure.write(`${line}\r\n`)
              return sr.next()
            },
            catch: (e) => (e instanceof Error ? e : new Error(String(e)))
          })
        const session: Session = {
          peer: secure.getPeerCertificate(),
          fingerprint: secure.getPeerX509Certificate()!.fingerprint256,
          authorized: secure.authorized,
          authorizationError: secure.authorizationError === null ? undefined : String(secure.authorizationError),
          command
        }
        return { session, secure }
      },
      catch: (e) => (e instanceof Error ? e : new Error(String(e)))
    }),
    ({ secure }) => Effect.sync(() => secure.destroy())
  ).pipe(Effect.flatMap(({ session }) => Effect.flatMap(session.command("EHLO client.test"), () => Effect.succeed(session))))
