/**
 * A `Dns` that answers from an in-memory zone: for tests (nothing leaves the process, answers
 * are exact) and for host apps that want fixed answers.
 *
 * A name absent from the zone is `NotFound`; a name present without records of the asked type is
 * `NoData`. `fail` makes a name (or one of its types) time out or fail, to test how callers
 * handle DNS trouble. Every question is logged, so tests can count lookups (SPF's limits).
 */
import { Effect, Layer } from "effect"
import { type Answers, Dns, DnsError, type DnsErrorReason, type MxRecord, normalizeName, type RecordType } from "./Dns.ts"

export interface ZoneEntry {
  readonly A?: ReadonlyArray<string>
  readonly AAAA?: ReadonlyArray<string>
  readonly MX?: ReadonlyArray<MxRecord>
  /** A record given as one string is one character-string; long DKIM keys may be split by hand. */
  readonly TXT?: ReadonlyArray<string | ReadonlyArray<string>>
  readonly PTR?: ReadonlyArray<string>
  /** Trouble for every type of this name, or per type. */
  readonly fail?: "Timeout" | "ServerFailure" | Partial<Record<RecordType, "Timeout" | "ServerFailure" | "NotFound" | "NoData">>
}

export type Zone = Readonly<Record<string, ZoneEntry>>

export interface Question {
  readonly name: string
  readonly type: RecordType
}

export interface ZoneDns {
  readonly dns: Dns["Service"]
  /** Every question asked so far, in order. */
  readonly questions: () => ReadonlyArray<Question>
}

const reasonFor = (tag: "Timeout" | "ServerFailure" | "NotFound" | "NoData"): DnsErrorReason =>
  tag === "ServerFailure" ? { _tag: "ServerFailure", detail: "SERVFAIL (zone)" } : { _tag: tag }

export const make = (zone: Zone): ZoneDns => {
  const entries = new Map(Object.entries(zone).map(([name, entry]) => [normalizeName(name), entry]))
  const asked: Array<Question> = []
  const resolve = <T extends RecordType>(name: string, type: T): Effect.Effect<Answers[T], DnsError> =>
    Effect.suspend(() => {
      asked.push({ name, type })
      const fail = (tag: "Timeout" | "ServerFailure" | "NotFound" | "NoData") =>
        Effect.fail(new DnsError({ name, type, reason: reasonFor(tag) }))
      const entry = entries.get(normalizeName(name))
      if (entry === undefined) return fail("NotFound")
      const trouble = typeof entry.fail === "string" ? entry.fail : entry.fail?.[type]
      if (trouble !== undefined) return fail(trouble)
      const records = entry[type]
      if (records === undefined || records.length === 0) return fail("NoData")
      const answer = type === "TXT"
        ? (records as ReadonlyArray<string | ReadonlyArray<string>>).map((r) => typeof r === "string" ? [r] : [...r])
        : [...records]
      return Effect.succeed(answer as unknown as Answers[T])
    })
  return { dns: Dns.of({ resolve }), questions: () => [...asked] }
}

export const layer = (zone: Zone): Layer.Layer<Dns> => Layer.succeed(Dns, make(zone).dns)

/**
 * The default for tests: an empty zone, so every name is `NotFound` and no test that forgot to
 * give a zone reaches the real DNS by accident.
 */
export const layerEmpty: Layer.Layer<Dns> = layer({})
