-- Images: the `image` streams of the event log and their read model (see `src/images/` and
-- `src/store/images.rs`).
--
-- An image's stream is keyed by its name: `ImageImportRequested` (which opens an import job),
-- `ImageImportProgressed`, `ImageImported` or `ImageImportFailed` (which close it),
-- `ImageUploaded`, `ImageDeleted`. A name whose image failed or was deleted may be used again:
-- its stream goes on. `images` is the read model, written in the same transaction as each event.
-- Images found on disk with no row (the test guest built by scripts, folders an operator copied)
-- are listed as `source: host`; the files under the images dir stay the truth of what boots.

CREATE TABLE images
(
    name        text PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('disk', 'iso', 'kernel')),
    status      text        NOT NULL CHECK (status IN ('importing', 'ready', 'failed', 'deleted')),
    source      text        NOT NULL CHECK (source IN ('url', 'upload', 'host')),
    url         text,
    -- The format asked for (disk images are stored as qcow2 whatever they came as).
    format      text,
    -- The checksum asked for, or (once ready) the one computed over the bytes received.
    sha256      text,
    size_bytes  bigint,
    job_id      text,
    error       text,
    -- The stream's last sequence.
    version     bigint      NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Jobs of other streams than VMs: an image import's job row holds the image's name in `vm_id`
-- (the stream's id, as the trigger always wrote) and `image` in `stream_type`; its progress is
-- `bytes_done` of `bytes_total` (unknown when the server sends no length).
ALTER TABLE jobs
    ADD COLUMN stream_type text NOT NULL DEFAULT 'vm',
    ADD COLUMN bytes_done  bigint,
    ADD COLUMN bytes_total bigint;

CREATE OR REPLACE FUNCTION voidvm_jobs_from_events() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF NEW.metadata ? 'job_kind' THEN
        INSERT INTO jobs (id, vm_id, stream_type, kind, params, actor_id, created_at, updated_at)
        VALUES (NEW.metadata ->> 'job_id', NEW.aggregate_id, NEW.aggregate_type,
                NEW.metadata ->> 'job_kind', NEW.payload, NEW.metadata ->> 'actor_id',
                NEW.recorded_at, NEW.recorded_at)
        ON CONFLICT (id) DO NOTHING;
        PERFORM pg_notify('voidvm_jobs', NEW.metadata ->> 'job_id');
    ELSIF NEW.metadata ? 'job_outcome' THEN
        UPDATE jobs
        SET status      = NEW.metadata ->> 'job_outcome',
            error       = NEW.metadata ->> 'job_error',
            finished_at = NEW.recorded_at,
            updated_at  = NEW.recorded_at
        WHERE id = NEW.metadata ->> 'job_id'
          AND status IN ('queued', 'running', 'cancelling');
        PERFORM pg_notify('voidvm_job_done', NEW.metadata ->> 'job_id');
    END IF;
    RETURN NULL;
END
$$;

-- Everyone reads images; adding and deleting them is the administrators' (`*`).
UPDATE roles
SET permissions = permissions || ARRAY ['image:read'],
    updated_at  = now()
WHERE id IN ('user', 'viewer');
