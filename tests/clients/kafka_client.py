"""Produces to a Kafka-API broker with kafka-python, as a user's producer would.

    kafka_client.py BOOTSTRAP TOPIC PARTITIONS MESSAGES

Creates TOPIC with PARTITIONS partitions, then sends MESSAGES JSON messages
{"i": i, "k": "k{i%3}", "v": i} keyed "key{i}" with a header h=value{i}, message i to
partition i % PARTITIONS, and prints {"sent": MESSAGES} once the broker has them all.
"""

import json
import sys

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, topic, partitions, messages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
admin.close()
producer = KafkaProducer(bootstrap_servers=bootstrap)
for i in range(messages):
    value = json.dumps({"i": i, "k": f"k{i % 3}", "v": i}).encode()
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
