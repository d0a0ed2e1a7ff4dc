/**
 * Let's Encrypt's test CA for tests: Debian's `pebble` on free loopback ports, with a config
 * file and an HTTPS certificate of the test's own (made with openssl), started and stopped by
 * PID with the test's scope. Validation is real unless `alwaysValid` is set: pebble resolves the
 * names through `dnsServer` (a dnsmasq of the test's own) and connects to `httpPort` (HTTP-01)
 * or `tlsPort` (TLS-ALPN-01) there. Nonces are never rejected on purpose (pebble's default
 * rejects 5%), so a test's timing does not depend on retries, and no authorization is reused, so
 * every order is validated.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
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

/**
 * Two free ports for pebble, neither of `taken` (the validation ports, free now too, so the
 * kernel may hand one out again: pebble on it would leave our responder unable to bind).
 */
const portsBesides = async (taken: ReadonlyArray<number>): Promise<[number, number]> => {
  const ports: Array<number> = []
  while (ports.length < 2) {
    const port = await freePort()
    if (!taken.includes(port) && !ports.includes(port)) ports.push(port)
  }
  return [ports[0]!, ports[1]!]
}

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

const refused = (e: unknown) => typeof e === "object" && e !== null && "code" in e && e.code === "ECONNREFUSED"

/** The body of `url` once it answers 200: a refused connection (not listening yet) is tried again until `deadline`. */
const whenListening = async (url: string, ca: string, deadline: number, running: () => boolean): Promise<string> => {
  for (;;) {
    try {
      return await get(url, ca)
    } catch (e) {
      if (!refused(e) || !running() || Date.now() > deadline) throw e
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

/** Pebble gave up at start; `bindFailed` when one of its ports was taken meanwhile. */
class StartFailed extends Error {
  readonly bindFailed: boolean
  constructor(message: string, bindFailed: boolean) {
    super(message)
    this.bindFailed = bindFailed
  }
}

interface Started {
  readonly child: ChildProcess
  readonly acmePort: number
  readonly managementPort: number
  readonly root: string
}

/**
 * Runs pebble on the given ports and resolves once it serves. Its "ACME directory available"
 * line is no readiness signal: pebble logs it, and the management line, before binding either
 * port (the management listener in a goroutine of its own; seen with strace), so a test that
 * went by the line alone met ECONNREFUSED on a loaded machine. Ready is both ports answering:
 * the directory and the root. Pebble exiting (a port taken since `freePort`) ends the wait with
 * its output; a pebble that is not ready in time is stopped.
 */
const run = async (options: PebbleOptions, cert: string, key: string, acmePort: number, managementPort: number): Promise<Started> => {
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
      // Nearly every order is validated afresh: pebble reuses half of the valid authorizations by
      // default, and 1 in 100 even at 0 (it reuses unless rand.Intn(100) > 0). A test that needs
      // a validation for sure orders with a new account (acme.test.ts).
      PEBBLE_AUTHZREUSE: "0",
      ...(options.alwaysValid === true ? { PEBBLE_VA_ALWAYS_VALID: "1" } : {})
    }
  })
  let out = ""
  let running = true
  const exited = new Promise<never>((_, reject) =>
    child.once("exit", (code) => {
      running = false
      reject(new StartFailed(`pebble exited (${code}) before serving:\n${out}`, /address already in use/.test(out)))
    })
  )
  const logged = new Promise<void>((resolve) => {
    const onData = (b: Buffer) => {
      out += b.toString()
      if (/ACME directory available/.test(out)) resolve()
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
  })
  const deadline = Date.now() + 15_000
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StartFailed(`pebble did not start within 15 s:\n${out}`, false)), 15_000)
  })
  try {
    const ca = readFileSync(cert, "utf8")
    const serving = logged.then(async () => {
      await whenListening(`https://127.0.0.1:${acmePort}/dir`, ca, deadline, () => running)
      return whenListening(`https://127.0.0.1:${managementPort}/roots/0`, ca, deadline, () => running)
    })
    const root = await Promise.race([serving, exited, late])
    return { child, acmePort, managementPort, root }
  } catch (e) {
    await Effect.runPromise(Child.stop(child, 3_000))
    throw e
  } finally {
    clearTimeout(timer)
  }
}

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
        if (options.ports !== undefined) return { cert, ...await run(options, cert, key, options.ports.acme, options.ports.management) }
        // A free port can be taken by another test between `freePort` and pebble's bind: new ones then.
        for (let attempt = 1; ; attempt++) {
          try {
            const [acmePort, managementPort] = await portsBesides([options.httpPort, options.tlsPort])
            return { cert, ...await run(options, cert, key, acmePort, managementPort) }
          } catch (e) {
            if (!(e instanceof StartFailed && e.bindFailed) || attempt === 3) throw e
          }
        }
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
