-- The host's CPU and memory over time, for `GET /api/v1/system/stats`: each node samples its host
-- every `VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS` (src/system/sampler.rs) and writes a row here, so the
-- series survive restarts. Reads average the rows into at most 120 buckets per period; rows older
-- than 30 days are deleted by the samplers (every node prunes every node's rows, so those of a
-- node that is gone go too).

CREATE TABLE system_samples
(
    node_id        text             NOT NULL,
    sampled_at     timestamptz      NOT NULL,
    -- Percent busy over all cores since the previous sample, and memory in use (total less
    -- available) over total.
    cpu_percent    double precision NOT NULL CHECK (cpu_percent >= 0 AND cpu_percent <= 100),
    memory_percent double precision NOT NULL CHECK (memory_percent >= 0 AND memory_percent <= 100),
    PRIMARY KEY (node_id, sampled_at)
);

CREATE INDEX system_samples_sampled_at ON system_samples (sampled_at);
