-- Fields the model does not know (UNKNOWN_FIELDS=keep), one column per object of the order: a
-- JSON object of each unknown field's name and value, the value the exact text it arrived as,
-- so that the API serves back what was received. NULL, the common case, costs nothing (and a
-- nullable column without a default is added without rewriting the table).
--
-- `json`, not `jsonb`: jsonb rewrites numbers (1E-7 becomes 0.0000001, a trailing zero or an
-- exponent is lost), sorts and de-duplicates keys; the service would then serve from the
-- database another text than from its cache. Queries still work (`extra->>'loyalty_points'`),
-- and `extra::jsonb` always succeeds (the service refuses NUL, the one thing jsonb cannot hold),
-- so an expression index on it is possible.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS extra json;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS extra json;
ALTER TABLE payments ADD COLUMN IF NOT EXISTS extra json;
ALTER TABLE items ADD COLUMN IF NOT EXISTS extra json;
