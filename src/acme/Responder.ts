/**
 * The answers the CA checks while an order is open: for HTTP-01, a key authorization at
 * `http://NAME/.well-known/acme-challenge/TOKEN` (served by effect/http on `httpListen`); for
 * TLS-ALPN-01 (RFC 8737), a self-signed certificate carrying the key authorization's digest,
 * presented to a TLS client that asks for the `acme-tls/1` protocol and the name in SNI (a
 * node:tls server on `tlsAlpnListen`; effect/http has no TLS server).
 *
 * The responders are bound only while an order is open (`serve`, scoped): port 80 or 443 is
 * not held between renewals, and a port that cannot be bound fails that issuance (retried)
 * rather than the server's start.
 */
import type { AddressInfo } from "node:net"
import { createSecureContext, createServer as createTlsServer, type SecureContext } from "node:tls"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer, type Scope } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { http } from "../internal/nodeHttp.ts"
import { AcmeError, detailOf } from "./AcmeError.ts"
import type { ChallengeType, ListenAddress } from "./AcmeOptions.ts"

/** The challenges being answered now. */
export interface Pending {
  /** HTTP-01: token → key authorization. */
  readonly http: Map<string, string>
  /** TLS-ALPN-01: name → the challenge certificate's context. */
  readonly alpn: Map<string, SecureContext>
}

export const makePending = (): Pending => ({ http: new Map(), alpn: new Map() })

export const addAlpn = (pending: Pending, domain: string, pair: { readonly cert: Buffer; readonly key: Buffer }): void => {
  pending.alpn.set(domain.toLowerCase(), createSecureContext({ cert: pair.cert, key: pair.key }))
}

const formatAddress = (a: ListenAddress) => (a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)

const bindError = (domain: string, listen: ListenAddress, cause: unknown) =>
  new AcmeError({ domain, reason: { _tag: "Bind", address: formatAddress(listen), detail: detailOf(cause) }, cause })

const serveHttp = (domain: string, listen: ListenAddress, pending: Pending): Effect.Effect<number, AcmeError, Scope.Scope> =>
  Effect.gen(function*() {
    const routes = HttpRouter.add(
      "GET",
      "/.well-known/acme-challenge/:token",
      Effect.map(HttpRouter.params, (params) => {
        const answer = pending.http.get(params.token ?? "")
        return answer === undefined
          ? HttpServerResponse.text("no such challenge\n", { status: 404 })
          : HttpServerResponse.text(answer, { contentType: "application/octet-stream" })
      })
    )
    const node = http.createServer()
    const server = NodeHttpServer.layer(() => node, { host: listen.host, port: listen.port, gracefulShutdownTimeout: "1 second" })
    yield* Layer.build(HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(Layer.provide(server))).pipe(
      Effect.mapError((e) => bindError(domain, listen, e.cause))
    )
    return (node.address() as AddressInfo).port
  })

const serveTlsAlpn = (domain: string, listen: ListenAddress, pending: Pending): Effect.Effect<number, AcmeError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<ReturnType<typeof createTlsServer>, AcmeError>((resume) => {
      const server = createTlsServer({
        // Only the validation protocol: a client that asks for anything else is refused in the handshake.
        ALPNProtocols: ["acme-tls/1"],
        SNICallback: (name, cb) => {
          const context = pending.alpn.get(name.toLowerCase())
          if (context === undefined) cb(new Error(`no TLS-ALPN-01 challenge for ${name}`))
          else cb(null, context)
        }
      })
      // The validator closes the connection once it has seen the certificate.
      server.on("secureConnection", (socket) => socket.end())
      server.on("tlsClientError", () => undefined)
      const onError = (err: Error) => resume(Effect.fail(bindError(domain, listen, err)))
      server.once("error", onError)
      server.listen(listen.port, listen.host, () => {
        server.off("error", onError)
        resume(Effect.succeed(server))
      })
    }),
    (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  ).pipe(Effect.map((server) => (server.address() as AddressInfo).port))

/** Binds the responder of `challenge` for the life of the scope; returns the bound port. */
export const serve = (
  domain: string,
  challenge: ChallengeType,
  listen: { readonly http: ListenAddress; readonly tlsAlpn: ListenAddress },
  pending: Pending
): Effect.Effect<number, AcmeError, Scope.Scope> =>
  challenge === "http-01" ? serveHttp(domain, listen.http, pending) : serveTlsAlpn(domain, listen.tlsAlpn, pending)
