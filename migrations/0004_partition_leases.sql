-- Replicas share a topic's partitions through leases kept here (rskafka has no consumer
-- groups, and the offsets they guard live in this database anyway).
--
-- A member is one running consumer; it is alive while `expires_at` (set from the database's
-- clock on every heartbeat, so replicas' clocks never matter) is in the future. A partition's
-- lease is held by `owner` while that member is alive. `epoch` grows on every grant and every
-- release, and a batch commits only while its writer's epoch is still the partition's (the
-- batch transaction holds the lease row FOR SHARE, so a new grant waits for an in-flight
-- commit and a stale owner's next commit is refused).
CREATE TABLE IF NOT EXISTS consumer_members (
    topic        text NOT NULL,
    member_id    text NOT NULL,
    joined_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (topic, member_id)
);

CREATE TABLE IF NOT EXISTS partition_leases (
    topic      text NOT NULL,
    partition  integer NOT NULL,
    owner      text,
    epoch      bigint NOT NULL DEFAULT 0,
    granted_at timestamptz,
    PRIMARY KEY (topic, partition)
);
