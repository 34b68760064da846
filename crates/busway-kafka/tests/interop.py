"""The other side of busway-kafka's interop test, on Python's confluent-kafka and the official
CloudEvents SDK for Python (its Kafka binding, `cloudevents.v1.kafka`).

  interop.py produce BOOTSTRAP TOPIC  < records.json    produces the records (key, value_b64, headers)
  interop.py consume BOOTSTRAP TOPIC N                   prints the first N records as JSON
  interop.py produce-sdk BOOTSTRAP TOPIC < events.json   encodes events (attributes, data_b64) with the
                                                         SDK's to_binary, produces them, prints the
                                                         records as produced
  interop.py consume-sdk BOOTSTRAP TOPIC N               decodes the first N records with the SDK's
                                                         from_binary, prints their attributes
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


def produce_sdk(bootstrap, topic):
    from cloudevents.v1.http import CloudEvent
    from cloudevents.v1.kafka import to_binary

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failures = []
    produced = []

    def report(err, _msg):
        if err is not None:
            failures.append(str(err))

    for spec in json.load(sys.stdin):
        event = CloudEvent(spec["attributes"], base64.b64decode(spec["data_b64"]))
        message = to_binary(event, data_marshaller=lambda data: data)
        key = message.key.encode() if isinstance(message.key, str) else message.key
        headers = [(k, v) for k, v in message.headers.items()]
        producer.produce(topic, key=key, value=message.value, headers=headers, on_delivery=report)
        produced.append({
            "key": key.decode() if key is not None else None,
            "headers": [[k, v.decode()] for k, v in headers],
        })
    left = producer.flush(30)
    if left or failures:
        sys.exit(f"produce failed: {left} undelivered, errors {failures}")
    print(json.dumps(produced))


def consume_sdk(bootstrap, topic, n):
    from cloudevents.v1.kafka import KafkaMessage, from_binary

    out = []
    for record in read(bootstrap, topic, n):
        message = KafkaMessage(
            headers={k: v for k, v in (record.headers() or [])},
            key=record.key().decode() if record.key() is not None else None,
            value=record.value() or b"",
        )
        event = from_binary(message, data_unmarshaller=lambda data: data)
        attributes = {k: str(v) for k, v in event.get_attributes().items()}
        out.append({
            "attributes": attributes,
            "data_b64": base64.b64encode(event.get_data() or b"").decode(),
        })
    print(json.dumps(out))


def read(bootstrap, topic, n):
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
        out.append(m)
    consumer.close()
    return out


def consume(bootstrap, topic, n):
    out = [
        {
            "key": m.key().decode() if m.key() is not None else None,
            "value_b64": base64.b64encode(m.value() or b"").decode(),
            "headers": [[k, v.decode()] for k, v in (m.headers() or [])],
        }
        for m in read(bootstrap, topic, n)
    ]
    print(json.dumps(out))


if __name__ == "__main__":
    mode, bootstrap, topic = sys.argv[1:4]
    if mode == "produce":
        produce(bootstrap, topic)
    elif mode == "produce-sdk":
        produce_sdk(bootstrap, topic)
    elif mode == "consume-sdk":
        consume_sdk(bootstrap, topic, int(sys.argv[4]))
    else:
        consume(bootstrap, topic, int(sys.argv[4]))
