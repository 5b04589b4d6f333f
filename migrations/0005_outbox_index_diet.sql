-- The relay deletes outbox rows once the broker confirmed them (it used to mark them sent and keep
-- them an hour). Every row left is unsent, so the partial index on unsent rows only doubled the
-- primary key's work; and nothing looks a row up by message id (each is a fresh UUID v7), so its
-- unique index was a write per message that bought nothing. The outbox keeps its primary key.
DROP INDEX outbox_unsent_idx;
ALTER TABLE outbox DROP CONSTRAINT outbox_message_id_key;
