/**
 * Optional OTLP/HTTP trace export (`[tracing]` in the config file). The spans the server already
 * makes (`Session.data` per DATA transaction, `Dispatcher.deliver` per delivery attempt with the
 * adapters' spans below it, `Control.reload`, the queue's admin operations) go nowhere by
 * default: Effect's native tracer keeps them in memory only. This layer replaces that tracer with
 * Effect's OTLP tracer, which batches ended spans and POSTs them to `<endpoint>/v1/traces`.
 *
 * The runner provides it around the whole server layer, so every fiber the server starts sees
 * the tracer, and it is closed last: spans ended during a drain are still flushed (for up to
 * `shutdownTimeoutMs`). Export is best effort by design (Effect's exporter retries a few times,
 * then drops the batch and pauses for a minute, logging at debug level): a collector that is down
 * must never slow down or fail mail.
 */
import { Effect, Layer, Option, Redacted, References, Tracer } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpExporter, OtlpSerialization, OtlpTracer } from "effect/observability"
import { version } from "./Telemetry.ts"

export type TracingProtocol = "protobuf" | "json"

/** Defaults of the options below; the config schema takes its defaults from here. */
export const defaults = {
  serviceName: "incoming",
  protocol: "protobuf" as TracingProtocol,
  sampleRatio: 1,
  exportIntervalMs: 5_000,
  shutdownTimeoutMs: 3_000
} as const

export interface TracingOptions {
  /** The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`); `/v1/traces` is appended. */
  readonly endpoint: string
  readonly serviceName?: string | undefined
  readonly protocol?: TracingProtocol | undefined
  /** Extra request headers (an API key); kept `Redacted` until the exporter is built. */
  readonly headers?: Readonly<Record<string, Redacted.Redacted<string>>> | undefined
  /** Share of traces exported, 0 to 1, decided at each root span. */
  readonly sampleRatio?: number | undefined
  readonly exportIntervalMs?: number | undefined
  /** How long closing the layer waits for the last batch. */
  readonly shutdownTimeoutMs?: number | undefined
}

/**
 * The URL spans are POSTed to. A base URL gets `/v1/traces`, as OpenTelemetry's
 * `OTEL_EXPORTER_OTLP_ENDPOINT` does; one that already ends in it (copied from a
 * `..._TRACES_ENDPOINT` setting) is taken as it is rather than doubled.
 */
export const tracesUrl = (endpoint: string): string => {
  const url = new URL(endpoint)
  if (!url.pathname.endsWith("/v1/traces")) url.pathname = `${url.pathname.replace(/\/+$/, "")}/v1/traces`
  return url.toString()
}

/** The endpoint for a log line: no user-info, query or fragment, which may hold credentials. */
const describe = (url: string): string => {
  const u = new URL(url)
  return `${u.origin}${u.pathname}`
}

/**
 * Head sampling by ratio. Only a root span draws: Effect gives a child of an unsampled span
 * `sampled: false` before asking the tracer, so a trace is kept or dropped whole.
 */
export const sampleByRatio = (tracer: Tracer.Tracer, ratio: number): Tracer.Tracer =>
  Tracer.make({
    span(options) {
      const sampled = options.sampled && (Option.isSome(options.parent) || Math.random() < ratio)
      return tracer.span({ ...options, sampled })
    },
    context: tracer.context
  })

/**
 * The OTLP tracer for `options`; without options, tracing off: spans become no-ops. Nothing would
 * read them (Effect's in-memory tracer only keeps them for the current fiber), and a real span on
 * every connection, transaction and delivery costs microseconds the server spends per message.
 */
export const layer = (options: TracingOptions | undefined): Layer.Layer<never> => {
  if (options === undefined) return Layer.succeed(References.TracerEnabled, false)
  const url = tracesUrl(options.endpoint)
  const protocol = options.protocol ?? defaults.protocol
  const ratio = options.sampleRatio ?? defaults.sampleRatio
  const tracer = Effect.gen(function*() {
    const otlp = yield* OtlpTracer.make({
      url,
      resource: { serviceName: options.serviceName ?? defaults.serviceName, serviceVersion: version },
      // The exporter needs the plain values; this is the last place they are Redacted.
      headers: Object.fromEntries(Object.entries(options.headers ?? {}).map(([k, v]) => [k, Redacted.value(v)])),
      exportInterval: options.exportIntervalMs ?? defaults.exportIntervalMs,
      shutdownTimeout: options.shutdownTimeoutMs ?? defaults.shutdownTimeoutMs
    })
    yield* Effect.logInfo(`tracing: exporting spans to ${describe(url)} (OTLP/HTTP ${protocol}, sample ratio ${ratio})`)
    return ratio >= 1 ? otlp : sampleByRatio(otlp, ratio)
  })
  return Layer.effect(Tracer.Tracer, tracer).pipe(
    Layer.provide(Layer.mergeAll(
      OtlpExporter.layerFlusher,
      protocol === "json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf,
      FetchHttpClient.layer
    ))
  )
}
