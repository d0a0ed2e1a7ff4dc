/**
 * Whether an effect is already decided. In Effect 4 an `Exit` is an Effect, and
 * `Effect.succeed` / `Effect.fail` return one: a hook or a lookup that knows its answer while
 * being called can hand it back as such, and the caller can use it without forking a fiber.
 */
import { type Effect, Exit } from "effect"

export const isDecided = <A, E, R>(effect: Effect.Effect<A, E, R>): effect is Effect.Effect<A, E, R> & Exit.Exit<A, E> =>
  Exit.isExit(effect)
