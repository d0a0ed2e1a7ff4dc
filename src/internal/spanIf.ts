/**
 * A span around an effect only when tracing is on. `Effect.withSpan` costs microseconds even
 * with the tracer turned off (a no-op span is still made and put in the context), which adds up
 * on paths that run for every message; the attributes are computed only when the span is made.
 */
import { Effect } from "effect"

export const withSpanIf = (enabled: boolean, name: string, attributes: () => Record<string, unknown>) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  enabled ? Effect.withSpan(name, { attributes: attributes() }, { captureStackTrace: false })(self) : self
