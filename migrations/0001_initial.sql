-- Orders as they arrived, split into one row per order, delivery and payment, and one per item.
-- Money is stored in integer minor units; CHECKs repeat the domain's rules so that no writer
-- can store what the service would refuse.

CREATE TABLE IF NOT EXISTS orders (
    order_uid          text PRIMARY KEY CHECK (order_uid ~ '^[A-Za-z0-9_-]{1,64}$'),
    -- Ingestion order; "most recent" for warm-up and /orders means highest ingest_seq.
    ingest_seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    track_number       text NOT NULL,
    entry              text NOT NULL,
    locale             text NOT NULL,
    internal_signature text NOT NULL,
    customer_id        text NOT NULL,
    delivery_service   text NOT NULL,
    shardkey           text NOT NULL,
    sm_id              bigint NOT NULL CHECK (sm_id >= 0),
    date_created       timestamptz NOT NULL,
    oof_shard          text NOT NULL,
    -- Where the order was read from (NULL when it was not read from a topic).
    source_topic       text,
    source_partition   integer,
    source_offset      bigint,
    ingested_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS deliveries (
    order_uid text PRIMARY KEY REFERENCES orders (order_uid) ON DELETE CASCADE,
    name      text NOT NULL,
    phone     text NOT NULL,
    zip       text NOT NULL,
    city      text NOT NULL,
    address   text NOT NULL,
    region    text NOT NULL,
    email     text NOT NULL
);

CREATE TABLE IF NOT EXISTS payments (
    order_uid     text PRIMARY KEY REFERENCES orders (order_uid) ON DELETE CASCADE,
    transaction   text NOT NULL,
    request_id    text NOT NULL,
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    provider      text NOT NULL,
    amount        bigint NOT NULL CHECK (amount >= 0),
    payment_dt    bigint NOT NULL CHECK (payment_dt >= 0),
    bank          text NOT NULL,
    delivery_cost bigint NOT NULL CHECK (delivery_cost >= 0),
    goods_total   bigint NOT NULL CHECK (goods_total >= 0),
    custom_fee    bigint NOT NULL CHECK (custom_fee >= 0)
);

CREATE TABLE IF NOT EXISTS items (
    order_uid    text NOT NULL REFERENCES orders (order_uid) ON DELETE CASCADE,
    -- Index of the item in the message, so items come back in the order they arrived.
    position     integer NOT NULL CHECK (position >= 0),
    chrt_id      bigint NOT NULL CHECK (chrt_id >= 0),
    track_number text NOT NULL,
    price        bigint NOT NULL CHECK (price >= 0),
    rid          text NOT NULL,
    name         text NOT NULL,
    sale         integer NOT NULL CHECK (sale BETWEEN 0 AND 100),
    size         text NOT NULL,
    total_price  bigint NOT NULL CHECK (total_price >= 0),
    nm_id        bigint NOT NULL CHECK (nm_id >= 0),
    brand        text NOT NULL,
    status       integer NOT NULL CHECK (status >= 0),
    -- Also the index behind the foreign key: items are always read by order_uid.
    PRIMARY KEY (order_uid, position)
);

-- The next offset to read per partition, committed in the same transaction as the orders
-- read before it: this is what makes ingestion exactly-once.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Every message that did not become an order, with its position and why.
CREATE TABLE IF NOT EXISTS rejected_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);

CREATE INDEX IF NOT EXISTS rejected_messages_reason_idx ON rejected_messages (reason, id);
