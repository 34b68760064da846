"""The other side of busway-kafka's interop test, on Python's confluent-kafka.

  interop.py produce BOOTSTRAP TOPIC  < records.json   produces the records (key, value_b64, headers)
  interop.py consume BOOTSTRAP TOPIC N                  prints the first N records as JSON
"""
import base64
import json
import sys
import time

from confluent_kafka import Consumer, Producer


def produce(bootstrap, topic):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failures = []

    def report(err, _msg):
        if err is not None:
            failures.append(str(err))

    for record in json.load(sys.stdin):
        producer.produce(
            topic,
            key=record["key"].encode() if record.get("key") is not None else None,
            value=base64.b64decode(record["value_b64"]),
            headers=[(k, v.encode()) for k, v in record["headers"]],
            on_delivery=report,
        )
    left = producer.flush(30)
    if left or failures:
        sys.exit(f"produce failed: {left} undelivered, errors {failures}")


def consume(bootstrap, topic, n):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "python-interop-" + topic,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic])
    out = []
    deadline = time.time() + 60
    while len(out) < n and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            print(f"consumer error: {m.error()}", file=sys.stderr)
            continue
        out.append({
            "key": m.key().decode() if m.key() is not None else None,
            "value_b64": base64.b64encode(m.value() or b"").decode(),
            "headers": [[k, v.decode()] for k, v in (m.headers() or [])],
        })
    consumer.close()
    print(json.dumps(out))


if __name__ == "__main__":
    mode, bootstrap, topic = sys.argv[1:4]
    if mode == "produce":
        produce(bootstrap, topic)
    else:
        consume(bootstrap, topic, int(sys.argv[4]))
