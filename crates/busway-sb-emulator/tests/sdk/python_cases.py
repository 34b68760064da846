"""Fidelity cases for Microsoft's Python SDK (azure-servicebus, pyamqp transport) against the
busway Service Bus emulator.

    SB_CONNECTION_STRING=... python python_cases.py CASE

Each case does what a Service Bus user does and asserts what Microsoft documents; it prints
"PASS CASE" at the end, and any failed assertion or SDK error exits non-zero with a traceback.
The entities come from tests/sdk/mod.rs (`entities()`), created fresh for every case.
"""

import datetime
import os
import sys
import time
import uuid

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import MessageLockLostError, SessionCannotBeLockedError

CONN = os.environ["SB_CONNECTION_STRING"]
WAIT = 5  # seconds a receive may wait for a message that must arrive
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def receive(receiver, count=1, wait=WAIT):
    """Receives until `count` messages arrived or `wait` seconds passed."""
    got = []
    deadline = time.monotonic() + wait
    while len(got) < count and time.monotonic() < deadline:
        left = max(deadline - time.monotonic(), 0.1)
        got.extend(receiver.receive_messages(max_message_count=count - len(got), max_wait_time=left))
    return got


def receive_one(receiver, wait=WAIT):
    got = receive(receiver, 1, wait)
    assert got, "no message arrived within %ss" % wait
    return got[0]


def assert_empty(receiver, wait=1):
    got = receiver.receive_messages(max_message_count=1, max_wait_time=wait)
    assert not got, "expected nothing, got %r" % [str(m) for m in got]


@case
def send_receive_complete(client):
    with client.get_queue_sender("q") as sender:
        sender.send_messages(ServiceBusMessage("one"))
        sender.send_messages(ServiceBusMessage("two"))
    with client.get_queue_receiver("q") as receiver:
        first = receive_one(receiver)
        assert str(first) == "one", str(first)
        assert first.sequence_number == 1, first.sequence_number
        assert first.lock_token is not None
        assert first.locked_until_utc > utcnow()
        assert first.message_id, "Service Bus assigns a MessageId"
        assert first.delivery_count == 0, first.delivery_count
        receiver.complete_message(first)
        second = receive_one(receiver)
        assert str(second) == "two"
        receiver.complete_message(second)
        assert_empty(receiver)


@case
def batch_send(client):
    with client.get_queue_sender("q") as sender:
        batch = sender.create_message_batch()
        for i in range(10):
            batch.add_message(ServiceBusMessage("m%d" % i, application_properties={"i": i}))
        sender.send_messages(batch)
        sender.send_messages([ServiceBusMessage("list%d" % i) for i in range(3)])
    with client.get_queue_receiver("q", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
        got = receive(receiver, 13)
        bodies = [str(m) for m in got]
        assert bodies == ["m%d" % i for i in range(10)] + ["list%d" % i for i in range(3)], bodies
        assert [m.application_properties[b"i"] for m in got[:10]] == list(range(10))


@case
def receive_and_delete(client):
    with client.get_queue_sender("q") as sender:
        sender.send_messages(ServiceBusMessage("once"))
    with client.get_queue_receiver("q", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
        message = receive_one(receiver)
        assert str(message) == "once"
        assert_empty(receiver)
    with client.get_queue_receiver("q") as receiver:
        assert not receiver.peek_messages(max_message_count=5), "receive-and-delete removed it"


@case
def abandon_increments_delivery_count(client):
    with client.get_queue_sender("q") as sender:
        sender.send_messages(ServiceBusMessage("retry"))
    with client.get_queue_receiver("q") as receiver:
        first = receive_one(receiver)
        receiver.abandon_message(first)
        again = receive_one(receiver)
        assert str(again) == "retry"
        assert again.delivery_count == first.delivery_count + 1, (first.delivery_count, again.delivery_count)
        receiver.complete_message(again)


@case
def defer_and_receive_deferred(client):
    with client.get_queue_sender("q") as sender:
        sender.send_messages(ServiceBusMessage("later"))
        sender.send_messages(ServiceBusMessage("now"))
    with client.get_queue_receiver("q") as receiver:
        later = receive_one(receiver)
        assert str(later) == "later"
        seq = later.sequence_number
        receiver.defer_message(later)
        now = receive_one(receiver)
        assert str(now) == "now", "a deferred message is not received again"
        receiver.complete_message(now)
        assert_empty(receiver)
        deferred = receiver.receive_deferred_messages([seq])
        assert [str(m) for m in deferred] == ["later"]
        receiver.complete_message(deferred[0])
        assert not receiver.peek_messages(max_message_count=5)


@case
def dead_letter_with_reason(client):
    with client.get_queue_sender("q") as sender:
        sender.send_messages(ServiceBusMessage("poison", application_properties={"k": "v"}))
    with client.get_queue_receiver("q") as receiver:
        message = receive_one(receiver)
        receiver.dead_letter_message(message, reason="bad-input", error_description="field x missing")
        assert_empty(receiver)
    with client.get_queue_receiver("q", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        dead = receive_one(dlq)
        assert str(dead) == "poison"
        assert dead.dead_letter_reason == "bad-input", dead.dead_letter_reason
        assert dead.dead_letter_error_description == "field x missing"
        assert dead.application_properties[b"k"] == b"v" or dead.application_properties[b"k"] == "v"
        dlq.complete_message(dead)


@case
def max_delivery_count_to_dlq(client):
    with client.get_queue_sender("mdc") as sender:
        sender.send_messages(ServiceBusMessage("flaky"))
    with client.get_queue_receiver("mdc") as receiver:
        for _ in range(2):
            receiver.abandon_message(receive_one(receiver))
        assert_empty(receiver)
    with client.get_queue_receiver("mdc", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        dead = receive_one(dlq)
        assert str(dead) == "flaky"
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded", dead.dead_letter_reason
        dlq.complete_message(dead)


@case
def ttl_expiry(client):
    with client.get_queue_sender("q") as sender:
        sender.send_messages(ServiceBusMessage("short", time_to_live=datetime.timedelta(milliseconds=500)))
        sender.send_messages(ServiceBusMessage("long"))
    with client.get_queue_sender("ttl-dl") as sender:
        sender.send_messages(ServiceBusMessage("expires"))
    time.sleep(1.5)
    with client.get_queue_receiver("q") as receiver:
        message = receive_one(receiver)
        assert str(message) == "long", "the expired message is gone"
        receiver.complete_message(message)
    with client.get_queue_receiver("ttl-dl") as receiver:
        assert_empty(receiver)
    with client.get_queue_receiver("ttl-dl", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        dead = receive_one(dlq)
        assert str(dead) == "expires"
        assert dead.dead_letter_reason == "TTLExpiredException", dead.dead_letter_reason
        dlq.complete_message(dead)


@case
def scheduled_and_cancel(client):
    with client.get_queue_sender("q") as sender:
        at = utcnow() + datetime.timedelta(seconds=3)
        keep = sender.schedule_messages(ServiceBusMessage("scheduled"), at)
        drop = sender.schedule_messages(ServiceBusMessage("cancelled"), at)
        assert len(keep) == 1 and len(drop) == 1
        sender.cancel_scheduled_messages(drop)
        sender.send_messages(ServiceBusMessage("via-property", scheduled_enqueue_time_utc=at))
    with client.get_queue_receiver("q") as receiver:
        peeked = receiver.peek_messages(max_message_count=5)
        assert sorted(str(m) for m in peeked) == ["scheduled", "via-property"], [str(m) for m in peeked]
        assert_empty(receiver, wait=0.3)
        got = receive(receiver, 2, wait=8)
        assert sorted(str(m) for m in got) == ["scheduled", "via-property"], [str(m) for m in got]
        assert all(m.enqueued_time_utc >= at - datetime.timedelta(milliseconds=50) for m in got)
        for m in got:
            receiver.complete_message(m)
        assert_empty(receiver)


@case
def sessions_order_and_state(client):
    with client.get_queue_sender("sq") as sender:
        sender.send_messages([ServiceBusMessage("a%d" % i, session_id="A") for i in range(3)])
        sender.send_messages([ServiceBusMessage("b%d" % i, session_id="B") for i in range(3)])
    with client.get_queue_receiver("sq", session_id="B") as receiver:
        session = receiver.session
        assert session.session_id == "B"
        assert session.locked_until_utc > utcnow(), session.locked_until_utc
        assert session.get_state() in (None, b"")
        session.set_state(b"progress")
        assert session.get_state() == b"progress"
        got = receive(receiver, 3)
        assert [str(m) for m in got] == ["b0", "b1", "b2"], [str(m) for m in got]
        assert all(m.session_id == "B" for m in got)
        for m in got:
            receiver.complete_message(m)
        before = session.locked_until_utc
        time.sleep(0.05)
        assert session.renew_lock() > before
    with client.get_queue_receiver("sq", session_id=NEXT_AVAILABLE_SESSION) as receiver:
        assert receiver.session.session_id == "A", "the next available session is the one with messages"
        got = receive(receiver, 3)
        assert [str(m) for m in got] == ["a0", "a1", "a2"]
        for m in got:
            receiver.complete_message(m)
    with client.get_queue_receiver("sq", session_id="B") as receiver:
        assert receiver.session.get_state() == b"progress", "session state outlives the receiver"


@case
def session_is_locked_to_one_receiver(client):
    with client.get_queue_sender("sq") as sender:
        sender.send_messages(ServiceBusMessage("x", session_id="S"))
    # No retries: retrying for longer than the 5 s session lock would legitimately win the
    # session once the first receiver's lock expires.
    impatient = ServiceBusClient.from_connection_string(CONN, retry_total=0)
    with client.get_queue_receiver("sq", session_id="S") as first, impatient:
        try:
            with impatient.get_queue_receiver("sq", session_id="S", max_wait_time=2) as second:
                second.receive_messages(max_message_count=1, max_wait_time=1)
            raise AssertionError("a locked session was accepted twice")
        except AssertionError:
            raise
        except SessionCannotBeLockedError:
            pass
        message = receive_one(first)
        first.complete_message(message)


@case
def duplicate_detection(client):
    with client.get_queue_sender("dup") as sender:
        sender.send_messages(ServiceBusMessage("first", message_id="same"))
        sender.send_messages(ServiceBusMessage("second", message_id="same"))
        sender.send_messages(ServiceBusMessage("other", message_id="different"))
    with client.get_queue_receiver("dup", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
        got = receive(receiver, 3, wait=2)
        assert [str(m) for m in got] == ["first", "other"], [str(m) for m in got]


@case
def peek(client):
    with client.get_queue_sender("q") as sender:
        sender.send_messages([ServiceBusMessage("p%d" % i) for i in range(4)])
    with client.get_queue_receiver("q") as receiver:
        peeked = receiver.peek_messages(max_message_count=3)
        assert [str(m) for m in peeked] == ["p0", "p1", "p2"]
        assert [m.sequence_number for m in peeked] == [1, 2, 3]
        later = receiver.peek_messages(max_message_count=10, sequence_number=3)
        assert [str(m) for m in later] == ["p2", "p3"]
        # Peeking locks nothing: every message can still be received.
        got = receive(receiver, 4)
        assert len(got) == 4
        for m in got:
            receiver.complete_message(m)


@case
def lock_renewal_and_lost_lock(client):
    with client.get_queue_sender("short-lock") as sender:
        sender.send_messages(ServiceBusMessage("held"))
        sender.send_messages(ServiceBusMessage("lost"))
    with client.get_queue_receiver("short-lock") as receiver:
        held = receive_one(receiver)
        assert str(held) == "held"
        for _ in range(3):
            time.sleep(1)
            before = held.locked_until_utc
            receiver.renew_message_lock(held)
            assert held.locked_until_utc > before
        receiver.complete_message(held)
        lost = receive_one(receiver)
        time.sleep(3.5)  # past the 3 s lock
        try:
            receiver.complete_message(lost)
            raise AssertionError("completing with an expired lock succeeded")
        except MessageLockLostError:
            pass
        again = receive_one(receiver)
        assert str(again) == "lost" and again.delivery_count == lost.delivery_count + 1
        receiver.complete_message(again)


@case
def topic_filters(client):
    with client.get_topic_sender("t") as sender:
        sender.send_messages(ServiceBusMessage("red", application_properties={"color": "red"}))
        sender.send_messages(ServiceBusMessage("blue", application_properties={"color": "blue"}))
        sender.send_messages(ServiceBusMessage("vip", subject="vip"))
    expected = {"all": ["red", "blue", "vip"], "red": ["red"], "vip": ["vip"]}
    for sub, bodies in expected.items():
        with client.get_subscription_receiver("t", sub, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
            got = receive(r, len(bodies) + 1, wait=2)
            assert [str(m) for m in got] == bodies, (sub, [str(m) for m in got])


@case
def properties_round_trip(client):
    sent = ServiceBusMessage(
        b"\x00\x01binary\xff",
        message_id="mid-1",
        correlation_id="cid-1",
        content_type="application/octet-stream",
        subject="subj",
        to="someone",
        reply_to="reply-q",
        reply_to_session_id="rs-1",
        partition_key="pk-1",
        time_to_live=datetime.timedelta(minutes=5),
        application_properties={
            "str": "text",
            "int": 42,
            "neg": -7,
            "float": 1.5,
            "bool": True,
            "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
            "cloudEvents_type": "com.example.created",
        },
    )
    with client.get_queue_sender("q") as sender:
        sender.send_messages(sent)
    with client.get_queue_receiver("q") as receiver:
        got = receive_one(receiver)
        assert b"".join(got.body) == b"\x00\x01binary\xff"
        assert got.message_id == "mid-1"
        assert got.correlation_id == "cid-1"
        assert got.content_type == "application/octet-stream"
        assert got.subject == "subj"
        assert got.to == "someone"
        assert got.reply_to == "reply-q"
        assert got.reply_to_session_id == "rs-1"
        assert got.partition_key == "pk-1"
        assert got.time_to_live == datetime.timedelta(minutes=5), got.time_to_live
        props = {k.decode() if isinstance(k, bytes) else k: v for k, v in got.application_properties.items()}
        text = lambda v: v.decode() if isinstance(v, bytes) else v
        assert text(props["str"]) == "text"
        assert props["int"] == 42 and props["neg"] == -7 and props["float"] == 1.5 and props["bool"] is True
        assert props["uuid"] == uuid.UUID("12345678-1234-5678-1234-567812345678"), props["uuid"]
        when = props["when"]
        if isinstance(when, int):
            when = datetime.datetime.fromtimestamp(when / 1000, datetime.timezone.utc)
        assert when == datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc), when
        assert text(props["cloudEvents_type"]) == "com.example.created"
        assert got.enqueued_time_utc is not None and got.sequence_number == 1
        receiver.complete_message(got)


def main():
    name = sys.argv[1]
    with ServiceBusClient.from_connection_string(CONN) as client:
        CASES[name](client)
    print("PASS %s" % name)


if __name__ == "__main__":
    main()
