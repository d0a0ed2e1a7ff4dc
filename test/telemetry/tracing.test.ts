/**
 * OTLP trace export of `incoming serve`, end to end: the server runs as a child process with
 * `[tracing]` pointing at a collector in this test (an HTTP server on 127.0.0.1 that records
 * every POST). One message makes a `Session.data` span and a `Dispatcher.deliver` span, which
 * must arrive at `/v1/traces` — as OTLP JSON (decoded, with their attributes and the resource's
 * service name, and the configured header sent), and as protobuf flushed when SIGTERM stops the
 * server. In process: the `[tracing]` table's defaults and checks, header values redacted by
 * `check-config`, the traces URL, and ratio sampling deciding whole traces.
 */
import { spawn } from "node:child_process"
import { readdirSync, writeFileSync } from "node:fs"
import { createServer, type IncomingHttpHeaders } from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Schema, Tracer } from "effect"
import * as Load from "../../src/config/Load.ts"
import * as Options from "../../src/config/Options.ts"
import * as Tracing from "../../src/telemetry/Tracing.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { serve } from "../support/server.ts"

interface Post {
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer
}

/** A stand-in OTLP collector: answers 200 to everything and keeps what it was sent. */
const collector = Effect.acquireRelease(
  Effect.callback<{ readonly port: number; readonly posts: Array<Post>; readonly close: () => Promise<void> }>((resume) => {
    const posts: Array<Post> = []
    const server = createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => {
        if (req.method === "POST") posts.push({ path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) })
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () =>
      resume(Effect.succeed({
        port: (server.address() as AddressInfo).port,
        posts,
        close: () => new Promise<void>((done) => {
          server.closeAllConnections()
          server.close(() => done())
        })
      })))
  }),
  (c) => Effect.promise(c.close)
)

const KeyValue = Schema.Struct({ key: Schema.String, value: Schema.Struct({ stringValue: Schema.optionalKey(Schema.String) }) })
const TraceData = Schema.Struct({
  resourceSpans: Schema.Array(Schema.Struct({
    resource: Schema.Struct({ attributes: Schema.Array(KeyValue) }),
    scopeSpans: Schema.Array(Schema.Struct({
      spans: Schema.Array(Schema.Struct({ name: Schema.String, traceId: Schema.String, attributes: Schema.Array(KeyValue) }))
    }))
  }))
})
const decodeTraces = Schema.decodeUnknownSync(Schema.fromJsonString(TraceData))

interface SeenSpan {
  readonly name: string
  readonly service: string | undefined
  readonly attributes: Readonly<Record<string, string | undefined>>
}

const spansOf = (post: Post): Array<SeenSpan> =>
  decodeTraces(post.body.toString("utf8")).resourceSpans.flatMap((rs) => {
    const service = rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue
    return rs.scopeSpans.flatMap((ss) =>
      ss.spans.map((s) => ({
        name: s.name,
        service,
        attributes: Object.fromEntries(s.attributes.map((a) => [a.key, a.value.stringValue]))
      }))
    )
  })

/** Polls `f` every 50 ms until it returns a value; after `timeoutMs`, fails with `context()`. */
const waitFor = <A>(what: string, f: () => A | undefined, context: () => string, timeoutMs = 10_000): Effect.Effect<A, Error> =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const a = f()
      if (a !== undefined) return a
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out waiting for ${what}\n${context()}`))
      yield* Effect.sleep(50)
    }
  })

const config = (lines: ReadonlyArray<string>) =>
  [
    `domains = ["example.test"]`,
    `data_dir = "data"`,
    `[[listeners]]\nport = 0`,
    `[queue]\nbackend = "memory"`,
    ...lines
  ].join("\n")

describe("tracing (incoming serve as a process)", () => {
  it.live("exports Session.data and Dispatcher.deliver spans as OTLP JSON, with the configured header", () =>
    Effect.gen(function*() {
      const otlp = yield* collector
      const dir = yield* TestIncoming.tempDir("incoming-tracing-")
      writeFileSync(join(dir, "incoming.toml"), config([
        `[delivery]\nadapter = "discard"`,
        `[tracing]`,
        `otlp_endpoint = "http://127.0.0.1:${otlp.port}"`,
        `service_name = "incoming-test"`,
        `protocol = "json"`,
        `export_interval = "100ms"`,
        `headers = { authorization = "Bearer \${OTLP_TOKEN}" }`
      ]))
      const server = yield* serve(["--config", "incoming.toml"], dir, { OTLP_TOKEN: "otlp-secret-789" })
      yield* server.waitFor(/tracing: exporting spans to http:\/\/127\.0\.0\.1:\d+\/v1\/traces \(OTLP\/HTTP json/)

      const ok = yield* SmtpClient.send({ port: server.port, from: "a@remote.test", to: ["u@example.test"], data: "Subject: t\r\n\r\nhi\r\n" })
      assert.strictEqual(ok.code, 250)
      const id = /queued as (\S+)/.exec(ok.text)?.[1]

      const spans = () => otlp.posts.flatMap(spansOf)
      const found = yield* waitFor("Session.data and Dispatcher.deliver spans at the collector", () => {
        const all = spans()
        const data = all.find((s) => s.name === "Session.data")
        const deliver = all.find((s) => s.name === "Dispatcher.deliver" && s.attributes["message"] === id)
        return data !== undefined && deliver !== undefined ? { data, deliver } : undefined
      }, () => `posts: ${otlp.posts.map((p) => p.body.toString("utf8")).join("\n")}\nserver:\n${server.output()}`)

      for (const post of otlp.posts) {
        assert.strictEqual(post.path, "/v1/traces")
        assert.match(post.headers["content-type"] ?? "", /^application\/json/)
        assert.strictEqual(post.headers.authorization, "Bearer otlp-secret-789")
      }
      assert.strictEqual(found.data.service, "incoming-test")
      assert.isString(found.data.attributes["session"])
      assert.strictEqual(found.deliver.attributes["adapter"], "discard")
      assert.notInclude(server.output(), "otlp-secret-789", "the header value never reaches a log line")

      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
    }))

  it.live("protobuf (the default): nothing before the interval, the last batch is flushed on SIGTERM", () =>
    Effect.gen(function*() {
      const otlp = yield* collector
      const dir = yield* TestIncoming.tempDir("incoming-tracing-")
      writeFileSync(join(dir, "incoming.toml"), config([
        `[delivery.maildir]\nroot = "mail"`,
        `[tracing]`,
        // A base URL with a trailing slash still ends up at /v1/traces.
        `otlp_endpoint = "http://127.0.0.1:${otlp.port}/"`,
        `export_interval = "1h"`
      ]))
      const server = yield* serve(["--config", "incoming.toml"], dir)

      const ok = yield* SmtpClient.send({ port: server.port, from: "a@remote.test", to: ["u@example.test"], data: "Subject: t\r\n\r\nhi\r\n" })
      assert.strictEqual(ok.code, 250)
      // Delivered into the Maildir: the Dispatcher.deliver span has started (and ends when it settles).
      const newDir = join(dir, "mail", "u@example.test", "new")
      yield* waitFor("the message in the Maildir", () => {
        try {
          return readdirSync(newDir).length > 0 ? true : undefined
        } catch {
          return undefined
        }
      }, () => server.output())
      assert.lengthOf(otlp.posts, 0, "an hour's export interval sends nothing while serving")

      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
      // The tracer is closed after the server, so the spans of the drain are in the last batch.
      const body = Buffer.concat(otlp.posts.map((p) => p.body))
      assert.isAbove(otlp.posts.length, 0, `no batch on shutdown:\n${server.output()}`)
      for (const post of otlp.posts) {
        assert.strictEqual(post.path, "/v1/traces")
        assert.strictEqual(post.headers["content-type"], "application/x-protobuf")
      }
      // Protobuf strings are their UTF-8 bytes on the wire.
      for (const name of ["Session.data", "Dispatcher.deliver", "incoming"]) assert.isTrue(body.includes(name), name)
    }))
})

describe("tracing configuration", () => {
  const load = (dir: string, env: Record<string, string> = {}) =>
    Load.load({ cwd: dir, env, searchPaths: ["./incoming.toml"] }).pipe(Effect.provide(NodeServices.layer))

  it.effect("off without [tracing]; defaults when present; INCOMING_TRACING_OTLP_ENDPOINT turns it on", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-tracing-config-")
      assert.isUndefined(Options.toRunner((yield* load(dir)).config).tracing)

      const fromEnv = Options.toRunner((yield* load(dir, { INCOMING_TRACING_OTLP_ENDPOINT: "http://collector:4318" })).config).tracing
      assert.deepStrictEqual(fromEnv, {
        endpoint: "http://collector:4318",
        serviceName: "incoming",
        protocol: "protobuf",
        sampleRatio: 1,
        exportIntervalMs: 5_000
      })

      writeFileSync(join(dir, "incoming.toml"), [
        `[tracing]`,
        `otlp_endpoint = "https://otlp.example.test"`,
        `sample_ratio = 0.25`,
        `headers = { "x-api-key" = "k1" }`
      ].join("\n"))
      const t = Options.toRunner((yield* load(dir)).config).tracing
      assert.strictEqual(t?.sampleRatio, 0.25)
      assert.isTrue(Redacted.isRedacted(t?.headers?.["x-api-key"]))
      assert.strictEqual(Redacted.value(t!.headers!["x-api-key"]!), "k1")
    }))

  it.effect("a bad endpoint or ratio is a load error naming the field", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-tracing-config-")
      writeFileSync(join(dir, "incoming.toml"), `[tracing]\notlp_endpoint = "grpc://collector:4317"\nsample_ratio = 2\nspeed = 1\n`)
      const error = yield* Effect.flip(load(dir))
      const text = String(error)
      assert.include(text, "tracing.otlp_endpoint: expected an http:// or https:// URL")
      assert.include(text, "tracing.sample_ratio")
      assert.include(text, "tracing.speed: unknown key")
    }))

  it.live("check-config prints header values as <redacted>", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-tracing-config-")
      writeFileSync(join(dir, "incoming.toml"), [
        `[tracing]`,
        `otlp_endpoint = "http://127.0.0.1:4318"`,
        `headers = { authorization = "Bearer \${OTLP_TOKEN}", "x-tenant" = "tenant-secret-1" }`
      ].join("\n"))
      const bin = new URL("../../src/bin/incoming.ts", import.meta.url).pathname
      const ran = yield* Effect.callback<{ readonly code: number | null; readonly out: string }>((resume) => {
        const child = spawn(process.execPath, [bin, "check-config"], {
          cwd: dir,
          env: { ...process.env, OTLP_TOKEN: "token-secret-2" },
          stdio: ["ignore", "pipe", "pipe"]
        })
        let out = ""
        child.stdout.on("data", (c: Buffer) => (out += c.toString()))
        child.stderr.on("data", (c: Buffer) => (out += c.toString()))
        child.on("close", (code) => resume(Effect.succeed({ code, out })))
      })
      assert.strictEqual(ran.code, 0, ran.out)
      assert.include(ran.out, `otlp_endpoint = "http://127.0.0.1:4318"`)
      assert.include(ran.out, `service_name = "incoming"`)
      assert.match(ran.out, /authorization = "<redacted>"/)
      assert.match(ran.out, /x-tenant"? = "<redacted>"/)
      assert.notInclude(ran.out, "token-secret-2")
      assert.notInclude(ran.out, "tenant-secret-1")
    }))
})

describe("Tracing", () => {
  it("tracesUrl appends /v1/traces to a base URL, once", () => {
    assert.strictEqual(Tracing.tracesUrl("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces")
    assert.strictEqual(Tracing.tracesUrl("https://otlp.example.test/otlp/"), "https://otlp.example.test/otlp/v1/traces")
    assert.strictEqual(Tracing.tracesUrl("http://c:4318/v1/traces"), "http://c:4318/v1/traces")
  })

  it.effect("ratio sampling decides at the root: a trace is exported whole or not at all", () =>
    Effect.gen(function*() {
      const made: Array<{ readonly name: string; readonly sampled: boolean }> = []
      const recording = Tracer.make({
        span(options) {
          made.push({ name: options.name, sampled: options.sampled })
          return new Tracer.NativeSpan(options)
        }
      })
      const trace = Effect.void.pipe(Effect.withSpan("child"), Effect.withSpan("root"))
      for (const [ratio, expected] of [[0, false], [1, true]] as const) {
        made.length = 0
        yield* trace.pipe(Effect.provideService(Tracer.Tracer, Tracing.sampleByRatio(recording, ratio)))
        assert.deepStrictEqual(made, [{ name: "root", sampled: expected }, { name: "child", sampled: expected }])
      }
    }))
})
