/**
 * The dev inbox: a catch-all SMTP server with a web inbox and a JSON API, for developers of
 * apps that send mail (what Mailpit and MailHog do), built on the same engine as production.
 *
 * It is `Incoming.layer` — the same listener, session, spool, limits, durable queue and
 * dispatcher — configured to catch everything:
 * - every recipient of every domain is local (the relay's host-app domain check says yes), so
 *   nothing is ever relayed and no recipient is refused;
 * - AUTH accepts any user name and password (over clear text too, it is a dev tool), so apps
 *   configured with credentials work unchanged;
 * - STARTTLS is offered when a certificate is given.
 * Its delivery adapter stores each message in the inbox (`Store.ts`, SQLite), which the web
 * server (`Http.ts`) shows and serves.
 *
 * Shutdown drains like production: the SMTP listener finishes the transactions in flight and
 * the dispatcher stores what the queue holds, while the web server ends its event streams; the
 * store closes last.
 */
import { resolve } from "node:path"
import { Context, Effect, Layer, Stream } from "effect"
import * as UserStore from "../auth/UserStore.ts"
import { DeliveryAdapter, DeliveryError } from "../delivery/DeliveryAdapter.ts"
import * as DA from "../delivery/DeliveryAdapter.ts"
import * as Incoming from "../Incoming.ts"
import { Listeners } from "../smtp/Listener.ts"
import * as ListenerOptions from "../smtp/ListenerOptions.ts"
import * as Http from "./Http.ts"
import * as Release from "./Release.ts"
import * as Store from "./Store.ts"

export interface HostPort {
  readonly host: string
  readonly port: number
}

export interface DevInboxOptions {
  /** SMTP listener (default 127.0.0.1:1025). */
  readonly smtp?: Partial<HostPort> | undefined
  /** Web inbox and API (default 127.0.0.1:8025). */
  readonly http?: (Partial<HostPort> & { readonly basicAuth?: Http.BasicAuth | undefined }) | undefined
  /** The inbox database, the queue and the spool (default `./var/dev`). */
  readonly dataDir?: string | undefined
  /** Oldest messages beyond this many are deleted (default 500). */
  readonly maxMessages?: number | undefined
  /** Largest message accepted, in bytes (default: the listener's, 25 MiB). */
  readonly maxSize?: number | undefined
  /** Our name in the greeting and in `Received:` (default `incoming-dev`). */
  readonly hostname?: string | undefined
  /** PEM files: STARTTLS is offered (optional for clients) when given. */
  readonly tls?: { readonly cert: string; readonly key: string } | undefined
  /** Bare CR / LF in DATA: refused (default, as in production) or rewritten to CRLF. */
  readonly lineEndings?: "reject" | "normalize" | undefined
  /** Where "Release" sends a message, and to whom it may. Release is off without it. */
  readonly release?: Release.ReleaseOptions | undefined
}

export const defaults = {
  smtp: { host: "127.0.0.1", port: 1025 },
  http: { host: "127.0.0.1", port: 8025 },
  dataDir: "./var/dev",
  maxMessages: Store.defaultMaxMessages,
  hostname: "incoming-dev"
} as const

export class DevInbox extends Context.Service<DevInbox, {
  /** The bound SMTP listener (the real port when 0 was asked for). */
  readonly smtp: HostPort
  /** The bound web server. */
  readonly http: HostPort
  /** `http://host:port` of the page and the API. */
  readonly url: string
  readonly dataDir: string
}>()("incoming/dev/DevInbox") {}

/**
 * The delivery adapter: every recipient's copy is the one stored message. A fresh layer per
 * inbox: layers are shared by identity, and two inboxes in one program must not share a store.
 */
const inboxAdapter = (): Layer.Layer<DeliveryAdapter, never, Store.InboxStore> => Layer.effect(
  DeliveryAdapter,
  Effect.gen(function*() {
    const store = yield* Store.InboxStore
    return DeliveryAdapter.of({
      name: "dev-inbox",
      deliver: (delivery) =>
        Effect.gen(function*() {
          const raw = yield* Stream.mkUint8Array(delivery.body)
          const e = delivery.envelope
          yield* store.add({
            id: delivery.id,
            receivedAt: delivery.receivedAt,
            envelope: {
              from: e.mailFrom,
              to: e.rcptTo,
              helo: e.helo,
              clientAddress: e.clientAddress,
              secure: e.secure,
              authenticatedUser: e.authenticatedUser ?? null
            },
            raw
          })
          return DA.all(delivery, (rcpt) => DA.ok(rcpt, "caught"))
        }).pipe(
          // A storage failure is retried by the dispatcher: the message stays in the queue.
          Effect.mapError((e) => new DeliveryError({ reason: { _tag: "Failed", detail: e.message }, cause: e }))
        )
    })
  })
)

/** Any user name and password: apps keep their production SMTP settings, minus the host. */
const anyCredentials = UserStore.UserStore.of({ verify: () => Effect.succeed(true) })

export type Errors = Incoming.StartError | Store.InboxError

/**
 * The whole dev inbox as a layer: SMTP, the web inbox and the store. `InboxStore` is exposed
 * for in-process use (tests), `DevInbox` says where everything listens.
 */
export const layer = (options: DevInboxOptions = {}): Layer.Layer<DevInbox | Store.InboxStore, Errors> => {
  const dataDir = resolve(options.dataDir ?? defaults.dataDir)
  const smtp = { ...defaults.smtp, ...options.smtp }
  const http = { ...defaults.http, ...options.http }
  const releaser = Release.make(options.release)
  const store = Store.layer({ dataDir, maxMessages: options.maxMessages })
  const listener: ListenerOptions.ListenerInput = {
    name: "dev",
    host: smtp.host,
    port: smtp.port,
    allowInsecureAuth: true,
    tls: options.tls === undefined ? { mode: "disabled" } : { mode: "optional", cert: options.tls.cert, key: options.tls.key },
    ...(options.maxSize !== undefined ? { maxSize: options.maxSize } : {}),
    ...(options.lineEndings !== undefined ? { lineEndings: options.lineEndings } : {})
  }
  const engine = Incoming.layer({
    hostname: options.hostname ?? defaults.hostname,
    domains: ["localhost"],
    listeners: [listener],
    dataDir,
    queue: { kind: "sqlite" },
    drainTimeoutMs: 5_000,
    // Every domain is ours: nothing is relayed, nothing refused.
    relay: { localDomain: () => Effect.succeed(true) },
    auth: { store: anyCredentials, allowInsecure: true, failureDelay: 0 },
    dispatcher: { workers: 2, backoff: { baseMs: 1_000, maxMs: 30_000, jitter: 0.2 } }
  }).pipe(Layer.provide(inboxAdapter()))
  // The web server starts once the SMTP listener is bound (the page shows its address) and
  // stops first: the page goes, then SMTP drains into the store, then the store closes.
  const web = Layer.unwrap(Effect.gen(function*() {
    const smtpPort = (yield* Listeners).all[0]!.port
    return Http.layer({ host: http.host, port: http.port, basicAuth: http.basicAuth }, {
      releaser,
      info: (bound) => ({
        smtp: `${Http.urlHost(smtp.host)}:${smtpPort}`,
        http: `${Http.urlHost(bound.host)}:${bound.port}`,
        maxMessages: options.maxMessages ?? defaults.maxMessages,
        auth: http.basicAuth !== undefined,
        release: {
          enabled: releaser.enabled,
          server: options.release === undefined ? null : `${options.release.smtp.host}:${options.release.smtp.port ?? 25}`,
          allow: releaser.allow
        }
      })
    })
  }))
  const top = Layer.effect(
    DevInbox,
    Effect.gen(function*() {
      const bound = (yield* Listeners).all[0]!
      const web = yield* Http.DevHttp
      if (!Http.isLoopback(http.host)) {
        yield* Effect.logWarning(
          `the dev inbox web server listens on ${http.host}: anyone who can reach ${web.url} can read every caught message` +
            (http.basicAuth === undefined ? " (set basic auth to require a password)" : "")
        )
      }
      yield* Effect.logInfo(`dev inbox: SMTP on ${Http.urlHost(smtp.host)}:${bound.port}, web inbox on ${web.url}, data in ${dataDir}`)
      return DevInbox.of({ smtp: { host: smtp.host, port: bound.port }, http: { host: web.host, port: web.port }, url: web.url, dataDir })
    })
  )
  return top.pipe(Layer.provide(web.pipe(Layer.provideMerge(engine))), Layer.provideMerge(store))
}
