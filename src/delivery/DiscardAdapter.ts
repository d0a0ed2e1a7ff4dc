/**
 * Acknowledges every recipient without storing anything, like Postfix's discard(8). For
 * benchmarks and tests of the receiving side; never the default.
 */
import { Effect, Layer } from "effect"
import * as DA from "./DeliveryAdapter.ts"

export const make: DA.DeliveryAdapter["Service"] = DA.DeliveryAdapter.of({
  name: "discard",
  deliver: (delivery) => Effect.succeed(DA.all(delivery, (rcpt) => DA.ok(rcpt, "discarded")))
})

export const layer: Layer.Layer<DA.DeliveryAdapter> = Layer.succeed(DA.DeliveryAdapter, make)
