/**
 * The building blocks of the config schema shared by its modules (`IncomingConfig.ts`,
 * `AcmeConfig.ts`): a key with a default, durations and sizes written as text, counts, secrets
 * and `HOST:PORT` listen addresses.
 */
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { parseHostPort } from "./HostPort.ts"
import { Duration, formatDuration, formatSize, Size } from "./Units.ts"

export const withDefault = <S extends Schema.Top>(schema: S, value: S["Encoded"]) =>
  schema.pipe(Schema.withDecodingDefaultKey<S>(Effect.succeed(value)))
export const duration = (ms: number) => withDefault(Duration, formatDuration(ms))
export const size = (bytes: number) => withDefault(Size, formatSize(bytes))
export const count = (min: number, value: number) => withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(min)), value)
export const NonEmpty = Schema.String.check(Schema.isNonEmpty())

/** A secret: decoded into `Redacted`; a wrong value is reported without echoing it. */
const secretMessage = "expected a non-empty string (a secret: the value is not shown)"
export const Secret = Schema.RedactedFromValue(
  Schema.String.annotate({ message: secretMessage }).check(Schema.isNonEmpty({ message: secretMessage }))
)

/** `"HOST:PORT"` (IPv6 as `"[::1]:9025"`), decoded to its parts. */
export const ListenAddress = Schema.String.pipe(
  Schema.decodeTo(
    Schema.Struct({ host: Schema.String, port: Schema.Number }),
    SchemaTransformation.transformEffect<{ readonly host: string; readonly port: number }, string>({
      decode: (text) => {
        const hp = parseHostPort(text)
        return typeof hp === "string" ? Effect.fail(new SchemaIssue.InvalidValue({ message: `bad listen address: ${hp}` })) : Effect.succeed(hp)
      },
      encode: ({ host, port }) => Effect.succeed(host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)
    })
  )
)
