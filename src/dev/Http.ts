/**
 * The dev inbox's web server (`effect/http` on Node's `http`): the page and its assets, the
 * JSON API (`Api.ts`), and what guards them all.
 *
 * - Basic auth, when configured, on every path (the page, the API, the event stream).
 * - On a loopback address, requests must name a loopback host (`localhost`, `127.0.0.1`,
 *   `[::1]`): a web page the developer visits cannot reach the inbox through a DNS name it
 *   re-points at 127.0.0.1 (DNS rebinding).
 * - The page has a strict CSP (its own script and styles only); every response says
 *   `nosniff` and sends no referrer.
 *
 * Shutdown: a finalizer that runs before the server closes ends the event streams and waits,
 * so the server's graceful close is not held up by connections that never end on their own.
 */
import { timingSafeEqual } from "node:crypto"
import type { AddressInfo } from "node:net"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import ipaddr from "ipaddr.js"
import { Context, Deferred, Effect, Layer, Redacted } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { http } from "../internal/nodeHttp.ts"
import { fromBindError, type ListenError } from "../smtp/ListenError.ts"
import * as Api from "./Api.ts"
import type { InboxStore } from "./Store.ts"
import { type Asset, assets } from "./ui/app.ts"

export interface BasicAuth {
  readonly user: string
  readonly password: Redacted.Redacted<string>
}

export interface HttpOptions {
  readonly host: string
  /** 0 picks a free port; the bound one is in `DevHttp`. */
  readonly port: number
  readonly basicAuth?: BasicAuth | undefined
}

export class DevHttp extends Context.Service<DevHttp, {
  readonly host: string
  readonly port: number
  /** `http://host:port` as a browser on this machine would open it. */
  readonly url: string
}>()("incoming/dev/DevHttp") {}

/** `host` for a URL: IPv6 in brackets, the wildcard shown as the loopback name people open. */
export const urlHost = (host: string): string => {
  if (host === "0.0.0.0" || host === "::" || host === "") return "localhost"
  return host.includes(":") ? `[${host}]` : host
}

export const isLoopback = (host: string): boolean => {
  if (host === "localhost" || host.endsWith(".localhost")) return true
  const bare = host.replace(/^\[|\]$/g, "")
  return ipaddr.isValid(bare) && ipaddr.process(bare).range() === "loopback"
}

/** The host part of a `Host` header (`[::1]:8025` → `[::1]`, `localhost:8025` → `localhost`). */
const hostOf = (header: string): string => {
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d+)?$/.exec(header.trim())
  return (m?.[1] ?? "").toLowerCase()
}

const credentialsMatch = (header: string | undefined, auth: BasicAuth): boolean => {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header ?? "")
  if (m === null) return false
  const given = Buffer.from(m[1]!, "base64")
  const expected = Buffer.from(`${auth.user}:${Redacted.value(auth.password)}`)
  // Constant time, so the password cannot be found byte by byte from response times.
  return given.length === expected.length && timingSafeEqual(given, expected)
}

const pageCsp = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "frame-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join("; ")

const serveAsset = (asset: Asset, headers: Record<string, string> = {}) =>
  HttpServerRequest.HttpServerRequest.use((request) =>
    Effect.succeed(
      request.headers["if-none-match"] === asset.etag
        ? HttpServerResponse.empty({ status: 304, headers: { etag: asset.etag } })
        : HttpServerResponse.text(asset.body, {
          contentType: asset.contentType,
          headers: { etag: asset.etag, "cache-control": "no-cache", ...headers }
        })
    )
  )

const staticRoutes = HttpRouter.addAll([
  HttpRouter.route("GET", "/", serveAsset(assets.page, { "content-security-policy": pageCsp })),
  HttpRouter.route("GET", "/assets/app.css", serveAsset(assets.css)),
  HttpRouter.route("GET", "/assets/app.js", serveAsset(assets.js)),
  HttpRouter.route("GET", "/assets/favicon.svg", serveAsset(assets.favicon)),
  HttpRouter.route("GET", "/favicon.ico", serveAsset(assets.favicon))
])

/** Auth, the loopback host check and the headers every response carries. */
const guard = (options: HttpOptions) =>
  HttpRouter.middleware((effect) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (isLoopback(options.host) && !isLoopback(hostOf(request.headers["host"] ?? ""))) {
        return Api.problem(403, "this inbox listens on a loopback address: open it as localhost, 127.0.0.1 or [::1]")
      }
      if (options.basicAuth !== undefined && !credentialsMatch(request.headers["authorization"], options.basicAuth)) {
        return HttpServerResponse.text("authentication required\n", {
          status: 401,
          headers: { "www-authenticate": "Basic realm=\"incoming dev\", charset=\"UTF-8\"" }
        })
      }
      return yield* effect
    }).pipe(Effect.map(HttpServerResponse.setHeaders({ "x-content-type-options": "nosniff", "referrer-policy": "no-referrer" }))), { global: true })

/**
 * The web server on `options.host:options.port`, serving the store's messages. `info` is what
 * `/api/info` answers (given the bound address).
 */
export const layer = (
  options: HttpOptions,
  context: { readonly releaser: Api.ApiContext["releaser"]; readonly info: (http: { host: string; port: number }) => object }
): Layer.Layer<DevHttp, ListenError, InboxStore> =>
  Layer.unwrap(Effect.gen(function*() {
    const closing = yield* Deferred.make<void>()
    const node = http.createServer()
    const bound = () => ({ host: options.host, port: (node.address() as AddressInfo | null)?.port ?? options.port })
    const address = `${urlHost(options.host)}:${options.port}`
    const server = NodeHttpServer.layer(() => node, { host: options.host, port: options.port, gracefulShutdownTimeout: "2 seconds" })
    const api = Api.routes({ releaser: context.releaser, info: () => context.info(bound()), closing })
    const app = HttpRouter.serve(Layer.mergeAll(staticRoutes, api, guard(options)), { disableLogger: true, disableListenLog: true })
    // Built after the server, so released before it: streams end, then the server closes.
    const service = Layer.effect(
      DevHttp,
      Effect.gen(function*() {
        yield* Effect.addFinalizer(() => Deferred.succeed(closing, undefined))
        const { port } = bound()
        return DevHttp.of({ host: options.host, port, url: `http://${urlHost(options.host)}:${port}` })
      })
    )
    return Layer.mergeAll(app, service).pipe(
      Layer.provide(server),
      Layer.catch((e) => Layer.effect(DevHttp, Effect.fail(fromBindError("http", address, "cause" in e ? e.cause : e))))
    )
  }))
