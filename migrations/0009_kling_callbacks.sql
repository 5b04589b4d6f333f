-- A Kling request's `callback_url` is the generation's webhook target, but its deliveries carry
-- Kling's callback body (the bare task object, as `GET /kling/v1/videos/{mode}/{task_id}`
-- answers its `data`) instead of the Standard Webhooks payload. The shape is kept with the
-- request's target, and with each delivery made from it (whose body is fixed at its first
-- attempt). Default endpoints always receive the standard shape.
ALTER TABLE generations
    ADD COLUMN webhook_format text NOT NULL DEFAULT 'standard'
        CHECK (webhook_format IN ('standard', 'kling'));

ALTER TABLE webhook_deliveries
    ADD COLUMN format text NOT NULL DEFAULT 'standard' CHECK (format IN ('standard', 'kling'));
