/**
 * Let's Encrypt's test CA for tests: Debian's `pebble` on free loopback ports, with a config
 * file and an HTTPS certificate of the test's own (made with openssl), started and stopped by
 * PID with the test's scope. Validation is real unless `alwaysValid` is set: pebble resolves the
 * names through `dnsServer` (a dnsmasq of the test's own) and connects to `httpPort` (HTTP-01)
 * or `tlsPort` (TLS-ALPN-01) there. Nonces are never rejected on purpose (pebble's default
 * rejects 5%), so a test's timing does not depend on retries, and no authorization is reused, so
 * every order is validated.
 */
import { execFileSync, spawn } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { request } from "node:https"
import { createServer } from "node:net"
import { join } from "node:path"
import { Effect, type Scope } from "effect"
import * as Child from "./child.ts"

export const binary = "/usr/bin/pebble"
export const available = existsSync(binary)
export const skipMessage = `pebble is not installed (${binary}; Debian package pebble): the ACME tests against a real CA are skipped`

export interface PebbleOptions {
  /** Where pebble keeps its own files (config, HTTPS certificate). */
  readonly dir: string
  /** The port pebble validates HTTP-01 against. */
  readonly httpPort: number
  /** The port pebble validates TLS-ALPN-01 against. */
  readonly tlsPort: number
  /** `127.0.0.1:PORT` of a DNS server for the validation lookups. */
  readonly dnsServer?: string | undefined
  /** Accept every challenge without looking (PEBBLE_VA_ALWAYS_VALID). */
  readonly alwaysValid?: boolean | undefined
  /** Lifetime of the certificates it issues, in seconds. */
  readonly validitySeconds?: number | undefined
  /** The ACME and management ports (default: free ones), to bring a stopped CA back at the same address. */
  readonly ports?: { readonly acme: number; readonly management: number } | undefined
}

export interface Pebble {
  readonly directory: string
  /** PEM of pebble's own HTTPS certificate: `directory_ca`. */
  readonly httpsCaFile: string
  /** PEM of the root that issued certificates chain to (regenerated at each start). */
  readonly root: string
  readonly pid: number
  readonly ports: { readonly acme: number; readonly management: number }
  /** Stops the CA (SIGTERM), for tests of a CA that went away; the scope's end is then a no-op. */
  readonly stop: Effect.Effect<void>
}

/** A TCP port free on 127.0.0.1 right now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })

const get = (url: string, ca: string) =>
  new Promise<string>((resolve, reject) => {
    const req = request(url, { ca }, (res) => {
      let body = ""
      res.on("data", (c: Buffer) => (body += c.toString()))
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode}`))))
    })
    req.once("error", reject)
    req.end()
  })


export const start = (options: PebbleOptions): Effect.Effect<Pebble, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const cert = join(options.dir, "pebble-https.pem")
        const key = join(options.dir, "pebble-https.key")
        execFileSync("openssl", [
          "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
          "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"
        ], { stdio: "ignore" })
        const [acmePort, managementPort] = options.ports === undefined
          ? [await freePort(), await freePort()]
          : [options.ports.acme, options.ports.management]
        const config = join(options.dir, "pebble.json")
        writeFileSync(config, JSON.stringify({
          pebble: {
            listenAddress: `127.0.0.1:${acmePort}`,
            managementListenAddress: `127.0.0.1:${managementPort}`,
            certificate: cert,
            privateKey: key,
            httpPort: options.httpPort,
            tlsPort: options.tlsPort,
            ocspResponderURL: "",
            externalAccountBindingRequired: false,
            ...(options.validitySeconds !== undefined ? { certificateValidityPeriod: options.validitySeconds } : {})
          }
        }))
        const child = spawn(binary, ["-config", config, ...(options.dnsServer !== undefined ? ["-dnsserver", options.dnsServer] : [])], {
          stdio: ["ignore", "pipe", "pipe"],
          env: {
            PATH: process.env.PATH ?? "/usr/bin:/bin",
            PEBBLE_VA_NOSLEEP: "1",
            PEBBLE_WFE_NONCEREJECT: "0",
            // Every order is validated afresh (pebble reuses half of the valid authorizations by default).
            PEBBLE_AUTHZREUSE: "0",
            ...(options.alwaysValid === true ? { PEBBLE_VA_ALWAYS_VALID: "1" } : {})
          }
        })
        await new Promise<void>((resolve, reject) => {
          let out = ""
          const onData = (b: Buffer) => {
            out += b.toString()
            if (/ACME directory available/.test(out)) resolve()
          }
          child.stdout!.on("data", onData)
          child.stderr!.on("data", onData)
          child.once("exit", (code) => reject(new Error(`pebble exited (${code}) before serving:\n${out}`)))
          setTimeout(() => reject(new Error(`pebble did not start within 15 s:\n${out}`)), 15_000).unref()
        })
        const ca = readFileSync(cert, "utf8")
        const root = await get(`https://127.0.0.1:${managementPort}/roots/0`, ca)
        return { child, acmePort, managementPort, cert, root }
      },
      catch: (e) => (e instanceof Error ? e : new Error(String(e)))
    }),
    ({ child }) => Child.stop(child, 3_000)
  ).pipe(Effect.map(({ acmePort, cert, child, managementPort, root }) => ({
    directory: `https://127.0.0.1:${acmePort}/dir`,
    httpsCaFile: cert,
    root,
    pid: child.pid!,
    ports: { acme: acmePort, management: managementPort },
    stop: Child.stop(child, 3_000)
  })))
