/**
 * The CA set for a TLS client that was given extra CAs: Node's default set plus the extras.
 *
 * A `ca` option on a TLS connection or an HTTPS agent replaces Node's default CA set instead of
 * adding to it, so naming a private CA (a test CA, a company's smarthost) would make every
 * publicly certified peer fail verification. Node's default set is more than its bundled
 * Mozilla roots (`tls.rootCertificates`): it includes `NODE_EXTRA_CA_CERTS`, the system store
 * when Node runs with `--use-system-ca`, and whatever a host app set with
 * `tls.setDefaultCACertificates`; `tls.getCACertificates("default")` returns exactly that.
 */
import { getCACertificates } from "node:tls"

export type CaOption = string | Buffer | ReadonlyArray<string | Buffer>

/** `undefined` (Node's default set, untouched) when no extra CA is given. */
export const withDefaults = (extra: CaOption | undefined): Array<string | Buffer> | undefined =>
  extra === undefined ? undefined : [...getCACertificates("default"), ...(typeof extra === "string" || Buffer.isBuffer(extra) ? [extra] : extra)]
