/**
 * What one listener is: address, TLS mode and the per-connection limits its sessions enforce.
 * Defaults follow RFC 5321 4.5.3.2 timeouts and common MTA practice; every one is overridable.
 */
export type TlsMode = "disabled" | "optional" | "required" | "implicit"

/**
 * `mx` (port 25): AUTH optional, STARTTLS offered when a certificate is configured.
 * `submission` (587): STARTTLS required before AUTH, AUTH required before MAIL.
 * `submissions` (465): implicit TLS, AUTH required before MAIL.
 * `lmtp` (RFC 2033): LHLO instead of HELO/EHLO, and after DATA one reply per accepted recipient,
 * for an MTA (Postfix, Exim) that hands its mail on over LMTP; TCP or a Unix socket (`path`).
 */
export type ListenerMode = "mx" | "submission" | "submissions" | "lmtp"

export interface TlsOptions {
  readonly mode: TlsMode
  /** PEM certificate chain file (required unless mode is "disabled"). */
  readonly cert?: string | undefined
  /** PEM private key file. */
  readonly key?: string | undefined
  /**
   * More certificates, chosen by the name the client asks for (SNI): server name → files. A
   * client that asks for no name, or another one, gets `cert`/`key`.
   */
  readonly sni?: Readonly<Record<string, { readonly cert: string; readonly key: string }>> | undefined
  /**
   * Use the certificates the ACME manager keeps (`IncomingOptions.acme`): it fills `cert`/`key`
   * (the listener's host name, else the first managed name) and `sni` (every managed name).
   */
  readonly acme?: boolean | undefined
}

/**
 * PROXY protocol (v1 and v2) from load balancers: peers in `trusted` (CIDR ranges or addresses)
 * must start every connection with a header, whose client address then stands for the peer
 * everywhere (limits, relay rules, policies, `Received:`); other peers may not send one.
 */
export interface ProxyProtocolOptions {
  readonly trusted: ReadonlyArray<string>
  /** From the accept to the end of the header; a slower header closes the connection. */
  readonly timeoutMs: number
}

export const defaultProxyTimeoutMs = 5_000

export interface ListenerOptions {
  readonly name: string
  readonly mode: ListenerMode
  /** Offer and accept AUTH before TLS (default false: credentials never travel in clear). */
  readonly allowInsecureAuth: boolean
  readonly host: string
  readonly port: number
  /** A Unix socket to listen on instead of `host`/`port` (its clients count as 127.0.0.1). */
  readonly path?: string | undefined
  readonly tls: TlsOptions
  /** Our name in the greeting and in `Received: by`. */
  readonly hostname: string
  /** Largest message accepted, in bytes (advertised as SIZE, counted while DATA arrives). */
  readonly maxSize: number
  readonly maxRecipients: number
  readonly maxCommands: number
  readonly maxErrors: number
  readonly idleTimeoutMs: number
  readonly commandTimeoutMs: number
  readonly dataTimeoutMs: number
  readonly maxConnectionTimeMs: number
  readonly maxConnections: number
  readonly maxConnectionsPerIp: number
  /** Pause before the 220 greeting; > 0 enables early-talker rejection. */
  readonly greetingDelayMs: number
  /** Bare CR / bare LF in DATA: refuse the message (default) or rewrite them to CRLF. */
  readonly lineEndings: "reject" | "normalize"
  /** Deadline for a policy/queue hook before the session answers 451 4.4.2. */
  readonly hookTimeoutMs: number
  /** Priority (-9..9) of the mail this listener accepts, when set; the highest level that applies wins. */
  readonly priority?: number | undefined
  readonly proxyProtocol?: ProxyProtocolOptions | undefined
}

export const defaults: Omit<ListenerOptions, "name" | "host" | "port" | "hostname"> = {
  mode: "mx",
  allowInsecureAuth: false,
  tls: { mode: "disabled" },
  maxSize: 25 * 1024 * 1024,
  maxRecipients: 100,
  maxCommands: 100_000,
  maxErrors: 10,
  idleTimeoutMs: 5 * 60_000,
  commandTimeoutMs: 5 * 60_000,
  dataTimeoutMs: 10 * 60_000,
  maxConnectionTimeMs: 60 * 60_000,
  maxConnections: 1000,
  maxConnectionsPerIp: 100,
  greetingDelayMs: 0,
  lineEndings: "reject",
  hookTimeoutMs: 60_000
}

export type ListenerInput = Partial<ListenerOptions> & { readonly port: number }

export const resolve = (input: ListenerInput, fallbackHostname: string): ListenerOptions => {
  const host = input.host ?? "127.0.0.1"
  const scheme = input.mode === "lmtp" ? "lmtp" : "smtp"
  return {
    ...defaults,
    ...input,
    host,
    hostname: input.hostname ?? fallbackHostname,
    name: input.name ?? (input.path !== undefined ? `${scheme}:${input.path}` : `${scheme}:${host}:${input.port}`)
  }
}
