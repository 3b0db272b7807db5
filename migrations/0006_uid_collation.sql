-- Order uids compare byte by byte (collation "C") instead of by the database's collation.
--
-- Every insert compares uids in four primary-key indexes, and every delivery, payment and item
-- row checks its foreign key with another index search: with a libc collation each comparison
-- is a strcoll() call (even C.UTF-8 is not special-cased by PostgreSQL), with "C" a memcmp().
-- A uid is ASCII letters, digits, '-' and '_' (the CHECK on orders), and nothing in the service
-- depends on their order beyond grouping; the service sorts its batches by bytes already.
--
-- The type stays text, so no table is rewritten and PostgreSQL keeps the foreign keys without
-- checking them again; the indexes on these columns are rebuilt, which holds the tables' locks
-- for as long as that takes (seconds per million orders).
ALTER TABLE orders ALTER COLUMN order_uid TYPE text COLLATE "C";
ALTER TABLE deliveries ALTER COLUMN order_uid TYPE text COLLATE "C";
ALTER TABLE payments ALTER COLUMN order_uid TYPE text COLLATE "C";
ALTER TABLE items ALTER COLUMN order_uid TYPE text COLLATE "C";
