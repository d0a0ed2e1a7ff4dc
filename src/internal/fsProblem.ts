/**
 * What a failed file-system call means to an operator, in the words `ls` and `mkdir` use
 * (`read-only file system`, `not a directory`), so a start-up check and the failure it
 * predicts say the same thing.
 */

/** The errno code of a Node file-system error (`EROFS`), or "" for anything else. */
export const codeOf = (cause: unknown): string =>
  typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : ""

export const describe = (cause: unknown): string => {
  switch (codeOf(cause)) {
    case "EROFS":
      return "read-only file system"
    case "ENOTDIR":
      return "not a directory"
    case "EISDIR":
      return "is a directory"
    case "EACCES":
    case "EPERM":
      return "permission denied"
    case "ENOSPC":
    case "EDQUOT":
      return "no space left on device"
    case "ENOENT":
      return "no such file or directory"
    default:
      return cause instanceof Error ? cause.message : String(cause)
  }
}

/** Runs `f`, returning what it threw (`undefined` when it did not): for `statSync`-style probes. */
export const attempt = (f: () => void): unknown => {
  try {
    f()
    return undefined
  } catch (e) {
    return e
  }
}
