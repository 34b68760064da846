// Fidelity cases for Microsoft's JavaScript SDK (@azure/service-bus, rhea) against the busway
// Service Bus emulator.
//
//     SB_CONNECTION_STRING=... NODE_PATH=.../node_modules node js_cases.js CASE
//
// Each case does what a Service Bus user does and asserts what Microsoft documents; it prints
// "PASS CASE" at the end, and a failed assertion or SDK error exits non-zero with the error.
// The entities come from tests/sdk/mod.rs (`entities()`), created fresh for every case.
"use strict";

const assert = require("node:assert/strict");
const { ServiceBusClient } = require("@azure/service-bus");

const CONN = process.env.SB_CONNECTION_STRING;
const WAIT = 5000; // ms a receive may wait for a message that must arrive
const cases = {};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const seq = (m) => m.sequenceNumber.toNumber();
const bodies = (messages) => messages.map((m) => m.body);

async function receive(receiver, count = 1, wait = WAIT) {
  const got = [];
  const deadline = Date.now() + wait;
  while (got.length < count && Date.now() < deadline) {
    const left = Math.max(deadline - Date.now(), 100);
    got.push(...(await receiver.receiveMessages(count - got.length, { maxWaitTimeInMs: left })));
  }
  return got;
}

async function receiveOne(receiver, wait = WAIT) {
  const got = await receive(receiver, 1, wait);
  assert.ok(got.length === 1, `no message arrived within ${wait} ms`);
  return got[0];
}

async function assertEmpty(receiver, wait = 1000) {
  const got = await receiver.receiveMessages(1, { maxWaitTimeInMs: wait });
  assert.deepEqual(bodies(got), [], "expected no message");
}

async function rejects(promise, code) {
  try {
    await promise;
  } catch (error) {
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    return;
  }
  assert.fail(`expected the service to refuse with ${code}`);
}

cases.send_receive_complete = async (client) => {
  const sender = client.createSender("q");
  await sender.sendMessages({ body: "one" });
  await sender.sendMessages({ body: "two" });
  const receiver = client.createReceiver("q");
  const first = await receiveOne(receiver);
  assert.equal(first.body, "one");
  assert.equal(seq(first), 1);
  assert.ok(first.lockToken, "peek-lock messages carry a lock token");
  assert.ok(first.lockedUntilUtc > new Date(), "locked until the future");
  assert.ok(first.messageId, "Service Bus assigns a MessageId");
  assert.equal(first.deliveryCount, 0);
  await receiver.completeMessage(first);
  const second = await receiveOne(receiver);
  assert.equal(second.body, "two");
  await receiver.completeMessage(second);
  await assertEmpty(receiver);
};

cases.batch_send = async (client) => {
  const sender = client.createSender("q");
  const batch = await sender.createMessageBatch();
  for (let i = 0; i < 10; i++) {
    assert.ok(batch.tryAddMessage({ body: `m${i}`, applicationProperties: { i } }));
  }
  await sender.sendMessages(batch);
  await sender.sendMessages([0, 1, 2].map((i) => ({ body: `list${i}` })));
  const receiver = client.createReceiver("q", { receiveMode: "receiveAndDelete" });
  const got = await receive(receiver, 13);
  assert.deepEqual(bodies(got), [
    ...[...Array(10).keys()].map((i) => `m${i}`),
    ...[0, 1, 2].map((i) => `list${i}`),
  ]);
  assert.deepEqual(
    got.slice(0, 10).map((m) => m.applicationProperties.i),
    [...Array(10).keys()],
  );
};

cases.receive_and_delete = async (client) => {
  await client.createSender("q").sendMessages({ body: "once" });
  const receiver = client.createReceiver("q", { receiveMode: "receiveAndDelete" });
  assert.equal((await receiveOne(receiver)).body, "once");
  await assertEmpty(receiver);
  assert.deepEqual(await client.createReceiver("q").peekMessages(5), []);
};

cases.abandon_increments_delivery_count = async (client) => {
  await client.createSender("q").sendMessages({ body: "retry" });
  const receiver = client.createReceiver("q");
  const first = await receiveOne(receiver);
  await receiver.abandonMessage(first);
  const again = await receiveOne(receiver);
  assert.equal(again.body, "retry");
  assert.equal(again.deliveryCount, first.deliveryCount + 1);
  await receiver.completeMessage(again);
};

cases.defer_and_receive_deferred = async (client) => {
  const sender = client.createSender("q");
  await sender.sendMessages({ body: "later" });
  await sender.sendMessages({ body: "now" });
  const receiver = client.createReceiver("q");
  const later = await receiveOne(receiver);
  assert.equal(later.body, "later");
  await receiver.deferMessage(later);
  const now = await receiveOne(receiver);
  assert.equal(now.body, "now", "a deferred message is not received again");
  await receiver.completeMessage(now);
  await assertEmpty(receiver);
  const deferred = await receiver.receiveDeferredMessages([later.sequenceNumber]);
  assert.deepEqual(bodies(deferred), ["later"]);
  await receiver.completeMessage(deferred[0]);
  assert.deepEqual(await receiver.peekMessages(5), []);
};

cases.dead_letter_with_reason = async (client) => {
  await client.createSender("q").sendMessages({ body: "poison", applicationProperties: { k: "v" } });
  const receiver = client.createReceiver("q");
  const message = await receiveOne(receiver);
  await receiver.deadLetterMessage(message, {
    deadLetterReason: "bad-input",
    deadLetterErrorDescription: "field x missing",
  });
  await assertEmpty(receiver);
  const dlq = client.createReceiver("q", { subQueueType: "deadLetter" });
  const dead = await receiveOne(dlq);
  assert.equal(dead.body, "poison");
  assert.equal(dead.deadLetterReason, "bad-input");
  assert.equal(dead.deadLetterErrorDescription, "field x missing");
  assert.equal(dead.applicationProperties.k, "v");
  await dlq.completeMessage(dead);
};

cases.max_delivery_count_to_dlq = async (client) => {
  await client.createSender("mdc").sendMessages({ body: "flaky" });
  const receiver = client.createReceiver("mdc");
  for (let i = 0; i < 2; i++) {
    await receiver.abandonMessage(await receiveOne(receiver));
  }
  await assertEmpty(receiver);
  const dlq = client.createReceiver("mdc", { subQueueType: "deadLetter" });
  const dead = await receiveOne(dlq);
  assert.equal(dead.body, "flaky");
  assert.equal(dead.deadLetterReason, "MaxDeliveryCountExceeded");
  await dlq.completeMessage(dead);
};

cases.ttl_expiry = async (client) => {
  const sender = client.createSender("q");
  await sender.sendMessages({ body: "short", timeToLive: 500 });
  await sender.sendMessages({ body: "long" });
  await client.createSender("ttl-dl").sendMessages({ body: "expires" });
  await sleep(1500);
  const receiver = client.createReceiver("q");
  const message = await receiveOne(receiver);
  assert.equal(message.body, "long", "the expired message is gone");
  await receiver.completeMessage(message);
  await assertEmpty(client.createReceiver("ttl-dl"));
  const dlq = client.createReceiver("ttl-dl", { subQueueType: "deadLetter" });
  const dead = await receiveOne(dlq);
  assert.equal(dead.body, "expires");
  assert.equal(dead.deadLetterReason, "TTLExpiredException");
  await dlq.completeMessage(dead);
};

cases.scheduled_and_cancel = async (client) => {
  const sender = client.createSender("q");
  const at = new Date(Date.now() + 3000);
  const keep = await sender.scheduleMessages({ body: "scheduled" }, at);
  const drop = await sender.scheduleMessages({ body: "cancelled" }, at);
  assert.equal(keep.length, 1);
  await sender.cancelScheduledMessages(drop);
  await sender.sendMessages({ body: "via-property", scheduledEnqueueTimeUtc: at });
  const receiver = client.createReceiver("q");
  const peeked = await receiver.peekMessages(5);
  assert.deepEqual(bodies(peeked).sort(), ["scheduled", "via-property"]);
  await assertEmpty(receiver, 300);
  const got = await receive(receiver, 2, 8000);
  assert.deepEqual(bodies(got).sort(), ["scheduled", "via-property"]);
  for (const m of got) {
    assert.ok(m.enqueuedTimeUtc.getTime() >= at.getTime() - 50, "enqueued when due");
    await receiver.completeMessage(m);
  }
  await assertEmpty(receiver);
};

cases.sessions_order_and_state = async (client) => {
  const sender = client.createSender("sq");
  await sender.sendMessages([0, 1, 2].map((i) => ({ body: `a${i}`, sessionId: "A" })));
  await sender.sendMessages([0, 1, 2].map((i) => ({ body: `b${i}`, sessionId: "B" })));
  const b = await client.acceptSession("sq", "B");
  assert.equal(b.sessionId, "B");
  assert.ok(b.sessionLockedUntilUtc > new Date(), "session locked until the future");
  await b.setSessionState("progress");
  assert.equal(String(await b.getSessionState()), "progress");
  const got = await receive(b, 3);
  assert.deepEqual(bodies(got), ["b0", "b1", "b2"]);
  for (const m of got) {
    assert.equal(m.sessionId, "B");
    await b.completeMessage(m);
  }
  const before = b.sessionLockedUntilUtc;
  await sleep(50);
  await b.renewSessionLock();
  assert.ok(b.sessionLockedUntilUtc > before, "renewing extends the session lock");
  await b.close();
  const next = await client.acceptNextSession("sq");
  assert.equal(next.sessionId, "A", "the next available session is the one with messages");
  const a = await receive(next, 3);
  assert.deepEqual(bodies(a), ["a0", "a1", "a2"]);
  for (const m of a) await next.completeMessage(m);
  await next.close();
  const again = await client.acceptSession("sq", "B");
  assert.equal(String(await again.getSessionState()), "progress", "state outlives the receiver");
  await again.close();
};

cases.session_is_locked_to_one_receiver = async (client) => {
  await client.createSender("sq").sendMessages({ body: "x", sessionId: "S" });
  const first = await client.acceptSession("sq", "S");
  const impatient = new ServiceBusClient(CONN, { retryOptions: { maxRetries: 0 } });
  try {
    await rejects(impatient.acceptSession("sq", "S"), "SessionCannotBeLocked");
  } finally {
    await impatient.close();
  }
  await first.completeMessage(await receiveOne(first));
  await first.close();
};

cases.duplicate_detection = async (client) => {
  const sender = client.createSender("dup");
  await sender.sendMessages({ body: "first", messageId: "same" });
  await sender.sendMessages({ body: "second", messageId: "same" });
  await sender.sendMessages({ body: "other", messageId: "different" });
  const receiver = client.createReceiver("dup", { receiveMode: "receiveAndDelete" });
  assert.deepEqual(bodies(await receive(receiver, 3, 2000)), ["first", "other"]);
};

cases.peek = async (client) => {
  await client.createSender("q").sendMessages([0, 1, 2, 3].map((i) => ({ body: `p${i}` })));
  const receiver = client.createReceiver("q");
  const peeked = await receiver.peekMessages(3);
  assert.deepEqual(bodies(peeked), ["p0", "p1", "p2"]);
  assert.deepEqual(peeked.map(seq), [1, 2, 3]);
  const later = await receiver.peekMessages(10, { fromSequenceNumber: peeked[2].sequenceNumber });
  assert.deepEqual(bodies(later), ["p2", "p3"]);
  const got = await receive(receiver, 4);
  assert.equal(got.length, 4, "peeking locks nothing");
  for (const m of got) await receiver.completeMessage(m);
};

cases.lock_renewal_and_lost_lock = async (client) => {
  const sender = client.createSender("short-lock");
  await sender.sendMessages({ body: "held" });
  await sender.sendMessages({ body: "lost" });
  // No automatic lock renewal: this case renews by hand and lets a lock expire.
  const receiver = client.createReceiver("short-lock", { maxAutoLockRenewalDurationInMs: 0 });
  const held = await receiveOne(receiver);
  assert.equal(held.body, "held");
  for (let i = 0; i < 3; i++) {
    await sleep(1000);
    const before = held.lockedUntilUtc;
    const until = await receiver.renewMessageLock(held);
    assert.ok(until > before, "renewing extends the lock");
  }
  await receiver.completeMessage(held);
  const lost = await receiveOne(receiver);
  await sleep(3500); // past the 3 s lock
  await rejects(receiver.completeMessage(lost), "MessageLockLost");
  const again = await receiveOne(receiver);
  assert.equal(again.body, "lost");
  assert.equal(again.deliveryCount, lost.deliveryCount + 1);
  await receiver.completeMessage(again);
};

cases.topic_filters = async (client) => {
  const sender = client.createSender("t");
  await sender.sendMessages({ body: "red", applicationProperties: { color: "red" } });
  await sender.sendMessages({ body: "blue", applicationProperties: { color: "blue" } });
  await sender.sendMessages({ body: "vip", subject: "vip" });
  const expected = { all: ["red", "blue", "vip"], red: ["red"], vip: ["vip"] };
  for (const [sub, want] of Object.entries(expected)) {
    const receiver = client.createReceiver("t", sub, { receiveMode: "receiveAndDelete" });
    assert.deepEqual(bodies(await receive(receiver, want.length + 1, 2000)), want, sub);
  }
};

cases.rule_manager = async (client) => {
  const rules = client.createRuleManager("t", "rules");
  const names = async () => {
    const out = [];
    for await (const rule of rules.listRules()) out.push(rule.name);
    return out.sort();
  };
  assert.deepEqual(await names(), ["$Default"]);
  await rules.createRule("sql", { sqlExpression: "kind = 'x' AND n > 2" });
  await rules.createRule("corr", { correlationId: "c1", applicationProperties: { region: "eu" } });
  await rules.deleteRule("$Default");
  assert.deepEqual(await names(), ["corr", "sql"]);
  const listed = [];
  for await (const rule of rules.listRules()) listed.push(rule);
  const sql = listed.find((r) => r.name === "sql");
  assert.equal(sql.filter.sqlExpression, "kind = 'x' AND n > 2");
  const corr = listed.find((r) => r.name === "corr");
  assert.equal(corr.filter.correlationId, "c1");
  await rejects(rules.createRule("sql", { sqlExpression: "1=1" }), "MessagingEntityAlreadyExists");
  const sender = client.createSender("t");
  await sender.sendMessages({ body: "sql-match", applicationProperties: { kind: "x", n: 3 } });
  await sender.sendMessages({ body: "sql-miss", applicationProperties: { kind: "x", n: 1 } });
  await sender.sendMessages({ body: "corr-match", correlationId: "c1", applicationProperties: { region: "eu" } });
  await sender.sendMessages({ body: "corr-miss", correlationId: "c1", applicationProperties: { region: "us" } });
  const receiver = client.createReceiver("t", "rules", { receiveMode: "receiveAndDelete" });
  assert.deepEqual(bodies(await receive(receiver, 3, 2000)), ["sql-match", "corr-match"]);
};

cases.properties_round_trip = async (client) => {
  const when = new Date(Date.UTC(2024, 4, 6, 7, 8, 9));
  const body = Buffer.from([0, 1, 98, 105, 110, 255]);
  await client.createSender("q").sendMessages({
    body,
    messageId: "mid-1",
    correlationId: "cid-1",
    contentType: "application/octet-stream",
    subject: "subj",
    to: "someone",
    replyTo: "reply-q",
    replyToSessionId: "rs-1",
    partitionKey: "pk-1",
    timeToLive: 300000,
    applicationProperties: {
      str: "text",
      int: 42,
      neg: -7,
      float: 1.5,
      bool: true,
      when,
      cloudEvents_type: "com.example.created",
    },
  });
  const receiver = client.createReceiver("q");
  const got = await receiveOne(receiver);
  assert.ok(Buffer.isBuffer(got.body), "a Buffer body comes back as bytes");
  assert.deepEqual(Buffer.from(got.body), body);
  assert.equal(got.messageId, "mid-1");
  assert.equal(got.correlationId, "cid-1");
  assert.equal(got.contentType, "application/octet-stream");
  assert.equal(got.subject, "subj");
  assert.equal(got.to, "someone");
  assert.equal(got.replyTo, "reply-q");
  assert.equal(got.replyToSessionId, "rs-1");
  assert.equal(got.partitionKey, "pk-1");
  assert.equal(got.timeToLive, 300000);
  const p = got.applicationProperties;
  assert.equal(p.str, "text");
  assert.equal(p.int, 42);
  assert.equal(p.neg, -7);
  assert.equal(p.float, 1.5);
  assert.equal(p.bool, true);
  assert.equal(new Date(p.when).getTime(), when.getTime());
  assert.equal(p.cloudEvents_type, "com.example.created");
  assert.equal(seq(got), 1);
  assert.ok(got.enqueuedTimeUtc instanceof Date);
  await receiver.completeMessage(got);
};

async function main() {
  const name = process.argv[2];
  const run = cases[name];
  if (!run) throw new Error(`unknown case ${name}`);
  const client = new ServiceBusClient(CONN);
  try {
    await run(client);
  } finally {
    await client.close();
  }
  console.log(`PASS ${name}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
