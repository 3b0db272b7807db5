"""Produces orders with confluent-kafka (librdkafka), a client written by someone else.

Usage: python_producer.py BROKER TOPIC COUNT
Sends the reference order (from fixtures/order.json), COUNT generated valid orders and one
invalid order (totals that do not add up), keyed so they spread over the partitions.
"""
import copy
import json
import pathlib
import sys

from confluent_kafka import Producer

broker, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
fixture = json.loads((pathlib.Path(__file__).parents[3] / "fixtures" / "order.json").read_text())

producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "compression.type": "gzip"})
errors = []


def report(err, msg):
    if err is not None:
        errors.append(str(err))


producer.produce(topic, json.dumps(fixture).encode(), key=b"ref", callback=report)
for i in range(count):
    order = copy.deepcopy(fixture)
    order["order_uid"] = f"py-{i}"
    order["payment"]["transaction"] = f"py-{i}"
    producer.produce(topic, json.dumps(order).encode(), key=str(i).encode(), callback=report)
bad = copy.deepcopy(fixture)
bad["order_uid"] = "py-bad"
bad["payment"]["amount"] = 1
producer.produce(topic, json.dumps(bad).encode(), key=b"bad", callback=report)
left = producer.flush(30)
if left or errors:
    sys.exit(f"not delivered: {left}, errors: {errors[:5]}")
print(f"sent {count + 2} messages")
