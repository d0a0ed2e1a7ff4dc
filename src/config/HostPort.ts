/**
 * Parses `HOST:PORT` listen addresses as operators write them: `127.0.0.1:2525`, `[::1]:25`,
 * `:2525` (all IPv4 interfaces), `2525`.
 */
export interface HostPort {
  readonly host: string
  readonly port: number
}

export const parseHostPort = (text: string): HostPort | string => {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text)
  if (m === null) return `"${text}" is not HOST:PORT (IPv6 as [::1]:PORT)`
  const port = Number(m[3])
  if (port > 65535) return `port ${port} is out of range (0-65535)`
  const host = m[1] ?? (m[2] === undefined || m[2] === "" ? "0.0.0.0" : m[2])
  return { host, port }
}
