/**
 * The PostgreSQL queue's schema: tables, indexes and the functions that carry the queue's state
 * transitions, as append-only migrations run by `effect/sql`'s Migrator.
 *
 * The state transitions (claim, settle, release, extend, reap, retry, purge) are PL/pgSQL
 * functions so each is ONE round trip and one atomic statement, whatever the number of
 * recipients: the hot path pays the network once per operation, and a node that dies between two
 * statements cannot leave half a settle behind.
 *
 * Layout and why:
 * - `messages`: one row per message. `due_at` is the earliest time a pending recipient may be
 *   tried (NULL once nothing is pending: every recipient delivered or dead); the claim walks the
 *   partial index `(due_at, seq) WHERE due_at IS NOT NULL`, which holds exactly the pending
 *   messages, oldest-due first (ties: arrival `seq`). Leases live on the message row (owner,
 *   fencing token, expiry); a claim leaves `due_at` alone, so the lease columns are the only ones
 *   it changes. `fillfactor = 80` leaves room on each page for the new row versions that claims,
 *   heartbeats and settles create, so they can be HOT updates (no index touched) when possible.
 * - `recipients`: one row per recipient, keyed by (message, address). No index on `state` on
 *   purpose: a settle changes `state`, and an index on it would rule out HOT updates on the
 *   hottest rows. The dead-letter purge, the only query that would use one, runs once a minute.
 * - `body_chunks`: bodies above the inline size, in 256 KiB rows (written and read one chunk at a
 *   time, so a large body is never whole in memory). Insert-only, removed with the message;
 *   the default fillfactor (100) suits it. Bodies up to the chunk size stay in `messages.body`
 *   (PostgreSQL moves large values to TOAST itself).
 * - `lease_tokens`: a sequence; every claim takes a new value, the fencing token. Settle, release
 *   and extend only act when the row still carries the caller's token, so a node that lost its
 *   lease (paused, partitioned, presumed dead) can never overwrite its successor's result.
 *
 * Times are epoch milliseconds (`bigint`) from the node's clock (Effect's `Clock`), so the queue
 * runs under `TestClock` like the other backends; nodes sharing a database need synchronised
 * clocks (NTP), as any lease-based design does.
 */
import { Effect } from "effect"
import { Migrator, SqlClient, type SqlError } from "effect/sql"

/** The chunk size of large bodies, and the largest body kept inline in its message row. */
export const chunkSize = 256 * 1024

/** The channel that wakes idle workers of every node (sent inside the committing transaction). */
export const channel = "incoming_queue_work"

// Parts of the claim functions (migrations 1 to 4), as SQL text. Ageing: waiting messages below
// normal that arrived p_max_wait ms ago become normal (p_max_wait 0: never).
const ageing = `      IF p_max_wait > 0 THEN
        UPDATE messages SET priority = 0 WHERE messages.id IN (
          SELECT a.id FROM messages a
          WHERE a.priority < 0 AND a.due_at IS NOT NULL AND a.received_at <= p_now - p_max_wait
          FOR UPDATE SKIP LOCKED);
      END IF;
`
// The recipients of the messages in the CTE `leased` that the lease covers: due ones, and those
// of an expired lease (their attempt counted again).
const leaseRecipients = `      ), r AS (
        UPDATE recipients x SET state = 'inflight', attempts = x.attempts + 1
        FROM leased
        WHERE x.message_id = leased.id
          AND (x.state = 'inflight' OR (x.state IN ('queued', 'retry') AND x.next_attempt_at <= p_now))
        RETURNING x.message_id, x.ord, x.rcpt, x.attempts
      )
`

// The reaper's body (migrations 1 and 5), for the leases that `expired` (SQL from this file) selects.
const reapBody = (expired: string): string => `RETURNS integer LANGUAGE plpgsql AS $$
    DECLARE
      v_ids text[];
    BEGIN
      WITH expired AS (
        SELECT id FROM messages WHERE ${expired}
        FOR UPDATE SKIP LOCKED
      ), cleared AS (
        UPDATE messages m SET lease_node = NULL, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
        FROM expired WHERE m.id = expired.id RETURNING m.id
      )
      SELECT array_agg(id) INTO v_ids FROM cleared;
      IF v_ids IS NULL THEN RETURN 0; END IF;
      UPDATE recipients SET state = 'queued' WHERE message_id = ANY (v_ids) AND state = 'inflight';
      PERFORM pg_notify('${channel}', '');
      RETURN cardinality(v_ids);
    END $$;`

// What claim_many returns (migrations 4 and 5): the leased messages (CTE `leased`, rank `k`) with
// their leased recipients (CTE `r`), by rank.
const claimManyResult = `      SELECT l.id, l.lease_token, l.lease_expires_at, l.envelope, l.trace, l.received_at, l.size,
        (SELECT array_agg(r.rcpt ORDER BY r.ord) FROM r WHERE r.message_id = l.id),
        (SELECT array_agg(r.attempts ORDER BY r.ord) FROM r WHERE r.message_id = l.id),
        l.k
      FROM leased l
      ORDER BY l.k;
    END $$;
`

// One statement per string: the extended protocol takes one command per prepared statement.
const migration1Statements: ReadonlyArray<string> = [
  `
CREATE SEQUENCE lease_tokens;
  `,
  `
CREATE TABLE messages (
      id text PRIMARY KEY,
      seq bigint GENERATED ALWAYS AS IDENTITY,
      envelope text NOT NULL,
      trace text NOT NULL,
      received_at bigint NOT NULL,
      size bigint NOT NULL,
      body bytea,
      chunks integer NOT NULL DEFAULT 0,
      due_at bigint,
      lease_node text,
      lease_owner text,
      lease_token bigint,
      lease_expires_at bigint
    ) WITH (fillfactor = 80);
  `,
  `
CREATE INDEX messages_due ON messages (due_at, seq) WHERE due_at IS NOT NULL;
  `,
  `
CREATE INDEX messages_leases ON messages (lease_expires_at) WHERE lease_token IS NOT NULL;
  `,
  `
CREATE INDEX messages_received ON messages (received_at, seq);
  `,
  `
CREATE TABLE recipients (
      message_id text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
      rcpt text NOT NULL,
      ord integer NOT NULL,
      state text NOT NULL CHECK (state IN ('queued', 'inflight', 'retry', 'delivered', 'dead')),
      attempts integer NOT NULL DEFAULT 0,
      next_attempt_at bigint NOT NULL,
      last_reply text,
      expires_at bigint,
      PRIMARY KEY (message_id, rcpt)
    ) WITH (fillfactor = 80);
  `,
  `
CREATE TABLE body_chunks (
      message_id text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
      n integer NOT NULL,
      data bytea NOT NULL,
      PRIMARY KEY (message_id, n)
    );
  `,
  `
-- The due time of a message from its recipients: the earliest queued/retry/inflight one.
    CREATE FUNCTION message_due(p_id text) RETURNS bigint LANGUAGE sql STABLE AS $$
      SELECT min(next_attempt_at) FROM recipients
      WHERE message_id = p_id AND state IN ('queued', 'retry', 'inflight')
    $$;
  `,
  `
-- Leases up to p_limit due messages (due the longest first) to p_owner. A message whose lease
    -- expired is due again; its recipients from that lease are leased again with the expired
    -- attempt counted. Returns one row per leased message with its leased recipients in order.
    CREATE FUNCTION claim(p_node text, p_owner text, p_now bigint, p_lease_ms bigint, p_limit integer)
    RETURNS TABLE (id text, token bigint, expires_at bigint, envelope text, trace text, received_at bigint,
                   size bigint, due_at bigint, seq bigint, rcpts text[], attempts integer[])
    LANGUAGE plpgsql AS $$
    BEGIN
      RETURN QUERY
      WITH picked AS (
        SELECT m.id FROM messages m
        WHERE m.due_at <= p_now AND (m.lease_token IS NULL OR m.lease_expires_at <= p_now)
        ORDER BY m.due_at, m.seq
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
      ), leased AS (
        UPDATE messages m SET lease_node = p_node, lease_owner = p_owner, lease_token = nextval('lease_tokens'),
          lease_expires_at = p_now + p_lease_ms
        FROM picked WHERE m.id = picked.id
        RETURNING m.id, m.lease_token, m.lease_expires_at, m.envelope, m.trace, m.received_at, m.size, m.due_at, m.seq
${leaseRecipients}      SELECT l.id, l.lease_token, l.lease_expires_at, l.envelope, l.trace, l.received_at, l.size, l.due_at, l.seq,
        (SELECT array_agg(r.rcpt ORDER BY r.ord) FROM r WHERE r.message_id = l.id),
        (SELECT array_agg(r.attempts ORDER BY r.ord) FROM r WHERE r.message_id = l.id)
      FROM leased l
      ORDER BY l.due_at, l.seq;
    END $$;
  `,
  `
-- Records outcomes for a lease. p_states holds 'delivered' | 'retry' | 'dead' per recipient;
  `,
  `
-- a leased recipient with no outcome goes back to the queue with its attempt not counted.
    -- Returns 'lost' (the token is not the message's: fenced off), 'done' (every recipient
    -- delivered: the message is gone), 'idle' (nothing pending: dead letters only) or 'pending'.
    CREATE FUNCTION settle(p_id text, p_token bigint, p_rcpts text[], p_states text[], p_ats bigint[],
                           p_replies text[], p_now bigint, p_dead_ttl_ms bigint)
    RETURNS text LANGUAGE plpgsql AS $$
    DECLARE
      v_due bigint;
    BEGIN
      PERFORM 1 FROM messages WHERE id = p_id AND lease_token = p_token FOR UPDATE;
      IF NOT FOUND THEN RETURN 'lost'; END IF;
      UPDATE recipients x SET
        state = s.state,
        next_attempt_at = CASE WHEN s.state = 'retry' THEN s.at ELSE x.next_attempt_at END,
        last_reply = s.reply,
        expires_at = CASE WHEN s.state = 'dead' THEN p_now + p_dead_ttl_ms END
      FROM unnest(p_rcpts, p_states, p_ats, p_replies) AS s(rcpt, state, at, reply)
      WHERE x.message_id = p_id AND x.rcpt = s.rcpt AND x.state = 'inflight';
      UPDATE recipients SET state = 'queued', attempts = greatest(attempts - 1, 0)
      WHERE message_id = p_id AND state = 'inflight';
      IF NOT EXISTS (SELECT 1 FROM recipients WHERE message_id = p_id AND state <> 'delivered') THEN
        DELETE FROM messages WHERE id = p_id;
        RETURN 'done';
      END IF;
      v_due := message_due(p_id);
      UPDATE messages SET lease_node = NULL, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, due_at = v_due
      WHERE id = p_id;
      IF v_due IS NOT NULL AND v_due <= p_now THEN PERFORM pg_notify('${channel}', ''); END IF;
      RETURN CASE WHEN v_due IS NULL THEN 'idle' ELSE 'pending' END;
    END $$;
  `,
  `
-- Gives a lease back untouched: its recipients are queued again, their attempt not counted.
    CREATE FUNCTION release(p_id text, p_token bigint) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM 1 FROM messages WHERE id = p_id AND lease_token = p_token FOR UPDATE;
      IF NOT FOUND THEN RETURN false; END IF;
      UPDATE recipients SET state = 'queued', attempts = greatest(attempts - 1, 0)
      WHERE message_id = p_id AND state = 'inflight';
      UPDATE messages SET lease_node = NULL, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, due_at = message_due(p_id)
      WHERE id = p_id;
      PERFORM pg_notify('${channel}', '');
      RETURN true;
    END $$;
  `,
  `
-- The heartbeat: pushes the expiry of the leases this node still holds (by token) forward.
    -- Returns the tokens that were renewed; a token missing from the answer was lost.
    CREATE FUNCTION extend(p_tokens bigint[], p_until bigint) RETURNS SETOF bigint LANGUAGE sql AS $$
      UPDATE messages SET lease_expires_at = p_until
      WHERE lease_token = ANY (p_tokens)
      RETURNING lease_token
    $$;
  `,
  `
-- The reaper: returns expired leases to the queue (their attempt stays counted). Idempotent:
    -- every node runs it, and a lease expired twice over is returned once.
    CREATE FUNCTION reap(p_now bigint) ${reapBody("lease_token IS NOT NULL AND lease_expires_at <= p_now")}
  `,
  `
-- Makes retry-waiting and dead recipients of a message due now. Returns NULL when there was
    -- nothing to retry, else whether the message was pending before.
    CREATE FUNCTION retry_now(p_id text, p_now bigint) RETURNS boolean LANGUAGE plpgsql AS $$
    DECLARE
      v_was_pending boolean;
    BEGIN
      SELECT due_at IS NOT NULL INTO v_was_pending FROM messages WHERE id = p_id FOR UPDATE;
      IF NOT FOUND THEN RETURN NULL; END IF;
      UPDATE recipients SET state = 'queued', next_attempt_at = p_now, expires_at = NULL
      WHERE message_id = p_id AND state IN ('retry', 'dead');
      IF NOT FOUND THEN RETURN NULL; END IF;
      UPDATE messages SET due_at = message_due(p_id) WHERE id = p_id;
      PERFORM pg_notify('${channel}', '');
      RETURN v_was_pending;
    END $$;
  `,
  `
-- Removes dead recipients (all, or those whose TTL passed when p_now is given) and the
    -- messages left with nothing but delivered recipients. Returns the recipients removed.
    CREATE FUNCTION purge_dead(p_now bigint) RETURNS integer LANGUAGE plpgsql AS $$
    DECLARE
      v_ids text[];
      v_count integer;
    BEGIN
      WITH gone AS (
        DELETE FROM recipients WHERE state = 'dead' AND (p_now IS NULL OR expires_at <= p_now)
        RETURNING message_id
      )
      SELECT array_agg(DISTINCT message_id), count(*) INTO v_ids, v_count FROM gone;
      IF v_ids IS NULL THEN RETURN 0; END IF;
      DELETE FROM messages m WHERE m.id = ANY (v_ids)
        AND NOT EXISTS (SELECT 1 FROM recipients x WHERE x.message_id = m.id AND x.state <> 'delivered');
      RETURN v_count;
    END $$;
  `
]

// The claim of migrations 2 and 3: leases up to p_limit due messages to p_owner in priority order
// (highest first, then due the longest, then arrival), after ageing (p_max_wait ms; 0: no ageing).
// A message whose lease expired is due again; its recipients from that lease are leased again with
// the expired attempt counted. One row per leased message, its leased recipients in order.
// `heldFilter` is SQL and comes from this file only.
const claimFunction = (create: "CREATE" | "CREATE OR REPLACE", heldFilter: "" | " AND NOT m.held"): string => `
    ${create} FUNCTION claim(p_node text, p_owner text, p_now bigint, p_lease_ms bigint, p_limit integer, p_max_wait bigint)
    RETURNS TABLE (id text, token bigint, expires_at bigint, envelope text, trace text, received_at bigint,
                   size bigint, due_at bigint, seq bigint, rcpts text[], attempts integer[])
    LANGUAGE plpgsql AS $$
    BEGIN
${ageing}      RETURN QUERY
      WITH picked AS (
        SELECT m.id, m.priority FROM messages m
        WHERE m.due_at <= p_now${heldFilter} AND (m.lease_token IS NULL OR m.lease_expires_at <= p_now)
        ORDER BY m.priority DESC, m.due_at, m.seq
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
      ), leased AS (
        UPDATE messages m SET lease_node = p_node, lease_owner = p_owner, lease_token = nextval('lease_tokens'),
          lease_expires_at = p_now + p_lease_ms
        FROM picked WHERE m.id = picked.id
        RETURNING m.id, m.lease_token, m.lease_expires_at, m.envelope, m.trace, m.received_at, m.size, m.due_at, m.seq,
          m.priority
${leaseRecipients}      SELECT l.id, l.lease_token, l.lease_expires_at, l.envelope, l.trace, l.received_at, l.size, l.due_at, l.seq,
        (SELECT array_agg(r.rcpt ORDER BY r.ord) FROM r WHERE r.message_id = l.id),
        (SELECT array_agg(r.attempts ORDER BY r.ord) FROM r WHERE r.message_id = l.id)
      FROM leased l
      ORDER BY l.priority DESC, l.due_at, l.seq;
    END $$;
`

// Message priority (`Priority.ts`): a column copied from the envelope, which claims order by
// (highest first, then due time, then arrival) from their own index; `messages_due` stays for the
// next-due-time reads. Ageing lowers nothing: it raises waiting messages below normal that arrived
// `p_max_wait` ms ago to normal, in the claim itself (an index on exactly those rows keeps it
// cheap, and SKIP LOCKED keeps nodes from waiting on each other); the envelope keeps its level.
const migration2Statements: ReadonlyArray<string> = [
  `
ALTER TABLE messages ADD COLUMN priority smallint NOT NULL DEFAULT 0;
  `,
  `
UPDATE messages SET priority = GREATEST(-9, LEAST(9, (envelope::jsonb->>'priority')::integer))
    WHERE jsonb_typeof(envelope::jsonb->'priority') = 'number' AND (envelope::jsonb->>'priority') ~ '^-?[0-9]+$';
  `,
  `
CREATE INDEX messages_claim ON messages (priority DESC, due_at, seq) WHERE due_at IS NOT NULL;
  `,
  `
CREATE INDEX messages_low ON messages (received_at) WHERE priority < 0 AND due_at IS NOT NULL;
  `,
  `
DROP FUNCTION claim(text, text, bigint, bigint, integer);
  `,
  claimFunction("CREATE", "")
]

// Hold (`incoming queue hold`, `QueueAdmin.hold`): a flag on the message row. The claim index is
// rebuilt to leave held messages out, so a claim never walks over them and costs what it did; a
// held message keeps its `due_at` (it is still pending, and counts in the depth). The claim is
// migration 2's plus `NOT m.held`, the predicate that lets it use the rebuilt index.
const migration3Statements: ReadonlyArray<string> = [
  `
ALTER TABLE messages ADD COLUMN held boolean NOT NULL DEFAULT false;
  `,
  `
DROP INDEX messages_claim;
  `,
  `
CREATE INDEX messages_claim ON messages (priority DESC, due_at, seq) WHERE due_at IS NOT NULL AND NOT held;
  `,
  claimFunction("CREATE OR REPLACE", " AND NOT m.held")
]

// Batched claims and settles: the delivery path's statements cost a node more database time per
// message than its commits (each a function call, a plan and a COMMIT with its WAL flush), so the
// queue claims for every worker waiting at once and settles the outcomes that are ready together
// (`Claims.ts`, `Settles.ts`). `claim` and `settle` stay: a node of the previous version may share
// the database during a rolling upgrade.
const migration4Statements: ReadonlyArray<string> = [
  `
-- Leases up to cardinality(p_owners) due messages in claim order (priority, due time, arrival;
    -- ageing as in claim); the k-th most urgent goes to p_owners[k] for p_lease_ms[k] ms. One row
    -- per leased message, its rank in n, ordered by n.
    CREATE FUNCTION claim_many(p_node text, p_owners text[], p_now bigint, p_lease_ms bigint[], p_max_wait bigint)
    RETURNS TABLE (id text, token bigint, expires_at bigint, envelope text, trace text, received_at bigint,
                   size bigint, rcpts text[], attempts integer[], n integer)
    LANGUAGE plpgsql AS $$
    BEGIN
${ageing}      RETURN QUERY
      WITH picked AS (
        SELECT m.id, m.priority, m.due_at, m.seq FROM messages m
        WHERE m.due_at <= p_now AND NOT m.held AND (m.lease_token IS NULL OR m.lease_expires_at <= p_now)
        ORDER BY m.priority DESC, m.due_at, m.seq
        LIMIT cardinality(p_owners)
        FOR UPDATE SKIP LOCKED
      ), ranked AS (
        SELECT p.id, (row_number() OVER (ORDER BY p.priority DESC, p.due_at, p.seq))::integer AS k FROM picked p
      ), leased AS (
        UPDATE messages m SET lease_node = p_node, lease_owner = p_owners[ranked.k], lease_token = nextval('lease_tokens'),
          lease_expires_at = p_now + p_lease_ms[ranked.k]
        FROM ranked WHERE m.id = ranked.id
        RETURNING m.id, m.lease_token, m.lease_expires_at, m.envelope, m.trace, m.received_at, m.size, ranked.k
${leaseRecipients}${claimManyResult}  `,
  `
-- settle() for several leases in one transaction, in the order given (callers sort by id, so
    -- two batches lock rows in the same order). Lease k's recipients are p_rcpts[p_first[k] ..
    -- p_first[k] + p_count[k] - 1] (and the same slices of p_states, p_ats, p_replies). One row
    -- per lease: its index and settle()'s answer ('lost' when fenced off: the others still count).
    CREATE FUNCTION settle_many(p_ids text[], p_tokens bigint[], p_first integer[], p_count integer[],
                                p_rcpts text[], p_states text[], p_ats bigint[], p_replies text[],
                                p_now bigint, p_dead_ttl_ms bigint)
    RETURNS TABLE (i integer, outcome text) LANGUAGE plpgsql AS $$
    DECLARE
      v_last integer;
    BEGIN
      FOR k IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        v_last := p_first[k] + p_count[k] - 1;
        i := k;
        outcome := settle(p_ids[k], p_tokens[k], coalesce(p_rcpts[p_first[k]:v_last], '{}'), coalesce(p_states[p_first[k]:v_last], '{}'),
          coalesce(p_ats[p_first[k]:v_last], '{}'), coalesce(p_replies[p_first[k]:v_last], '{}'), p_now, p_dead_ttl_ms);
        RETURN NEXT;
      END LOOP;
    END $$;
  `
]

// HOT claims. A claim changes only the lease columns; with an index on one of them
// (`messages_leases`) no claim or heartbeat could be a HOT update, so each claim added an entry to
// every index of `messages`, and the claim index's head filled with dead entries that every claim
// then walked over (measured: ~130 index entries read per claim at 10 sessions). Without it a
// claim and a heartbeat rewrite the row in place on its page (fillfactor 80). What used it now
// reads the pending messages already due (`messages_due`): a lease is only ever taken on a due
// message, and when nothing is claimable those are just the leased and held ones.
//
// And claim_many in two steps: lock the batch's rows first, then update by id (`= ANY`), so the
// updates go through the primary keys whatever the planner thinks of the table's size. Written as
// one statement, a queue table that is small but full of dead rows (a busy queue between two
// vacuums) got hash joins over sequential scans of both tables in every claim.
const migration5Statements: ReadonlyArray<string> = [
  `
DROP INDEX messages_leases;
  `,
  `
CREATE OR REPLACE FUNCTION claim_many(p_node text, p_owners text[], p_now bigint, p_lease_ms bigint[], p_max_wait bigint)
    RETURNS TABLE (id text, token bigint, expires_at bigint, envelope text, trace text, received_at bigint,
                   size bigint, rcpts text[], attempts integer[], n integer)
    LANGUAGE plpgsql AS $$
    DECLARE
      v_ids text[];
    BEGIN
${ageing}      SELECT array_agg(p.id ORDER BY p.priority DESC, p.due_at, p.seq) INTO v_ids FROM (
        SELECT m.id, m.priority, m.due_at, m.seq FROM messages m
        WHERE m.due_at <= p_now AND NOT m.held AND (m.lease_token IS NULL OR m.lease_expires_at <= p_now)
        ORDER BY m.priority DESC, m.due_at, m.seq
        LIMIT cardinality(p_owners)
        FOR UPDATE SKIP LOCKED) p;
      IF v_ids IS NULL THEN RETURN; END IF;
      RETURN QUERY
      WITH leased AS (
        UPDATE messages m SET lease_node = p_node, lease_owner = p_owners[array_position(v_ids, m.id)],
          lease_token = nextval('lease_tokens'), lease_expires_at = p_now + p_lease_ms[array_position(v_ids, m.id)]
        WHERE m.id = ANY (v_ids)
        RETURNING m.id, m.lease_token, m.lease_expires_at, m.envelope, m.trace, m.received_at, m.size, array_position(v_ids, m.id) AS k
      ), r AS (
        UPDATE recipients x SET state = 'inflight', attempts = x.attempts + 1
        WHERE x.message_id = ANY (v_ids)
          AND (x.state = 'inflight' OR (x.state IN ('queued', 'retry') AND x.next_attempt_at <= p_now))
        RETURNING x.message_id, x.ord, x.rcpt, x.attempts
      )
${claimManyResult}  `,
  `
CREATE OR REPLACE FUNCTION reap(p_now bigint) ${reapBody("due_at <= p_now AND lease_token IS NOT NULL AND lease_expires_at <= p_now")}
  `
]

const migration1 = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError.SqlError> =>
  Effect.forEach(migration1Statements, (statement) => sql.unsafe(statement), { discard: true })

const migration2 = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError.SqlError> =>
  Effect.forEach(migration2Statements, (statement) => sql.unsafe(statement), { discard: true })

const migration3 = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError.SqlError> =>
  Effect.forEach(migration3Statements, (statement) => sql.unsafe(statement), { discard: true })

const migration4 = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError.SqlError> =>
  Effect.forEach(migration4Statements, (statement) => sql.unsafe(statement), { discard: true })

const migration5 = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError.SqlError> =>
  Effect.forEach(migration5Statements, (statement) => sql.unsafe(statement), { discard: true })

/** Creates the schema if needed and brings it to the latest migration (safe on several nodes at once). */
export const migrate = (sql: SqlClient.SqlClient, schema: string): Effect.Effect<void, Migrator.MigrationError | SqlError.SqlError> =>
  Effect.gen(function*() {
    // Two nodes starting together may both try to create the schema: the loser's error is fine
    // as long as the schema exists afterwards.
    const exists = sql<{ n: number }>`SELECT 1 AS n FROM pg_namespace WHERE nspname = ${schema}`.pipe(Effect.map((r) => r.length > 0))
    if (!(yield* exists)) {
      yield* sql.unsafe(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`).pipe(
        Effect.catch((e) => Effect.flatMap(exists, (ok) => (ok ? Effect.void : Effect.fail(e))))
      )
    }
    yield* Migrator.make({})({
      loader: Migrator.fromRecord({
        "1_queue": SqlClient.SqlClient.use(migration1),
        "2_priority": SqlClient.SqlClient.use(migration2),
        "3_hold": SqlClient.SqlClient.use(migration3),
        "4_batches": SqlClient.SqlClient.use(migration4),
        "5_hot_claims": SqlClient.SqlClient.use(migration5)
      }),
      table: "incoming_migrations"
    }).pipe(Effect.provideService(SqlClient.SqlClient, sql))
  })

/** A schema name as an SQL identifier; names are checked by `isSchemaName` first. */
export const quoteIdent = (name: string): string => `"${name.replaceAll("\"", "\"\"")}"`
