/**
 * Health and the admin HTTP endpoint (off unless configured):
 *
 * - `GET /healthz`: 200 `ok` while the process runs (liveness: restart me if this fails).
 * - `GET /readyz`: 200 when the listeners are bound, the queue answers and we are not draining;
 *   503 with the reasons otherwise (readiness: send me no traffic). It turns 503 the moment a
 *   shutdown starts, and keeps answering through the drain.
 * - `GET /metrics`: every `incoming_*` metric in Prometheus text, with the state gauges sampled
 *   at that moment (`Metrics.ts`).
 *
 * `Health` is the readiness logic without HTTP, always part of `Incoming.layer`, so a host app
 * can serve it its own way. It is built below the listeners (it needs only the queue) and
 * learns about them once they are bound (`attach`); the admin server is built next to it. So
 * closing the server's layer drains the listeners first while `/readyz` still answers 503,
 * and the admin endpoint goes away last.
 */
import { timingSafeEqual } from "node:crypto"
import type { AddressInfo } from "node:net"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { HttpRouter, type HttpServerRequest, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { http } from "../internal/nodeHttp.ts"
import { QueueAdmin } from "../queue/QueueAdmin.ts"
import { fromBindError, type ListenError } from "../smtp/ListenError.ts"
import { Listeners } from "../smtp/Listener.ts"
import * as Metrics from "./Metrics.ts"

export interface AdminOptions {
  readonly host: string
  /** 0 picks a free port (tests); the bound one is in `Health.admin` and the log. */
  readonly port: number
  /** When set, `/readyz` and `/metrics` need `Authorization: Bearer <token>`; `/healthz` never does. */
  readonly authToken?: Redacted.Redacted<string> | undefined
}

export interface Readiness {
  readonly ready: boolean
  readonly draining: boolean
  /** Why not ready; empty when ready. */
  readonly reasons: ReadonlyArray<string>
}

export interface BoundAddress {
  readonly host: string
  readonly port: number
}

/** How long the queue may take to answer a readiness probe before it counts as not answering. */
const queueProbeTimeoutMs = 1000

export class Health extends Context.Service<Health, {
  readonly readiness: Effect.Effect<Readiness>
  /** Samples the state gauges (queue, connections, readiness) for a scrape. */
  readonly sampleMetrics: Effect.Effect<void>
  /** Where the admin endpoint listens, when it is on and bound. */
  readonly admin: Effect.Effect<Option.Option<BoundAddress>>
  /** Wiring done by `Incoming.layer`: the listeners once bound, the start of a shutdown, the admin address. */
  readonly attachListeners: (listeners: Listeners["Service"]) => Effect.Effect<void>
  readonly markStopping: Effect.Effect<void>
  readonly setAdmin: (address: BoundAddress) => Effect.Effect<void>
}>()("incoming/Health") {}

export const makeHealth = Effect.gen(function*() {
  const queue = yield* QueueAdmin
  let listeners: Listeners["Service"] | undefined
  let stopping = false
  let admin = Option.none<BoundAddress>()

  const readiness = Effect.gen(function*() {
    const reasons: Array<string> = []
    const draining = stopping || (listeners !== undefined && (yield* listeners.draining))
    if (draining) reasons.push("draining: shutting down")
    else if (listeners === undefined) reasons.push("listeners not bound yet")
    else if (listeners.all.length === 0) reasons.push("no listeners configured")
    const probe = yield* queue.stats.pipe(Effect.timeoutOption(queueProbeTimeoutMs), Effect.result)
    if (probe._tag === "Failure") reasons.push(`queue (${queue.backend}) failed: ${probe.failure.message}`)
    else if (probe.success._tag === "None") reasons.push(`queue (${queue.backend}) did not answer within ${queueProbeTimeoutMs} ms`)
    return { ready: reasons.length === 0, draining, reasons } satisfies Readiness
  })

  return Health.of({
    readiness,
    sampleMetrics: Effect.gen(function*() {
      const r = yield* readiness
      yield* Metrics.sample({ queue, listeners, ready: r.ready, draining: r.draining })
    }),
    admin: Effect.sync(() => admin),
    attachListeners: (l) => Effect.sync(() => void (listeners = l)),
    markStopping: Effect.sync(() => void (stopping = true)),
    setAdmin: (address) => Effect.sync(() => void (admin = Option.some(address)))
  })
})

/** A fresh `Health` per call (layers are shared by identity; two servers must not share one). */
export const layerHealth = (): Layer.Layer<Health, never, QueueAdmin> => Layer.effect(Health, makeHealth)

/**
 * Tells `Health` about the bound listeners; built on top of them, so its finalizer runs just
 * before their drain and readiness turns 503 before the first connection is refused.
 */
export const attach: Layer.Layer<never, never, Health | Listeners> = Layer.effectDiscard(
  Effect.gen(function*() {
    const health = yield* Health
    yield* health.attachListeners(yield* Listeners)
    yield* Effect.addFinalizer(() => health.markStopping)
  })
)

const bearerMatches = (request: HttpServerRequest.HttpServerRequest, token: Redacted.Redacted<string>): boolean => {
  const header = request.headers["authorization"] ?? ""
  const m = /^Bearer\s+(.+)$/i.exec(header)
  if (m === null) return false
  const given = Buffer.from(m[1]!.trim())
  const expected = Buffer.from(Redacted.value(token))
  // Constant-time compare, so the token cannot be guessed byte by byte from response times.
  return given.length === expected.length && timingSafeEqual(given, expected)
}

const text = (body: string, status = 200) => HttpServerResponse.text(body, { status, headers: { "cache-control": "no-store" } })

/** The admin HTTP endpoint on `options.host:options.port`. */
export const layer = (options: AdminOptions): Layer.Layer<never, ListenError, Health> =>
  Layer.unwrap(Effect.gen(function*() {
    const health = yield* Health
    const guarded = (handler: Effect.Effect<HttpServerResponse.HttpServerResponse>) =>
    (request: HttpServerRequest.HttpServerRequest) =>
      options.authToken === undefined || bearerMatches(request, options.authToken)
        ? handler
        : Effect.succeed(HttpServerResponse.text("unauthorized\n", { status: 401, headers: { "www-authenticate": "Bearer" } }))

    const routes = Layer.mergeAll(
      HttpRouter.add("GET", "/healthz", text("ok\n")),
      HttpRouter.add(
        "GET",
        "/readyz",
        guarded(Effect.map(health.readiness, (r) => (r.ready ? text("ready\n") : text(`not ready: ${r.reasons.join("; ")}\n`, 503))))
      ),
      HttpRouter.add(
        "GET",
        "/metrics",
        guarded(Effect.gen(function*() {
          yield* health.sampleMetrics
          const body = yield* PrometheusMetrics.format()
          return HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
        }))
      )
    )

    const address = options.host.includes(":") ? `[${options.host}]:${options.port}` : `${options.host}:${options.port}`
    const node = http.createServer()
    const server = NodeHttpServer.layer(() => node, { host: options.host, port: options.port, gracefulShutdownTimeout: "1 second" })
    const announce = Layer.effectDiscard(Effect.gen(function*() {
      const bound = node.address() as AddressInfo
      yield* health.setAdmin({ host: options.host, port: bound.port })
      const shown = options.host.includes(":") ? `[${options.host}]` : options.host
      yield* Effect.logInfo(`admin endpoint at http://${shown}:${bound.port} (/healthz /readyz /metrics)`)
    }))
    return Layer.mergeAll(HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }), announce).pipe(
      Layer.provide(server),
      Layer.catch((e) => Layer.effectDiscard(Effect.fail(fromBindError("admin", address, e.cause))))
    )
  }))
