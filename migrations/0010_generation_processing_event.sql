-- `generation.processing`: an opt-in client webhook event, written by the transition
-- `queued → submitted` (the provider accepted the task; a Kling `callback_url`'s `processing`).
-- A target without an event list (`generations.webhook_events`, `webhook_endpoints.events` NULL)
-- receives every event but this one.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_check CHECK (event IN
    ('generation.processing', 'generation.completed', 'generation.failed', 'generation.canceled',
     'generation.archived'));
