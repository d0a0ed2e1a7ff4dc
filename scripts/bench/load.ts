/**
 * The benchmark's SMTP load generator: plain SMTP over raw `net` sockets, in the manner of
 * Postfix's smtp-source, so that every target in `npm run bench` is driven by the same client.
 *
 * Each of N sessions runs strictly one command at a time (no PIPELINING): read 220, EHLO (or
 * HELO), then per message MAIL FROM, one RCPT TO, DATA, the body and "."; "persist" reuses the
 * connection for the next message, "conn" sends QUIT and reconnects. Every reply code is checked;
 * a wrong code, an unparsable reply, a dropped connection or unsolicited data counts as an error
 * (the message attempt is lost and the session reconnects; no RSET). A run is bounded by a message
 * count (attempts, shared by all sessions) and by a wall-clock cap.
 *
 * Usable as a module (`runLoad`) or as a process, which is how scripts/bench.ts runs it so that
 * the generator's CPU is separate from the orchestrator's:
 *   node scripts/bench/load.ts --port 2560 --size 1024 --sessions 10 --count 20000 --mode persist
 * prints one JSON line (LoadResult) on stdout. It only ever connects to 127.0.0.1.
 *
 * It is written for low CPU per message, because on a 2-core machine it shares the CPU with the
 * server under test: commands and the message are pre-encoded Buffers written as-is, replies are
 * read through `onread` into a reused buffer and parsed as bytes (no strings, no per-reply
 * allocation on the happy path), and Nagle is off so a command never waits for a delayed ACK.
 */
import net from "node:net"
import { parseArgs } from "node:util"

export type Mode = "persist" | "conn"

export interface LoadOptions {
  readonly port: number
  readonly size: number
  readonly sessions: number
  readonly count: number
  readonly mode: Mode
  readonly maxSeconds: number
  /** "HELO" like smtp-source, or "EHLO" (the default; what real MTAs send). */
  readonly greeting: "EHLO" | "HELO"
  readonly rcptDomain: string
  /** Header fields put on top of every message (a DKIM-Signature made once for the run). */
  readonly prefix?: string
  /**
   * Loopback source addresses the connections are spread over, in turn (127.0.0.1, .2, …;
   * default 1): a server's per-IP connection cap counts a closed connection until it notices the
   * close, so 100 sessions reconnecting from one address for every message would run into a cap
   * of 100; and one address's local ports run out at one message per connection (TIME_WAIT).
   */
  readonly sources?: number
}

export interface LoadError {
  readonly stage: string
  readonly detail: string
}

export interface LoadResult {
  readonly ok: number
  readonly failed: number
  readonly errors: number
  readonly errorSamples: ReadonlyArray<LoadError>
  readonly timedOut: boolean
  readonly seconds: number
  readonly msgsPerSec: number
  readonly connections: number
  /** CPU this process used during the run, in seconds (user + system). */
  readonly cpuSeconds: number
  readonly bodyBytes: number
}

const HOST = "127.0.0.1"
const MAX_SAMPLES = 5

/**
 * Headers + a body of `size` bytes in 80-byte lines (78 characters + CRLF) + the terminating dot.
 * No line starts with "." so no dot-stuffing is needed. Sizes whose remainder modulo 80 is 1 or 2
 * cannot end in a whole line and are rounded to the nearest whole line.
 */
export const buildMessage = (size: number, rcpt: string, prefix = ""): { readonly wire: Buffer; readonly bodyBytes: number } => {
  const headers = prefix +
    "From: <load@load.test>\r\n" +
    `To: <${rcpt}>\r\n` +
    "Subject: incoming bench\r\n" +
    "Message-ID: <bench@load.test>\r\n" +
    "Date: Sat, 21 Nov 2026 00:00:00 +0000\r\n" +
    "\r\n"
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  const lines: Array<string> = []
  let left = size
  let i = 0
  while (left >= 3) {
    const n = Math.min(78, left - 2)
    const start = i % alphabet.length
    lines.push((alphabet + alphabet + alphabet).slice(start, start + n) + "\r\n")
    left -= n + 2
    i++
  }
  const body = lines.join("")
  return { wire: Buffer.from(headers + body + ".\r\n", "latin1"), bodyBytes: body.length }
}

// Reply parsing states: what the session waits for, and hence which code it expects.
const GREETING = 0
const HELLO = 1
const MAIL = 2
const RCPT = 3
const DATA = 4
const BODY = 5
const QUIT = 6
const STAGE_NAMES = ["greeting", "hello", "mail", "rcpt", "data", "body", "quit"] as const

/** The reply code each stage accepts: exact for 220/354, any 2xx otherwise. */
const accepts = (stage: number, code: number): boolean => {
  switch (stage) {
    case GREETING:
      return code === 220
    case DATA:
      return code === 354
    default:
      return code >= 200 && code < 300
  }
}

const LF = 0x0a
const DASH = 0x2d
const SPACE = 0x20
const CR = 0x0d

/** Reply text for error reports only (the happy path never decodes a reply). */
const text = (data: Uint8Array, from: number, to: number): string =>
  Buffer.from(data.subarray(from, Math.min(to, from + 200))).toString("latin1")

const digit = (b: number | undefined): number => (b !== undefined && b >= 0x30 && b <= 0x39 ? b - 0x30 : -1)

export const runLoad = (opts: LoadOptions): Promise<LoadResult> =>
  new Promise((resolve) => {
    const rcpt = `user@${opts.rcptDomain}`
    const message = buildMessage(opts.size, rcpt, opts.prefix)
    const cmdHello = Buffer.from(`${opts.greeting} load.test\r\n`, "latin1")
    const cmdMail = Buffer.from("MAIL FROM:<load@load.test>\r\n", "latin1")
    const cmdRcpt = Buffer.from(`RCPT TO:<${rcpt}>\r\n`, "latin1")
    const cmdData = Buffer.from("DATA\r\n", "latin1")
    const cmdQuit = Buffer.from("QUIT\r\n", "latin1")

    let remaining = opts.count
    let ok = 0
    let failed = 0
    let errors = 0
    let connections = 0
    let active = 0
    let inFlight = 0 // claimed message slots not yet ended as ok or failed
    let finished = false
    const samples: Array<LoadError> = []
    const sockets = new Set<net.Socket>()
    // One read buffer for every socket: `onread` callbacks run one at a time and `onBytes` copies
    // what it keeps, so sharing is safe and spares an allocation per connection.
    const readBuffer = Buffer.allocUnsafe(64 * 1024)
    const cpu0 = process.cpuUsage()
    const t0 = process.hrtime.bigint()

    const claim = (): boolean => {
      if (remaining <= 0 || finished) return false
      remaining--
      inFlight++
      return true
    }

    const noteError = (stage: number, detail: string): void => {
      errors++
      if (samples.length < MAX_SAMPLES) samples.push({ stage: STAGE_NAMES[stage] ?? "?", detail })
    }

    const finish = (timedOut: boolean): void => {
      if (finished) return
      finished = true
      clearTimeout(cap)
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const cpu = process.cpuUsage(cpu0)
      // Anything still open (a time cap) goes now.
      for (const s of sockets) s.destroy()
      resolve({
        ok,
        failed,
        errors,
        errorSamples: samples,
        timedOut,
        seconds,
        msgsPerSec: seconds > 0 ? ok / seconds : 0,
        connections,
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        bodyBytes: message.bodyBytes
      })
    }

    const cap = setTimeout(() => {
      // Attempts never started are not failures; attempts cut off mid-transaction are.
      failed += inFlight
      finish(true)
    }, opts.maxSeconds * 1000)

    const sessionDone = (): void => {
      active--
      if (active === 0) finish(false)
    }

    /**
     * One session: a chain of connections. `startConnection` is called with a claimed message
     * slot (`holding`); every claimed slot ends as ok or failed, so ok + failed = count.
     */
    // Every connection takes the next source address in turn. A session pinned to one address
    // ran out of its ports at one message per connection: each closed connection holds its port
    // in TIME_WAIT for 60 s, and at ~500 connections/s a session needs more than the ~28,000 of
    // the local port range; bind() then searched the range for a free one at a full core while
    // the server idled (runs stalled for 5–20 s).
    let sourceTurn = 0
    const nextSource = (): string => `127.0.0.${(sourceTurn++ % (opts.sources ?? 1)) + 1}`

    const runSession = (): void => {
      if (!claim()) {
        sessionDone()
        return
      }
      startConnection()

      function startConnection(): void {
        connections++
        let stage = GREETING
        let holding = true // the current connection owns a claimed message slot
        let closedByUs = false
        let carry: Buffer | undefined
        const socket = net.connect({
          host: HOST,
          port: opts.port,
          localAddress: nextSource(),
          noDelay: true,
          onread: {
            buffer: readBuffer,
            callback: (n: number, buf: Uint8Array): boolean => {
              onBytes(buf, n)
              return true
            }
          }
        })
        sockets.add(socket)

        const abandon = (detail: string): void => {
          if (closedByUs || finished) return
          closedByUs = true
          noteError(stage, detail)
          socket.destroy()
          sockets.delete(socket)
          if (holding) {
            holding = false
            failed++
            inFlight--
          }
          // A fresh connection for the next message, as smtp-source would.
          if (claim()) startConnection()
          else sessionDone()
        }

        socket.on("error", (err: NodeJS.ErrnoException) => abandon(`socket error ${err.code ?? err.message}`))
        socket.on("close", () => {
          sockets.delete(socket)
          abandon("connection closed by server")
        })

        const send = (next: number, bytes: Buffer): void => {
          stage = next
          socket.write(bytes)
        }

        const startMessage = (): void => send(MAIL, cmdMail)

        /** The reply to the command in flight was the expected one: send the next command. */
        const onReply = (): void => {
          switch (stage) {
            case GREETING:
              send(HELLO, cmdHello)
              return
            case HELLO:
              startMessage()
              return
            case MAIL:
              send(RCPT, cmdRcpt)
              return
            case RCPT:
              send(DATA, cmdData)
              return
            case DATA:
              send(BODY, message.wire)
              return
            case BODY:
              ok++
              inFlight--
              holding = false
              if (opts.mode === "persist" && claim()) {
                holding = true
                startMessage()
              } else {
                send(QUIT, cmdQuit)
              }
              return
            case QUIT:
              // Close and move on without waiting for the server's FIN, as smtp-source does
              // (close(2) after the 221); nothing more is due on this connection.
              closedByUs = true
              socket.destroy()
              sockets.delete(socket)
              if (opts.mode === "conn" && claim()) startConnection()
              else sessionDone()
              return
          }
        }

        /** Splits the received bytes into lines and hands each complete reply to `onReply`. */
        const onBytes = (chunk: Uint8Array, n: number): void => {
          if (closedByUs) return
          // A view of just this read (the shared buffer holds stale bytes past n), plus any
          // partial line left over from the previous read.
          const data: Uint8Array = carry === undefined ? chunk.subarray(0, n) : Buffer.concat([carry, chunk.subarray(0, n)])
          const len = data.length
          carry = undefined
          let start = 0
          while (start < len) {
            const lf = data.indexOf(LF, start)
            if (lf === -1) break
            const lineStart = start
            const lineEnd = lf > lineStart && data[lf - 1] === CR ? lf - 1 : lf
            const lineLen = lineEnd - lineStart
            const d0 = digit(data[lineStart])
            const d1 = digit(data[lineStart + 1])
            const d2 = digit(data[lineStart + 2])
            const sep = data[lineStart + 3]
            start = lf + 1
            if (lineLen < 3 || d0 < 1 || d1 < 0 || d2 < 0 || (lineLen > 3 && sep !== SPACE && sep !== DASH)) {
              abandon(`malformed reply "${text(data, lineStart, lineEnd)}"`)
              return
            }
            if (lineLen > 3 && sep === DASH) continue // a continuation line of a multi-line reply
            const code = d0 * 100 + d1 * 10 + d2
            if (start < len) {
              // We never pipeline, so the server cannot legitimately send a second reply.
              abandon(`unsolicited data after "${text(data, lineStart, lineEnd)}"`)
              return
            }
            if (!accepts(stage, code)) {
              abandon(`unexpected reply "${text(data, lineStart, lineEnd)}"`)
              return
            }
            onReply()
            return
          }
          if (start < len) carry = Buffer.from(data.subarray(start, len)) // the chunk buffer is reused
        }
      }
    }

    active = opts.sessions
    for (let i = 0; i < opts.sessions; i++) runSession()
  })

const positiveInt = (name: string, value: string | undefined, fallback?: number): number => {
  if (value === undefined && fallback !== undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer (got ${String(value)})`)
  return n
}

export const parseLoadArgs = (argv: ReadonlyArray<string>): LoadOptions => {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      port: { type: "string" },
      size: { type: "string" },
      sessions: { type: "string" },
      count: { type: "string" },
      mode: { type: "string", default: "persist" },
      "max-seconds": { type: "string", default: "20" },
      helo: { type: "boolean", default: false },
      "rcpt-domain": { type: "string", default: "bench.test" },
      sources: { type: "string", default: "1" },
      /** PEM file: sign the message with it (d=load.test, s=bench) once, before the run. */
      "dkim-key": { type: "string" }
    },
    strict: true
  })
  const mode = values.mode
  if (mode !== "persist" && mode !== "conn") throw new Error(`--mode must be persist or conn (got ${mode})`)
  const port = positiveInt("port", values.port)
  if (port > 65535) throw new Error("--port out of range")
  const maxSeconds = Number(values["max-seconds"])
  if (!(maxSeconds > 0 && maxSeconds <= 600)) throw new Error("--max-seconds must be in (0, 600]")
  return {
    port,
    size: positiveInt("size", values.size),
    sessions: positiveInt("sessions", values.sessions),
    count: positiveInt("count", values.count),
    mode,
    maxSeconds,
    greeting: values.helo ? "HELO" : "EHLO",
    rcptDomain: values["rcpt-domain"],
    sources: Math.min(250, positiveInt("sources", values.sources)),
    ...(values["dkim-key"] !== undefined ? { dkimKey: values["dkim-key"] } : {})
  }
}

/** The DKIM-Signature of the run's message (mailauth's signer, rsa-sha256 relaxed/relaxed). */
export const dkimPrefix = async (opts: LoadOptions, keyFile: string): Promise<string> => {
  const { wire } = buildMessage(opts.size, `user@${opts.rcptDomain}`)
  const message = wire.subarray(0, wire.length - 3) // without the terminating dot
  const { dkimSign } = await import("mailauth")
  const { readFileSync } = await import("node:fs")
  const signed = await dkimSign(message, {
    canonicalization: "relaxed/relaxed",
    signatureData: [{ signingDomain: "load.test", selector: "bench", privateKey: readFileSync(keyFile, "utf8") }]
  } as never)
  return signed.signatures
}

if (import.meta.main) {
  try {
    const { dkimKey, ...opts } = parseLoadArgs(process.argv.slice(2)) as LoadOptions & { dkimKey?: string }
    const result = await runLoad(dkimKey === undefined ? opts : { ...opts, prefix: await dkimPrefix(opts, dkimKey) })
    process.stdout.write(JSON.stringify(result) + "\n")
  } catch (err) {
    process.stderr.write(`load: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 2
  }
}
