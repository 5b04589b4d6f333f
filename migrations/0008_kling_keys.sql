-- Kling-compatible credentials (`/kling/v1/…`): an API key may carry a Kling access key. Its secret
-- key is never stored: it is derived from the server key of `kling_key_version`, the API key's id
-- and the access key (shared/src/kling_compat.rs).
ALTER TABLE api_keys
    ADD COLUMN kling_access_key  text UNIQUE
        CHECK (kling_access_key IS NULL OR length(kling_access_key) BETWEEN 16 AND 64),
    ADD COLUMN kling_key_version smallint,
    ADD CONSTRAINT api_keys_kling_pair
        CHECK ((kling_access_key IS NULL) = (kling_key_version IS NULL));
