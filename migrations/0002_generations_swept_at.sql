-- When the sweeper last sent a queued job past its deadline to fail. The sweeper sends a job again
-- only when that send looks lost (a minute later, still queued), not on every sweep: while the
-- workers are behind (after a broker outage) re-sending every sweep flooded gengate.events.
ALTER TABLE generations ADD COLUMN swept_at timestamptz;
