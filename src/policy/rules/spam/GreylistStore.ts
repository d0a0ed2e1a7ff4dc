/**
 * Where greylisting keeps what it has seen: the `GreylistStore` contract, so the embedded SQLite
 * store (SqliteGreylistStore.ts, under `data_dir`) and a store shared by several nodes (PostgreSQL,
 * beside the PostgreSQL queue) are interchangeable under the `greylist` rule (Greylist.ts).
 *
 * Two tables of plain records, keyed by strings the rule builds: triplets (client network, sender,
 * recipient) with when they were first seen, last seen and passed, and clients (network) with how
 * many triplets they passed, for `auto_allow`. Time is milliseconds since the epoch, given by the
 * rule (from Effect's Clock, so tests drive it with TestClock). The store decides nothing; it must
 * stay bounded: `prune` drops what the rule says is stale, `size` says how much is kept.
 *
 * Losing the store costs a delay, not mail: a failing store makes the rule let mail through.
 */
import { Data, type Effect } from "effect"

export interface TripletRecord {
  readonly firstSeen: number
  readonly lastSeen: number
  /** When a retry after the delay was let through; undefined while the triplet waits. */
  readonly passedAt: number | undefined
}

export interface ClientRecord {
  /** Triplets of this client network that passed. */
  readonly passes: number
  readonly lastSeen: number
}

export interface PruneBefore {
  /** Drop waiting triplets first seen before this (their retry window is over). */
  readonly pendingFirstSeen: number
  /** Drop passed triplets and clients last seen before this (their lifetime is over). */
  readonly passedLastSeen: number
}

export type GreylistStoreErrorReason =
  | { readonly _tag: "Unavailable"; readonly detail: string }

export class GreylistStoreError extends Data.TaggedError("GreylistStoreError")<{
  readonly reason: GreylistStoreErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    return `greylist store: ${this.reason.detail}`
  }
}

export interface GreylistStore {
  readonly getTriplet: (key: string) => Effect.Effect<TripletRecord | undefined, GreylistStoreError>
  readonly putTriplet: (key: string, record: TripletRecord) => Effect.Effect<void, GreylistStoreError>
  readonly getClient: (client: string) => Effect.Effect<ClientRecord | undefined, GreylistStoreError>
  readonly putClient: (client: string, record: ClientRecord) => Effect.Effect<void, GreylistStoreError>
  /** Drops stale records; then, if more than `maxTriplets` remain, the waiting ones seen least recently. Returns how many went. */
  readonly prune: (before: PruneBefore, maxTriplets: number) => Effect.Effect<number, GreylistStoreError>
  /** Triplets kept. */
  readonly size: Effect.Effect<number, GreylistStoreError>
}
