/**
 * A users file with scrypt password hashes: the standalone server's UserStore, and the
 * functions `incoming users` uses to edit it.
 *
 * Format, one user per line (blank lines and lines starting with `#` are kept as they are):
 *
 *     name:scrypt$N$r$p$SALT$HASH
 *
 * N, r, p are the scrypt cost parameters in decimal; SALT (16 random bytes per user) and HASH (a
 * 32-byte key) are base64 without padding. A name is 1–256 characters with no `:`, whitespace or
 * control character. Verification derives the key with the stored parameters, so the defaults
 * can be raised later without invalidating existing lines, and compares in constant time. An
 * unknown user costs the same scrypt run as a known one, so response time does not tell which
 * names exist. Edits rewrite the file atomically (temp file in the same directory, fsync,
 * rename, fsync of the directory), mode 0600, under `<file>.lock` so concurrent editors take turns.
 *
 * The file is re-read when its mtime or size changes, so `incoming users passwd` takes effect on
 * a running server without a restart.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto"
import { constants } from "node:fs"
import { open, readFile, rename, stat, unlink } from "node:fs/promises"
import { basename, dirname, join } from "node:path"
import { Effect, Layer, type Scope } from "effect"
import { UserStore, UserStoreError } from "./UserStore.ts"

export interface ScryptParams {
  readonly N: number
  readonly r: number
  readonly p: number
}

/** 2^15 × 8 × 1: ~30–60 ms per derivation on a server core, 32 MiB of memory. */
export const defaultParams: ScryptParams = { N: 32768, r: 8, p: 1 }
const keyLength = 32
const saltLength = 16

export interface Line {
  readonly _tag: "User"
  readonly name: string
  readonly hash: string
}
export type FileLine = Line | { readonly _tag: "Other"; readonly text: string }

const nameRe = /^[^\s:\x00-\x1f\x7f]{1,256}$/
const hashRe = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/

export const isValidName = (name: string): boolean => nameRe.test(name)

const b64 = (b: Buffer) => b.toString("base64").replace(/=+$/, "")

const derive = (password: string, salt: Buffer, params: ScryptParams, length: number) =>
  Effect.callback<Buffer, UserStoreError>((resume) => {
    scrypt(password.normalize("NFC"), salt, length, { ...params, maxmem: 256 * params.N * params.r + 1024 * 1024 }, (err, key) => {
      if (err !== null) {
        resume(Effect.fail(new UserStoreError({ reason: { _tag: "Unavailable", detail: `scrypt: ${err.message}` }, cause: err })))
      } else resume(Effect.succeed(key))
    })
  })

/** Hashes `password` with a fresh salt, in the file's format (without the `name:` prefix). */
export const hashPassword = (password: string, params: ScryptParams = defaultParams) =>
  Effect.gen(function*() {
    const salt = randomBytes(saltLength)
    const key = yield* derive(password, salt, params, keyLength)
    return `scrypt$${params.N}$${params.r}$${params.p}$${b64(salt)}$${b64(key)}`
  })

const decoy = `scrypt$${defaultParams.N}$${defaultParams.r}$${defaultParams.p}$${b64(Buffer.alloc(saltLength))}$${b64(Buffer.alloc(keyLength))}`

/** Whether `password` matches `encoded`; a malformed hash never matches. */
export const verifyHash = (encoded: string, password: string) =>
  Effect.gen(function*() {
    const m = hashRe.exec(encoded)
    if (m === null) return false
    const params = { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) }
    const salt = Buffer.from(m[4]!, "base64")
    const expected = Buffer.from(m[5]!, "base64")
    if (expected.length === 0) return false
    const key = yield* derive(password, salt, params, expected.length)
    return timingSafeEqual(key, expected)
  })

/** Parses the file; `path` is only for error messages. */
export const parse = (text: string, path: string): Effect.Effect<ReadonlyArray<FileLine>, UserStoreError> =>
  Effect.suspend(() => {
    const lines = text.split(/\r?\n/)
    if (lines.at(-1) === "") lines.pop()
    const out: Array<FileLine> = []
    const seen = new Set<string>()
    for (const [i, text] of lines.entries()) {
      if (text.trim() === "" || text.trimStart().startsWith("#")) {
        out.push({ _tag: "Other", text })
        continue
      }
      const colon = text.indexOf(":")
      const name = colon < 0 ? "" : text.slice(0, colon)
      const hash = colon < 0 ? "" : text.slice(colon + 1)
      const bad = (detail: string) =>
        Effect.fail(new UserStoreError({ reason: { _tag: "Malformed", path, line: i + 1, detail } }))
      if (!isValidName(name)) return bad("expected name:scrypt$N$r$p$salt$hash")
      if (!hashRe.test(hash)) return bad(`bad hash for user ${name}`)
      if (seen.has(name)) return bad(`duplicate user ${name}`)
      seen.add(name)
      out.push({ _tag: "User", name, hash })
    }
    return Effect.succeed(out)
  })

export const format = (lines: ReadonlyArray<FileLine>): string =>
  lines.map((l) => (l._tag === "User" ? `${l.name}:${l.hash}` : l.text)).join("\n") + (lines.length > 0 ? "\n" : "")

const ioError = (tag: "Unreadable" | "WriteFailed", path: string) => (cause: unknown) =>
  new UserStoreError({ reason: { _tag: tag, path, detail: cause instanceof Error ? cause.message : String(cause) }, cause })

const isMissing = (cause: unknown) => typeof cause === "object" && cause !== null && (cause as { code?: unknown }).code === "ENOENT"

/** Reads and parses `path`; a missing file is an empty one. */
export const read = (path: string): Effect.Effect<ReadonlyArray<FileLine>, UserStoreError> =>
  Effect.tryPromise({
    try: () => readFile(path, "utf8").catch((e: unknown) => (isMissing(e) ? "" : Promise.reject(e))),
    catch: ioError("Unreadable", path)
  }).pipe(Effect.flatMap((text) => parse(text, path)))

/** Replaces `path` atomically with `lines` (mode 0600). */
export const write = (path: string, lines: ReadonlyArray<FileLine>): Effect.Effect<void, UserStoreError> =>
  Effect.tryPromise({
    try: async () => {
      const dir = dirname(path)
      const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`)
      const file = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600)
      try {
        await file.writeFile(format(lines))
        await file.sync()
      } finally {
        await file.close()
      }
      try {
        await rename(tmp, path)
      } catch (e) {
        await unlink(tmp).catch(() => undefined)
        throw e
      }
      const d = await open(dir, "r")
      try {
        await d.sync()
      } finally {
        await d.close()
      }
    },
    catch: ioError("WriteFailed", path)
  })

export type EditError =
  | { readonly _tag: "UserExists"; readonly name: string }
  | { readonly _tag: "NoSuchUser"; readonly name: string }
  | { readonly _tag: "InvalidName"; readonly name: string }

export const describeEditError = (e: EditError): string =>
  e._tag === "UserExists"
    ? `user ${e.name} already exists`
    : e._tag === "NoSuchUser"
    ? `no user ${e.name}`
    : `invalid user name ${JSON.stringify(e.name)} (1-256 characters, no ':', spaces or control characters)`

const lockWaitMs = 5_000
const lockRetryMs = 50

/**
 * Holds `<path>.lock` (created exclusively) for the scope: two `incoming users` runs editing the
 * same file would otherwise each rewrite it from what they read, and the later rename would drop
 * the other's change. Waits up to 5 s (on the Clock) for another editor; a lock left by a crashed
 * one is named in the error so an operator can remove it. The wait is interruptible: each try
 * creates the file and registers its removal as one step, so an interrupted wait never leaves a
 * lock behind.
 */
const lock = (path: string): Effect.Effect<void, UserStoreError, Scope.Scope> => {
  const lockPath = `${path}.lock`
  const create = Effect.tryPromise({
    try: async () => {
      try {
        const handle = await open(lockPath, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600)
        try {
          await handle.writeFile(`${process.pid}\n`)
        } finally {
          await handle.close()
        }
        return true
      } catch (e) {
        if ((e as { code?: unknown }).code === "EEXIST") return false
        throw e
      }
    },
    catch: ioError("WriteFailed", path)
  })
  const remove = Effect.promise(() => unlink(lockPath).catch(() => undefined))
  const tryLock = Effect.uninterruptible(
    Effect.flatMap(create, (held) => (held ? Effect.as(Effect.addFinalizer(() => remove), true) : Effect.succeed(false)))
  )
  const waitForLock: Effect.Effect<void, UserStoreError, Scope.Scope> = Effect.flatMap(
    tryLock,
    (held) => (held ? Effect.void : Effect.andThen(Effect.sleep(lockRetryMs), Effect.suspend(() => waitForLock)))
  )
  return waitForLock.pipe(Effect.timeoutOrElse({
    duration: lockWaitMs,
    orElse: () =>
      Effect.fail(ioError("WriteFailed", path)(
        new Error(`locked by another editor for ${lockWaitMs / 1000} s: ${lockPath} (remove it if no \`incoming users\` is running)`)
      ))
  }))
}

type EditKind = { readonly _tag: "Add" | "Passwd" | "Remove"; readonly name: string }

/** Why `op` is refused given the file's lines (a name already there for Add, missing otherwise). */
const refusal = (lines: ReadonlyArray<FileLine>, op: EditKind): EditError | undefined => {
  if (!isValidName(op.name)) return { _tag: "InvalidName", name: op.name }
  const exists = lines.some((l) => l._tag === "User" && l.name === op.name)
  if (op._tag === "Add" && exists) return { _tag: "UserExists", name: op.name }
  if (op._tag !== "Add" && !exists) return { _tag: "NoSuchUser", name: op.name }
  return undefined
}

/**
 * Adds, re-hashes or removes a user; the result is `undefined` on success or the reason it was
 * not done. Editors take `<path>.lock` first, so concurrent edits apply one after the other.
 */
export const edit = (
  path: string,
  op: { readonly _tag: "Add" | "Passwd"; readonly name: string; readonly password: string; readonly params?: ScryptParams } | {
    readonly _tag: "Remove"
    readonly name: string
  }
): Effect.Effect<EditError | undefined, UserStoreError> =>
  Effect.gen(function*() {
    if (!isValidName(op.name)) return { _tag: "InvalidName", name: op.name } as EditError
    yield* lock(path)
    const lines = yield* read(path)
    const refused = refusal(lines, op)
    if (refused !== undefined) return refused
    const index = lines.findIndex((l) => l._tag === "User" && l.name === op.name)
    const next = [...lines]
    if (op._tag === "Remove") next.splice(index, 1)
    else {
      const line: FileLine = { _tag: "User", name: op.name, hash: yield* hashPassword(op.password, op.params) }
      if (index >= 0) next[index] = line
      else next.push(line)
    }
    yield* write(path, next)
    return undefined
  }).pipe(Effect.scoped)

/**
 * Why `op` would be refused given the file as it is now (checked again under the lock by
 * `edit`): lets the CLI say "no such user" before asking for a password.
 */
export const precheck = (path: string, op: EditKind): Effect.Effect<EditError | undefined, UserStoreError> =>
  isValidName(op.name) ? Effect.map(read(path), (lines) => refusal(lines, op)) : Effect.succeed({ _tag: "InvalidName", name: op.name })

/** The UserStore over `path`, re-reading it when it changes. CRAM-MD5 is not available (hashes only). */
export const make = (path: string): UserStore["Service"] => {
  let cache: { readonly key: string; readonly users: ReadonlyMap<string, string> } | undefined
  const users = Effect.gen(function*() {
    const st = yield* Effect.tryPromise({
      try: () => stat(path).catch((e: unknown) => (isMissing(e) ? undefined : Promise.reject(e))),
      catch: ioError("Unreadable", path)
    })
    const key = st === undefined ? "missing" : `${st.mtimeMs}:${st.size}`
    if (cache?.key === key) return cache.users
    const lines = yield* read(path)
    const map = new Map<string, string>()
    for (const l of lines) if (l._tag === "User") map.set(l.name, l.hash)
    cache = { key, users: map }
    return map
  })
  return UserStore.of({
    verify: (user, password) =>
      Effect.gen(function*() {
        const hash = (yield* users).get(user)
        // Same work for an unknown user: timing must not reveal which names exist.
        const ok = yield* verifyHash(hash ?? decoy, password)
        return hash !== undefined && ok
      }),
    cramSecret: undefined
  })
}

export const layer = (path: string): Layer.Layer<UserStore> => Layer.sync(UserStore, () => make(path))

