"""Produces to a Kafka-API broker with kafka-python, as a user's producer would.

    kafka_client.py BOOTSTRAP TOPIC PARTITIONS MESSAGES [FIRST [garbage]]
    kafka_client.py BOOTSTRAP TOPIC delete

Creates TOPIC with PARTITIONS partitions (unless FIRST is given: the topic exists),
then sends MESSAGES JSON messages i = FIRST, FIRST+1, ... (FIRST defaults to 0):
{"ts": 2024-01-01T00:00:00Z + i seconds, "i": i, "k": "k{i%3}", "v": i}, keyed "key{i}"
with a header h=value{i}, message i to partition i % PARTITIONS, and prints
{"sent": MESSAGES} once the broker has them all. With `garbage`, each message is
instead the text `not json {i}`. `delete` deletes TOPIC and prints {"deleted": TOPIC}.
"""

import datetime
import json
import sys

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

if sys.argv[3] == "delete":
    admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
    admin.delete_topics([sys.argv[2]])
    admin.close()
    print(json.dumps({"deleted": sys.argv[2]}))
    sys.exit(0)
bootstrap, topic, partitions, messages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
first = int(sys.argv[5]) if len(sys.argv) > 5 else None
garbage = len(sys.argv) > 6 and sys.argv[6] == "garbage"
if first is None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()
producer = KafkaProducer(bootstrap_servers=bootstrap)
epoch = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
for i in range(first or 0, (first or 0) + messages):
    ts = (epoch + datetime.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    value = json.dumps({"ts": ts, "i": i, "k": f"k{i % 3}", "v": i}).encode()
    if garbage:
        value = f"not json {i}".encode()
    producer.send(
        topic,
        key=f"key{i}".encode(),
        value=value,
        partition=i % partitions,
        headers=[("h", f"value{i}".encode())],
    )
producer.flush()
producer.close()
print(json.dumps({"sent": messages}))
