/**
 * The in-process test server: a real listener on 127.0.0.1 port 0, the memory queue (unless the
 * options name another), a spool in
 * a fresh temporary directory and the capturing adapter, with fast dispatcher timings. Host apps
 * test their policies and delivery code against it with real SMTP clients.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer, type Scope } from "effect"
import type { DeliveryAdapter } from "../delivery/DeliveryAdapter.ts"
import * as Incoming from "../Incoming.ts"
import { Listeners } from "../smtp/Listener.ts"
import type { ListenerInput } from "../smtp/ListenerOptions.ts"
import * as CapturingAdapter from "./CapturingAdapter.ts"

export interface TestOptions extends Partial<Omit<Incoming.IncomingOptions, "listeners">> {
  readonly listener?: Partial<ListenerInput>
}

/** A temporary directory removed when the layer closes. */
export const tempDir = (prefix = "incoming-test-"): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), prefix))),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )

const incomingOptions = (options: TestOptions, dataDir: string): Incoming.IncomingOptions => ({
  hostname: "mx.test",
  domains: ["example.test"],
  drainTimeoutMs: 2_000,
  queue: { kind: "memory" },
  ...options,
  dataDir: options.dataDir ?? dataDir,
  dispatcher: { workers: 2, idlePollMs: 200, backoff: { baseMs: 1_000, maxMs: 60_000, jitter: 0 }, ...options.dispatcher },
  listeners: [{ host: "127.0.0.1", port: 0, name: "test", ...options.listener }]
})

/** The server with a delivery adapter of your own. */
export const layerWith = (options: TestOptions = {}) =>
  Layer.unwrap(Effect.map(tempDir(), (dir) => Incoming.layer(incomingOptions(options, dir))))

/** The server delivering to the capturing adapter (`Captured` is provided too). */
export const layer = (options: TestOptions = {}) =>
  layerWith(options).pipe(Layer.provideMerge(CapturingAdapter.layer))

/** The port of the first listener. */
export const port: Effect.Effect<number, never, Listeners> = Listeners.use((l) => Effect.succeed(l.all[0]!.port))

export type { DeliveryAdapter }
