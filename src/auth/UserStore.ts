/**
 * Who may AUTH: the contract the AUTH handler checks credentials against.
 *
 * `verify` answers whether a password is right; a store that cannot answer (file unreadable,
 * database down) fails with `UserStoreError`, which the handler turns into 454 4.7.0 (RFC 4954:
 * temporary authentication failure), never a 535 that would make the client drop the account.
 * `cramSecret` is optional: only a store that can give a user's clear secret supports CRAM-MD5,
 * and the listener advertises CRAM-MD5 only then.
 */
import { Context, Data, Effect, Layer, Option } from "effect"
import * as SmtpReply from "../protocol/SmtpReply.ts"

export type UserStoreErrorReason =
  | { readonly _tag: "Unreadable"; readonly path: string; readonly detail: string }
  | { readonly _tag: "Malformed"; readonly path: string; readonly line: number; readonly detail: string }
  | { readonly _tag: "WriteFailed"; readonly path: string; readonly detail: string }
  | { readonly _tag: "Unavailable"; readonly detail: string }

export class UserStoreError extends Data.TaggedError("UserStoreError")<{
  readonly reason: UserStoreErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    switch (r._tag) {
      case "Malformed":
        return `${r.path}:${r.line}: ${r.detail}`
      case "Unavailable":
        return `user store unavailable: ${r.detail}`
      default:
        return `${r.path}: ${r.detail}`
    }
  }
  get reply(): SmtpReply.SmtpReply {
    return temporaryAuthFailure
  }
}

export const temporaryAuthFailure = SmtpReply.make(454, "4.7.0", "Temporary authentication failure, try again later")

export class UserStore extends Context.Service<UserStore, {
  readonly verify: (user: string, password: string) => Effect.Effect<boolean, UserStoreError>
  /** The shared secret for CRAM-MD5; absent when the store keeps only hashes. */
  readonly cramSecret?: ((user: string) => Effect.Effect<Option.Option<string>, UserStoreError>) | undefined
}>()("incoming/UserStore") {}

export interface EffectStoreOptions<R> {
  readonly verify: (user: string, password: string) => Effect.Effect<boolean, unknown, R>
  readonly cramSecret?: ((user: string) => Effect.Effect<Option.Option<string>, unknown, R>) | undefined
}

const unavailable = (cause: unknown) =>
  new UserStoreError({ reason: { _tag: "Unavailable", detail: cause instanceof Error ? cause.message : String(cause) }, cause })

/** A store backed by host-app Effects (their failures become `UserStoreError`, i.e. 454). */
export const fromEffect = <R>(options: EffectStoreOptions<R>): Effect.Effect<UserStore["Service"], never, R> =>
  Effect.map(Effect.context<R>(), (ctx) => {
    const cram = options.cramSecret
    return UserStore.of({
      verify: (user, password) =>
        Effect.suspend(() => options.verify(user, password)).pipe(Effect.provideContext(ctx), Effect.mapError(unavailable)),
      cramSecret: cram === undefined
        ? undefined
        : (user) => Effect.suspend(() => cram(user)).pipe(Effect.provideContext(ctx), Effect.mapError(unavailable))
    })
  })

export const layerEffect = <R>(options: EffectStoreOptions<R>): Layer.Layer<UserStore, never, R> =>
  Layer.effect(UserStore, fromEffect(options))

/** A fixed map of users and clear passwords, for tests and examples (supports CRAM-MD5). */
export const fromRecord = (users: Readonly<Record<string, string>>): UserStore["Service"] =>
  UserStore.of({
    verify: (user, password) => Effect.sync(() => Object.hasOwn(users, user) && users[user] === password),
    cramSecret: (user) => Effect.succeed(Object.hasOwn(users, user) ? Option.some(users[user]!) : Option.none())
  })
