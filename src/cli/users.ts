/**
 * `incoming users add|passwd|remove NAME [--file PATH]`: edit the AUTH users file (scrypt
 * hashes, format in src/auth/UserFile.ts) of the standalone server.
 *
 * The password is never a flag (it would end up in shell history and `ps`): it is read from
 * stdin when stdin is not a terminal (`printf '%s\n' "$PW" | incoming users add alice`, first
 * line, trailing CR/LF removed), otherwise prompted for twice without echo. The file is
 * rewritten atomically, so a running server never sees half a file. `PasswordInput` is a
 * Context.Reference so tests (and host apps embedding the command) can supply the password.
 */
import { Console, Context, Data, Effect } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as UserFile from "../auth/UserFile.ts"

export const defaultUsersFile = "./var/incoming/users"

export class UsersCliError extends Data.TaggedError("UsersCliError")<{
  readonly reason:
    | { readonly _tag: "Edit"; readonly error: UserFile.EditError }
    | { readonly _tag: "Password"; readonly detail: string }
    | { readonly _tag: "File"; readonly detail: string }
}> {
  override get message(): string {
    const r = this.reason
    return r._tag === "Edit" ? UserFile.describeEditError(r.error) : r.detail
  }
}

export const isUsersCliError = (u: unknown): u is UsersCliError => u instanceof UsersCliError

const passwordError = (detail: string) => new UsersCliError({ reason: { _tag: "Password", detail } })

/** Reads one line from a terminal without echoing it. */
const promptHidden = (prompt: string) =>
  Effect.callback<string, UsersCliError>((resume) => {
    const stdin = process.stdin
    process.stderr.write(prompt)
    let value = ""
    stdin.setRawMode(true)
    stdin.resume()
    stdin.setEncoding("utf8")
    const done = (result: Effect.Effect<string, UsersCliError>) => {
      stdin.off("data", onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write("\n")
      resume(result)
    }
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n") return done(Effect.succeed(value))
        if (ch === "\u0003" || ch === "\u0004") return done(Effect.fail(passwordError("cancelled")))
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1)
        else value += ch
      }
    }
    stdin.on("data", onData)
    return Effect.sync(() => {
      stdin.off("data", onData)
      stdin.setRawMode(false)
      stdin.pause()
    })
  })

const readStdinLine = Effect.callback<string, UsersCliError>((resume) => {
  const stdin = process.stdin
  let data = ""
  stdin.setEncoding("utf8")
  const onData = (c: string) => (data += c)
  const onEnd = () => resume(Effect.succeed(data.split("\n")[0]!.replace(/\r$/, "")))
  const onError = (e: Error) => resume(Effect.fail(passwordError(`reading stdin: ${e.message}`)))
  stdin.on("data", onData).once("end", onEnd).once("error", onError)
  return Effect.sync(() => {
    stdin.off("data", onData).off("end", onEnd).off("error", onError)
  })
})

const readPassword: Effect.Effect<string, UsersCliError> = Effect.gen(function*() {
  if (process.stdin.isTTY !== true) return yield* readStdinLine
  const first = yield* promptHidden("Password: ")
  const again = yield* promptHidden("Repeat password: ")
  if (first !== again) return yield* passwordError("passwords do not match")
  return first
})

/** Where the password comes from (stdin or a no-echo prompt by default). */
export const PasswordInput = Context.Reference<Effect.Effect<string, UsersCliError>>("incoming/cli/PasswordInput", {
  defaultValue: () => readPassword
})

const file = Flag.String("file").pipe(Flag.withDescription("the users file"), Flag.withDefault(defaultUsersFile))
const name = Argument.String("name").pipe(Argument.withDescription("user name (the AUTH identity)"))

const newPassword = Effect.gen(function*() {
  const password = yield* (yield* PasswordInput)
  if (password.length === 0) return yield* passwordError("empty password")
  return password
})

const apply = (path: string, op: Parameters<typeof UserFile.edit>[1], done: string) =>
  UserFile.edit(path, op).pipe(
    Effect.mapError((e) => new UsersCliError({ reason: { _tag: "File", detail: e.message } })),
    Effect.flatMap((error) =>
      error === undefined ? Console.log(done) : Effect.fail(new UsersCliError({ reason: { _tag: "Edit", error } }))
    )
  )

/** Refuses before the password prompt what the edit would refuse after it (bad name, exists, missing). */
const precheck = (path: string, op: Parameters<typeof UserFile.precheck>[1]) =>
  UserFile.precheck(path, op).pipe(
    Effect.mapError((e) => new UsersCliError({ reason: { _tag: "File", detail: e.message } })),
    Effect.flatMap((error) => (error === undefined ? Effect.void : Effect.fail(new UsersCliError({ reason: { _tag: "Edit", error } }))))
  )

export const addHandler = Effect.fn("users.add")(function*(f: { readonly name: string; readonly file: string }) {
  yield* precheck(f.file, { _tag: "Add", name: f.name })
  const password = yield* newPassword
  yield* apply(f.file, { _tag: "Add", name: f.name, password }, `added ${f.name}`)
})

export const passwdHandler = Effect.fn("users.passwd")(function*(f: { readonly name: string; readonly file: string }) {
  yield* precheck(f.file, { _tag: "Passwd", name: f.name })
  const password = yield* newPassword
  yield* apply(f.file, { _tag: "Passwd", name: f.name, password }, `password changed for ${f.name}`)
})

export const removeHandler = Effect.fn("users.remove")(function*(f: { readonly name: string; readonly file: string }) {
  yield* apply(f.file, { _tag: "Remove", name: f.name }, `removed ${f.name}`)
})

const add = Command.make("add", { name, file }, addHandler).pipe(Command.withDescription("add a user (password from stdin or prompt)"))
const passwd = Command.make("passwd", { name, file }, passwdHandler).pipe(Command.withDescription("change a user's password"))
const remove = Command.make("remove", { name, file }, removeHandler).pipe(Command.withDescription("remove a user"))

export const users = Command.make("users").pipe(
  Command.withDescription("manage the AUTH users file"),
  Command.withSubcommands([add, passwd, remove])
)
