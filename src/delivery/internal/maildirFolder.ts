/**
 * Maildir folder names for recipients: one folder per mailbox, and never one folder for two.
 *
 * The name is the address with ASCII letters folded to lower case and every byte outside
 * `a-z 0-9 . _ + = @ -` written as `%XX` (its UTF-8 bytes, upper-case hex), a leading `.` too
 * (Maildir++ readers take `.name` for a sub-folder). `%` is always escaped, so the encoding is
 * reversible (`addressOf`) and two addresses share a folder only when they differ in the case of
 * ASCII letters: `User@x` and `user@x` are one mailbox (a documented choice, as Incoming's
 * recipient lists compare local parts case-insensitively, although RFC 5321 §2.4 leaves case to
 * the receiving host), while `a/b@x`, `a_b@x`, `a?b@x`, `é@x` and `ü@x` all get their own. Domains
 * arrive canonical (lower case, A-labels). A name longer than a file name may be (255 octets) is
 * cut and ends in `~` and the SHA-256 of the whole name: `~` never appears otherwise.
 *
 * Before this, everything outside `[a-z0-9@._+=-]` became `_` after lower-casing everything, so
 * `a/b@`, `a_b@`, `A_B@` and `a?b@` shared one folder. Addresses made only of that alphabet (the
 * usual ones) keep their folder; `legacyFolderFor` gives the old name of the others.
 */
import { createHash } from "node:crypto"

const maxNameOctets = 255
const safe = /^[a-z0-9._+=@-]$/

const hex = (byte: number) => `%${byte.toString(16).toUpperCase().padStart(2, "0")}`

/** The folder name for a recipient (see the module comment). */
export const folderFor = (rcpt: string): string => {
  const folded = rcpt.replace(/[A-Z]/g, (c) => c.toLowerCase())
  let name = ""
  for (const byte of Buffer.from(folded, "utf8")) {
    const ch = String.fromCharCode(byte)
    name += byte < 0x80 && safe.test(ch) && !(name === "" && ch === ".") ? ch : hex(byte)
  }
  if (name.length <= maxNameOctets) return name
  const digest = createHash("sha256").update(name).digest("hex")
  return `${name.slice(0, maxNameOctets - digest.length - 1)}~${digest}`
}

/** The address a folder name stands for (ASCII letters in lower case); `undefined` for a name `folderFor` does not make. */
export const addressOf = (name: string): string | undefined => {
  if (name.includes("~") || !/^(?:[a-z0-9._+=@-]|%[0-9A-F]{2})*$/.test(name) || name.startsWith(".")) return undefined
  const bytes: Array<number> = []
  for (let i = 0; i < name.length; i++) {
    if (name[i] === "%") {
      bytes.push(Number.parseInt(name.slice(i + 1, i + 3), 16))
      i += 2
    } else {
      bytes.push(name.charCodeAt(i))
    }
  }
  const address = Buffer.from(bytes).toString("utf8")
  // Only the one spelling `folderFor` makes (upper-case hex, escapes only where needed, valid UTF-8).
  return folderFor(address) === name ? address : undefined
}

/** The name the adapter used before folder names were made injective (to find mail filed there). */
export const legacyFolderFor = (rcpt: string): string => {
  const safeName = rcpt.toLowerCase().replace(/[^a-z0-9@._+=-]/g, "_")
  return safeName.startsWith(".") ? `_${safeName.slice(1)}` : safeName
}
