"""Produces orders with confluent-kafka (librdkafka), a client written by someone else.

Usage:
  python_producer.py BROKER TOPIC COUNT [CODEC]
      The reference order (from fixtures/order.json), COUNT generated valid orders and one
      invalid order (totals that do not add up), keyed so they spread over the partitions,
      compressed with CODEC (gzip, snappy, lz4, zstd or none; default gzip).
  python_producer.py --bad-timestamp BROKER TOPIC
      To partition 0, each in a batch of its own: order ts-0, a valid order whose record
      timestamp (i64 milliseconds) is far outside any calendar a client can represent, and
      order ts-2.
  python_producer.py --corrupt-batch BROKER TOPIC
      To partition 0: order cb-0, then a record batch written with a raw Produce request that
      says it holds 3 gzip-compressed records but whose payload is not gzip (its CRC is right,
      so only decompression fails), then order cb-4. For a broker that keeps batches as sent
      (noida-db; tansu refuses it).
  python_producer.py --transactions BROKER TOPIC
      To partition 0 with a transactional producer: tx-c-0..4 committed, tx-a-0..4 aborted,
      tx-c-5..9 committed, tx-a-5..9 aborted (the log ends with an abort marker).
Each mode prints one line with what it sent, and exits non-zero if anything was not delivered.
"""
import copy
import json
import pathlib
import socket
import struct
import sys

from confluent_kafka import Producer
from kafka.record.util import calc_crc32c

fixture = json.loads((pathlib.Path(__file__).parents[3] / "fixtures" / "order.json").read_text())
errors = []


def report(err, msg):
    if err is not None:
        errors.append(str(err))


def order(uid):
    o = copy.deepcopy(fixture)
    o["order_uid"] = uid
    o["payment"]["transaction"] = uid
    return json.dumps(o).encode()


def finish(producer, what):
    left = producer.flush(30)
    if left or errors:
        sys.exit(f"not delivered: {left}, errors: {errors[:5]}")
    print(what)


def mixed(broker, topic, count, codec):
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "compression.type": codec})
    producer.produce(topic, json.dumps(fixture).encode(), key=b"ref", callback=report)
    for i in range(count):
        producer.produce(topic, order(f"py-{i}"), key=str(i).encode(), callback=report)
    bad = copy.deepcopy(fixture)
    bad["order_uid"] = "py-bad"
    bad["payment"]["amount"] = 1
    producer.produce(topic, json.dumps(bad).encode(), key=b"bad", callback=report)
    finish(producer, f"sent {count + 2} messages ({codec})")


def bad_timestamp(broker, topic):
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 0})
    # 9e18 ms is within i64 but some 285 million years away: no date type a client uses
    # (chrono's ends at year 262143) can hold it.
    for uid, ts in (("ts-0", None), ("ts-1", 9_000_000_000_000_000_000), ("ts-2", None)):
        kwargs = {"timestamp": ts} if ts is not None else {}
        producer.produce(topic, order(uid), partition=0, callback=report, **kwargs)
        producer.flush(30)  # one batch per message
    finish(producer, "sent 3 messages")


def produce_raw(broker, topic, partition, batch):
    """One Produce request (v3) with `batch` as the partition's record data; returns the
    partition's (error code, base offset)."""
    host, port = broker.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        client, name = b"orders-test", topic.encode()
        req = struct.pack(">hhih", 0, 3, 1, len(client)) + client  # Produce v3, correlation 1
        req += struct.pack(">hhi", -1, 1, 10_000)  # no transactional id, acks 1, timeout
        req += struct.pack(">ih", 1, len(name)) + name
        req += struct.pack(">iii", 1, partition, len(batch)) + batch
        s.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", s.recv(4))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
    pos = 4 + 4  # correlation id, topic count
    pos += 2 + struct.unpack_from(">h", data, pos)[0] + 4  # topic name, partition count
    _, error, base_offset = struct.unpack_from(">ihq", data, pos)
    return error, base_offset


def corrupt_gzip_batch(records):
    """A v2 record batch: gzip attribute, `records` records claimed, a payload that is not gzip."""
    payload = b"this is not a gzip stream"
    # attributes, lastOffsetDelta, firstTimestamp, maxTimestamp, producerId, producerEpoch,
    # baseSequence, record count
    body = struct.pack(">hiqqqhii", 1, records - 1, 0, 0, -1, -1, -1, records) + payload
    after_length = struct.pack(">ibI", -1, 2, calc_crc32c(body)) + body
    return struct.pack(">qi", 0, len(after_length)) + after_length


def corrupt_batch(broker, topic):
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 0})
    producer.produce(topic, order("cb-0"), partition=0, callback=report)
    producer.flush(30)
    error, base_offset = produce_raw(broker, topic, 0, corrupt_gzip_batch(3))
    if error != 0 or base_offset != 1:
        sys.exit(f"raw produce: error {error}, base offset {base_offset}")
    producer.produce(topic, order("cb-4"), partition=0, callback=report)
    finish(producer, "sent 2 orders and a corrupt batch of 3")


def transactions(broker, topic):
    producer = Producer({"bootstrap.servers": broker, "transactional.id": f"orders-test-{topic}"})
    producer.init_transactions(30)
    for kind, first in (("c", 0), ("a", 0), ("c", 5), ("a", 5)):
        producer.begin_transaction()
        for i in range(first, first + 5):
            producer.produce(topic, order(f"tx-{kind}-{i}"), partition=0, callback=report)
        if kind == "c":
            producer.commit_transaction(30)
        else:
            producer.flush(30)  # the records reach the log before the abort marker
            producer.abort_transaction(30)
    finish(producer, "sent 20 messages in 4 transactions (2 committed, 2 aborted)")


if sys.argv[1] == "--bad-timestamp":
    bad_timestamp(sys.argv[2], sys.argv[3])
elif sys.argv[1] == "--corrupt-batch":
    corrupt_batch(sys.argv[2], sys.argv[3])
elif sys.argv[1] == "--transactions":
    transactions(sys.argv[2], sys.argv[3])
else:
    mixed(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "gzip")
