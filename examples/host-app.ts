// A host app: Incoming accepts mail for example.com and hands each message to our own Effect.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer, Stream } from "effect"
import { Adapters, DeliveryAdapter, Incoming, Telemetry } from "incoming-smtp"

const deliver = Adapters.Effect.layer("app", (delivery) =>
  Effect.gen(function*() {
    // The message is a Stream of bytes read from the queue: take its header section, then stop.
    const header = yield* delivery.body.pipe(Stream.decodeText(), Stream.splitLines, Stream.takeWhile((line) => line !== ""), Stream.runCollect)
    const subject = header.find((line) => /^subject:/i.test(line)) ?? "no subject"
    yield* Effect.log(`message ${delivery.id} (${delivery.size} bytes) for ${delivery.recipients.map((r) => r.rcpt)}: ${subject}`)
    if (delivery.envelope.mailFrom.endsWith("@spam.test")) {
      return delivery.recipients.map((r) => DeliveryAdapter.reject(r.rcpt, "550 5.7.1 not wanted"))
    }
  }))

// Log every event the server publishes, next to the server itself.
const watch = Layer.effectDiscard(Effect.gen(function*() {
  const telemetry = yield* Telemetry.Telemetry
  yield* Effect.forkScoped(Stream.runForEach(telemetry.events, (event) => Effect.logInfo(event._tag, event)))
}))

export const Server = (port = 2525) =>
  Incoming.layer({ domains: ["example.com"], listeners: [{ host: "127.0.0.1", port }] }).pipe(Layer.provideMerge(deliver))

if (import.meta.main) NodeRuntime.runMain(Layer.launch(watch.pipe(Layer.provideMerge(Server()))))
