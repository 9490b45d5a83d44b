"""Time from produce to queryable: how long after a Kafka producer's send is acknowledged
a query through Grove's broker sees the message's row.

    freshness.py BOOTSTRAP GROVE_URL PROBES RATE [REPLICAS]

Creates topic `fresh` (2 partitions) and a supervisor reading it into datasource
`fresh` with REPLICAS replicas (default 1), then sends background messages at RATE per second and, every 200 ms, one probe
message with a unique `v`; for each probe it polls `SELECT COUNT(*) FROM fresh WHERE
v = ...` on GROVE_URL every 5 ms until the row is there. Prints one JSON line with the
latencies' percentiles in milliseconds.
"""

import datetime
import json
import sys
import threading
import time
import urllib.request

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, grove, probes, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
replicas = int(sys.argv[5]) if len(sys.argv) > 5 else 1


def post(path, body):
    request = urllib.request.Request(
        grove + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def count(v):
    try:
        rows = post("/druid/v2/sql", {"query": f"SELECT COUNT(*) AS n FROM fresh WHERE v = {v}"})
    except urllib.error.HTTPError:
        return 0  # the datasource does not exist yet
    return rows[0]["n"] if rows else 0


admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("fresh", num_partitions=2, replication_factor=1)])
admin.close()
post(
    "/druid/indexer/v1/supervisor",
    {
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": "fresh",
                "timestampSpec": {"column": "ts", "format": "iso"},
                "dimensionsSpec": {"dimensions": ["kind", {"type": "long", "name": "v"}]},
                "granularitySpec": {"segmentGranularity": "hour", "rollup": False},
            },
            "ioConfig": {
                "topic": "fresh",
                "inputFormat": {"type": "json"},
                "consumerProperties": {"bootstrap.servers": bootstrap},
                "useEarliestOffset": True,
                "taskDuration": "PT30S",
                "replicas": replicas,
            },
        },
    },
)
producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)


def message(v, kind):
    ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"ts": ts, "kind": kind, "v": v}).encode()


stop = threading.Event()


def background():
    v = 1_000_000_000
    while not stop.is_set():
        producer.send("fresh", message(v, "background"))
        v += 1
        time.sleep(1.0 / rate)


# Warm up: the first task starts and the datasource appears.
producer.send("fresh", message(-1, "warmup")).get(timeout=30)
deadline = time.time() + 60
while count(-1) == 0:
    if time.time() > deadline:
        sys.exit("the warm-up message never became queryable")
    time.sleep(0.05)
threading.Thread(target=background, daemon=True).start()
latencies = []
for probe in range(probes):
    producer.send("fresh", message(probe, "probe")).get(timeout=30)
    sent = time.perf_counter()
    while count(probe) == 0:
        time.sleep(0.005)
    latencies.append((time.perf_counter() - sent) * 1000)
    time.sleep(0.2)
stop.set()
latencies.sort()


def pct(p):
    return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1)


print(json.dumps({"probes": probes, "rate": rate, "replicas": replicas, "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": round(latencies[-1], 1)}))
