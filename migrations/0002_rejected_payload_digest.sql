-- A rejected payload over REJECTED_PAYLOAD_MAX_BYTES is kept as an excerpt (its first bytes in
-- `payload`) with the whole message's size and SHA-256, so a flood of huge messages cannot
-- fill the database, yet each one stays identifiable. Both are NULL when `payload` is whole.
ALTER TABLE rejected_messages
    ADD COLUMN IF NOT EXISTS payload_size bigint CHECK (payload_size >= 0),
    ADD COLUMN IF NOT EXISTS payload_sha256 text CHECK (payload_sha256 ~ '^[0-9a-f]{64}$');
