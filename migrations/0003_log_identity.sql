-- Positions repeat when a topic is deleted and re-created or its log truncated. The offset row
-- keeps a mark of the last record handled (its offset and a digest of its value), so a start
-- can tell whether the stored offset still counts in the same log. And a rejection at a
-- position already recorded is a new message, recorded again: the unique key that silently
-- dropped it goes (a batch is never recorded twice: offsets are advanced by compare-and-set).
ALTER TABLE consumer_offsets
    ADD COLUMN IF NOT EXISTS mark_offset bigint,
    ADD COLUMN IF NOT EXISTS mark_digest bigint;

ALTER TABLE rejected_messages
    DROP CONSTRAINT IF EXISTS rejected_messages_topic_partition_offset_key;
CREATE INDEX IF NOT EXISTS rejected_messages_position_idx
    ON rejected_messages (topic, partition, "offset");
