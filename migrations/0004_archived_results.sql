-- Results are kept: after a job completes, every result file is copied into gengate's own storage
-- (a `generation.archive` message, written to the outbox in the completing transaction). `url`
-- stays the provider's URL as it was checked: the source, kept for the audit trail. What clients
-- download once a file is archived is the stored object, by a signed link made when they read it.

ALTER TABLE generation_videos RENAME COLUMN status TO archive_status;
ALTER TABLE generation_images RENAME COLUMN status TO archive_status;

-- Files of jobs that completed before archiving existed: their sources may be gone already.
UPDATE generation_videos SET archive_status = 'failed';
UPDATE generation_images SET archive_status = 'failed';

ALTER TABLE generation_videos
    ALTER COLUMN archive_status SET DEFAULT 'pending',
    ADD COLUMN object_key text,
    ADD COLUMN poster_key text,
    ADD COLUMN width integer CHECK (width > 0),
    ADD COLUMN height integer CHECK (height > 0),
    ADD COLUMN codec text,
    ADD COLUMN size_bytes bigint CHECK (size_bytes >= 0),
    ADD COLUMN sha256 bytea CHECK (octet_length(sha256) = 32),
    -- Why it failed, or what is missing (`archived without a poster: not a video`).
    ADD COLUMN archive_detail text,
    ADD COLUMN archived_at timestamptz,
    ADD CONSTRAINT generation_videos_archive_status_check
        CHECK (archive_status IN ('pending', 'archived', 'failed', 'purged')),
    ADD CONSTRAINT generation_videos_archived_has_object
        CHECK (archive_status <> 'archived' OR object_key IS NOT NULL);

ALTER TABLE generation_images
    ALTER COLUMN archive_status SET DEFAULT 'pending',
    ADD COLUMN object_key text,
    ADD COLUMN width integer CHECK (width > 0),
    ADD COLUMN height integer CHECK (height > 0),
    ADD COLUMN codec text,
    ADD COLUMN size_bytes bigint CHECK (size_bytes >= 0),
    ADD COLUMN sha256 bytea CHECK (octet_length(sha256) = 32),
    ADD COLUMN archive_detail text,
    ADD COLUMN archived_at timestamptz,
    ADD CONSTRAINT generation_images_archive_status_check
        CHECK (archive_status IN ('pending', 'archived', 'failed', 'purged')),
    ADD CONSTRAINT generation_images_archived_has_object
        CHECK (archive_status <> 'archived' OR object_key IS NOT NULL);

UPDATE generation_videos SET archive_detail =
    'completed before results were archived; `gengatectl archive retry --failed` copies it if its source still serves it';
UPDATE generation_images SET archive_detail =
    'completed before results were archived; `gengatectl archive retry --failed` copies it if its source still serves it';

-- What is waiting to be copied (the pending gauge, and `archive retry`).
CREATE INDEX generation_videos_pending_idx ON generation_videos (generation_id)
    WHERE archive_status IN ('pending', 'failed');
CREATE INDEX generation_images_pending_idx ON generation_images (generation_id)
    WHERE archive_status IN ('pending', 'failed');
