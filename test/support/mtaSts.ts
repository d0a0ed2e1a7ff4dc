/**
 * MTA-STS test fixtures: self-signed certificates for chosen names (openssl CLI; a test trusts
 * them as CAs through the adapter's extra-CA setting), and a loopback HTTPS server standing in
 * for every `mta-sts.<domain>` policy host at once — it answers by the Host header, with a policy
 * (or a status, a content type) the test can change between deliveries, and counts requests.
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { createServer } from "node:https"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { Effect, type Scope } from "effect"

export interface Certificate {
  readonly certFile: string
  readonly keyFile: string
  readonly cert: string
  readonly key: string
}

/** A fresh self-signed certificate (CA:TRUE, so it can be trusted as its own root) for `names`. */
export const certificate = (dir: string, file: string, names: ReadonlyArray<string>): Certificate => {
  const certFile = join(dir, `${file}.crt`)
  const keyFile = join(dir, `${file}.key`)
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", `/CN=${names[0]!}`,
    "-addext", `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}`
  ], { stdio: "ignore" })
  return { certFile, keyFile, cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") }
}

export interface Answer {
  readonly status?: number
  readonly contentType?: string
  readonly body?: string
  readonly headers?: Readonly<Record<string, string>>
}

export interface PolicyServer {
  readonly port: number
  /** What `mta-sts.<domain>` answers from now on (no entry: 404). */
  readonly answers: Map<string, Answer>
  /** Requests per policy host (`mta-sts.<domain>`), and the paths asked. */
  readonly requests: (host: string) => number
  readonly paths: Array<string>
  /** The client address of each request. */
  readonly remotes: Array<string>
}

export const policy = (mode: "enforce" | "testing" | "none", mx: ReadonlyArray<string>, maxAge = 86400): Answer => ({
  body: ["version: STSv1", `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`, ""].join("\r\n")
})

/** An HTTPS server on 127.0.0.1 (port 0) presenting `cert`; closed with the scope. */
export const serve = (cert: Certificate): Effect.Effect<PolicyServer, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ server: ReturnType<typeof createServer>; policies: PolicyServer }, Error>((resume) => {
      const answers = new Map<string, Answer>()
      const counts = new Map<string, number>()
      const paths: Array<string> = []
      const remotes: Array<string> = []
      const server = createServer({ cert: cert.cert, key: cert.key }, (req, res) => {
        const host = (req.headers.host ?? "").replace(/:\d+$/, "").toLowerCase()
        counts.set(host, (counts.get(host) ?? 0) + 1)
        paths.push(req.url ?? "")
        remotes.push(req.socket.remoteAddress ?? "")
        const answer = req.url === "/.well-known/mta-sts.txt" ? answers.get(host) : undefined
        if (answer === undefined) {
          res.writeHead(404, { "content-type": "text/plain" })
          return res.end("not found\n")
        }
        res.writeHead(answer.status ?? 200, { "content-type": answer.contentType ?? "text/plain; charset=utf-8", ...answer.headers })
        res.end(answer.body ?? "")
      })
      server.once("error", (e) => resume(Effect.fail(e)))
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          server,
          policies: { port: (server.address() as AddressInfo).port, answers, requests: (host) => counts.get(host) ?? 0, paths, remotes }
        })))
    }),
    ({ server }) =>
      Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ policies }) => policies))
