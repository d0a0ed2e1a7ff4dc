/**
 * A real DNS server for tests: dnsmasq (Debian `dnsmasq-base`) on a free loopback port, serving
 * the records the test gives and nothing else (`--no-resolv --no-hosts`, authoritative for
 * `.test` so unknown names there are NXDOMAIN). Started and stopped by PID with the test's
 * scope; when dnsmasq is not installed, `available` is false and tests skip saying so.
 */
import { spawn } from "node:child_process"
import { createSocket } from "node:dgram"
import { existsSync } from "node:fs"
import { createServer } from "node:net"
import { Effect, type Scope } from "effect"
import * as Child from "./child.ts"

export const binary = "/usr/sbin/dnsmasq"
export const available = existsSync(binary)
export const skipMessage = `dnsmasq is not installed (${binary}; Debian package dnsmasq-base): tests against a real DNS server are skipped`

export interface Records {
  readonly A?: Readonly<Record<string, string>>
  readonly AAAA?: Readonly<Record<string, string>>
  /** name → TXT records (each split into 255-byte character-strings). */
  readonly TXT?: Readonly<Record<string, ReadonlyArray<string>>>
  readonly MX?: Readonly<Record<string, ReadonlyArray<{ readonly exchange: string; readonly priority: number }>>>
  /** reverse name (`10.2.0.192.in-addr.arpa`) → host name. */
  readonly PTR?: Readonly<Record<string, string>>
}

export interface Dnsmasq {
  readonly port: number
  /** `127.0.0.1:PORT`, for `[dns] servers`. */
  readonly server: string
  readonly pid: number
}

/** A port free for both UDP and TCP on 127.0.0.1 right now. */
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const tcp = createServer()
    tcp.once("error", reject)
    tcp.listen(0, "127.0.0.1", () => {
      const port = (tcp.address() as { port: number }).port
      const udp = createSocket("udp4")
      udp.once("error", () => tcp.close(() => freePort().then(resolve, reject)))
      udp.bind(port, "127.0.0.1", () => udp.close(() => tcp.close(() => resolve(port))))
    })
  })

/** dnsmasq splits `--txt-record` on commas (each part one character-string): texts must not contain one. */
const part = (s: string) => {
  if (s.includes(",")) throw new Error(`a TXT text for dnsmasq cannot contain a comma: ${s}`)
  return s
}

export const args = (port: number, records: Records): Array<string> => [
  "--keep-in-foreground",
  `--port=${port}`,
  "--listen-address=127.0.0.1",
  "--bind-interfaces",
  "--no-resolv",
  "--no-hosts",
  "--conf-file=/dev/null",
  "--pid-file=",
  "--user=root",
  "--log-facility=-",
  "--local=/test/",
  "--local-ttl=60",
  ...Object.entries(records.A ?? {}).map(([name, ip]) => `--host-record=${name},${ip}`),
  ...Object.entries(records.AAAA ?? {}).map(([name, ip]) => `--host-record=${name},${ip}`),
  ...Object.entries(records.TXT ?? {}).flatMap(([name, texts]) =>
    texts.map((text) => `--txt-record=${name},${(text.match(/.{1,255}/g) ?? [""]).map(part).join(",")}`)
  ),
  ...Object.entries(records.MX ?? {}).flatMap(([name, mxs]) => mxs.map((mx) => `--mx-host=${name},${mx.exchange},${mx.priority}`)),
  ...Object.entries(records.PTR ?? {}).map(([name, host]) => `--ptr-record=${name},${host}`)
]

/** Starts dnsmasq serving `records`; stopped (SIGTERM to its PID, then SIGKILL) when the scope closes. */
export const start = (records: Records): Effect.Effect<Dnsmasq, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const port = await freePort()
        const child = spawn(binary, args(port, records), { stdio: ["ignore", "pipe", "pipe"] })
        await new Promise<void>((resolve, reject) => {
          let out = ""
          const onData = (b: Buffer) => {
            out += b.toString()
            if (/started, version/.test(out)) resolve()
          }
          child.stdout!.on("data", onData)
          child.stderr!.on("data", onData)
          child.once("exit", (code) => reject(new Error(`dnsmasq exited (${code}) before serving:\n${out}`)))
          setTimeout(() => reject(new Error(`dnsmasq did not start within 5 s:\n${out}`)), 5_000).unref()
        })
        return { child, port }
      },
      catch: (e) => e instanceof Error ? e : new Error(String(e))
    }),
    ({ child }) => Child.stop(child)
  ).pipe(Effect.map(({ child, port }) => ({ port, server: `127.0.0.1:${port}`, pid: child.pid! })))

