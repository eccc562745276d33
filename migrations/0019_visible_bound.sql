-- The readers' bound (`voidvm_visible_bound()`, see 0007 and `src/store/visible.rs`), right when a
-- transaction of this database has an id above the snapshot's xmax, and 14 times cheaper.
--
-- 1. Right. 0007 widened the 32-bit ids of this database's running transactions against
--    `pg_snapshot_xmax(pg_current_snapshot())` as if that were the next id to be handed out, and
--    took an id above it to come from before a wraparound (2^32 ids back). But xmax is the latest
--    *completed* id + 1: a transaction still running may well have an id above it (when the id at
--    xmax went to a transaction of another database that is still open, say). The bound then came
--    out negative, and readers of the log saw nothing new, each waiting up to 2 s, until the
--    moment passed. An id is now widened to the 64-bit id within 2^31 of xmax, on either side
--    (`voidvm_widen_xid`): running ids are never further than that from it.
--
-- 2. Cheaper. The SQL function read the `pg_stat_activity` view (every backend's whole status,
--    joined with `pg_database` and `pg_authid`) and `pg_prepared_xacts`, and, being SQL with a
--    `WITH`, was planned again at every call: 1.1 ms a call on this project's 2-core machine. The
--    relay calls it several times a read, and under load (64 connections of commands) it was a
--    quarter of all the time PostgreSQL spent on the node's statements. This one reads the two
--    set-returning functions behind those views, filtered by this database's oid, in PL/pgSQL
--    (whose plan is kept): 0.08 ms a call.
--
-- Order matters and is kept: the snapshot's xmax is taken first, then the running transactions.
-- A transaction that gets its id after the snapshot gets one at or above xmax, so above the
-- bound; one with an id below xmax is either seen running or has ended before the read of the
-- backends, and a reader's later statement sees it.

CREATE FUNCTION voidvm_widen_xid(horizon bigint, xid bigint) RETURNS bigint
    LANGUAGE sql
    IMMUTABLE
    STRICT
    PARALLEL SAFE
AS
$$
SELECT CASE
           WHEN w.id > horizon + 2147483648 THEN w.id - 4294967296
           WHEN w.id < horizon - 2147483648 THEN w.id + 4294967296
           ELSE w.id
           END
FROM (SELECT ((horizon >> 32) << 32) | xid AS id) AS w
$$;

CREATE OR REPLACE FUNCTION voidvm_visible_bound() RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
AS
$$
DECLARE
    horizon bigint := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    oldest  bigint;
BEGIN
    SELECT min(voidvm_widen_xid(horizon, r.xid))
    INTO oldest
    FROM (SELECT a.backend_xid::text::bigint AS xid
          FROM pg_stat_get_activity(NULL) AS a
          WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND a.backend_xid IS NOT NULL
          UNION ALL
          SELECT p.transaction::text::bigint
          FROM pg_prepared_xact() AS p
          WHERE p.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())) AS r;
    -- LEAST ignores a NULL: no transaction of this database in flight.
    RETURN LEAST(horizon, oldest) << 16;
END
$$;
