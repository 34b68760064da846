//! Messages entering the namespace: sends, schedules, routing to queues, subscriptions and
//! forwarding targets.

use super::*;

impl Broker {
    /// Accepts messages from a sender link (one transfer, possibly a batch).
    pub fn send(&self, target: &Target, messages: Vec<AmqpMessage>) -> Result<(), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        for message in &messages {
            let size = encode(message.clone()).len();
            if size > self.limits.max_message_bytes {
                return Err(OpError::message_too_large(
                    size,
                    self.limits.max_message_bytes,
                ));
            }
        }
        state.check_quota(target, messages.len(), &self.limits)?;
        for message in messages {
            let scheduled = scheduled_time(&message).filter(|t| *t > now);
            state.accept_new(target, message, now, scheduled, true, &self.limits)?;
        }
        drop(state);
        self.notify();
        Ok(())
    }

    /// `schedule-message`: returns the sequence numbers assigned.
    pub fn schedule(
        &self,
        target: &Target,
        messages: Vec<AmqpMessage>,
    ) -> Result<Vec<i64>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        state.check_quota(target, messages.len(), &self.limits)?;
        let mut seqs = Vec::with_capacity(messages.len());
        for message in messages {
            let at = scheduled_time(&message).unwrap_or(now).max(now);
            let seq = state.accept_new(target, message, now, Some(at), false, &self.limits)?;
            seqs.push(seq.unwrap_or_default());
        }
        drop(state);
        self.notify();
        Ok(seqs)
    }

    /// `cancel-scheduled-message`.
    pub fn cancel_scheduled(&self, target: &Target, seqs: &[i64]) -> Result<(), OpError> {
        let mut state = self.lock();
        for &seq in seqs {
            let removed = match target {
                Target::Queue(key) => state.queues.get_mut(key).and_then(|q| {
                    let scheduled = q
                        .active
                        .get(&seq)
                        .is_some_and(|m| m.state == MessageState::Scheduled);
                    scheduled.then(|| q.remove(SubQueue::Active, seq)).flatten()
                }),
                Target::Topic(key) => state
                    .topics
                    .get_mut(key)
                    .and_then(|t| t.scheduled.remove(&seq)),
            };
            if removed.is_none() {
                return Err(OpError::message_not_found(seq));
            }
        }
        drop(state);
        self.notify();
        Ok(())
    }
}

fn scheduled_time(message: &AmqpMessage) -> Option<i64> {
    match annotation(message, SCHEDULED_ENQUEUE_TIME)? {
        fe2o3_amqp_types::primitives::Value::Timestamp(t) => Some(t.milliseconds()),
        _ => None,
    }
}

impl State {
    /// Queues a batch would land in must have room for it (the send is all or nothing).
    pub(super) fn check_quota(
        &self,
        target: &Target,
        count: usize,
        limits: &Limits,
    ) -> Result<(), OpError> {
        let keys: Vec<&String> = match target {
            Target::Queue(key) => vec![key],
            Target::Topic(key) => self
                .topics
                .get(key)
                .map(|t| t.subscriptions.iter().collect())
                .unwrap_or_default(),
        };
        for key in keys {
            if let Some(queue) = self.queues.get(key)
                && (queue.message_count() + count > limits.max_entity_messages
                    || queue.bytes >= limits.max_entity_bytes)
            {
                return Err(OpError::quota_exceeded(&queue.path));
            }
        }
        Ok(())
    }

    /// A message entering the namespace: duplicate detection, sequence number, scheduling.
    /// Returns the sequence number, or `None` when the message was a duplicate.
    pub(super) fn accept_new(
        &mut self,
        target: &Target,
        mut message: AmqpMessage,
        now: i64,
        scheduled_ms: Option<i64>,
        deduplicate: bool,
        limits: &Limits,
    ) -> Result<Option<i64>, OpError> {
        let key = match target {
            Target::Queue(k) | Target::Topic(k) => k,
        };
        let message_id = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_string);
        let side = self
            .send_sides
            .get_mut(key)
            .ok_or_else(|| OpError::entity_not_found(key))?;
        if deduplicate
            && let Some(id) = &message_id
            && !side.dedup.admit(id, now)
        {
            tracing::debug!(entity = %key, message_id = %id, "duplicate message dropped");
            return Ok(None);
        }
        if let Target::Queue(k) = target
            && let Some(queue) = self.queues.get(k)
        {
            let session = message
                .properties
                .as_ref()
                .and_then(|p| p.group_id.as_ref());
            if queue.props.requires_session && session.is_none() {
                return Err(OpError::not_allowed(format!(
                    "The SessionId was not set on a message, and it cannot be sent to the entity '{}'. Entities that have session support enabled can only receive messages that have a non-null SessionId.",
                    queue.path
                )));
            }
        }
        if message_id.is_none() {
            // Service Bus gives a message sent without MessageId one of its own (a GUID without
            // dashes); receivers and the official SDKs rely on every message having one.
            message
                .properties
                .get_or_insert_with(Default::default)
                .message_id = Some(MessageId::String(uuid::Uuid::new_v4().simple().to_string()));
        }
        let seq = side.take_seq();
        let size = encode(message.clone()).len();
        let stored = StoredMessage {
            seq,
            enqueue_seq: seq,
            session_id: message.properties.as_ref().and_then(|p| p.group_id.clone()),
            enqueued_ms: scheduled_ms.unwrap_or(now),
            state: if scheduled_ms.is_some() {
                MessageState::Scheduled
            } else {
                MessageState::Active
            },
            scheduled_ms,
            expires_ms: None,
            delivery_count: 0,
            lock: None,
            size,
            dead_letter_source: None,
            message,
        };
        match target {
            Target::Topic(topic) if scheduled_ms.is_some() => {
                if let Some(t) = self.topics.get_mut(topic) {
                    t.scheduled.insert(seq, stored);
                }
            }
            _ => self.deliver(target, stored, 0, now, limits)?,
        }
        Ok(Some(seq))
    }

    /// Routes a sequenced message into queues: directly, by fan-out, or by forwarding.
    pub(super) fn deliver(
        &mut self,
        target: &Target,
        mut message: StoredMessage,
        hops: u8,
        now: i64,
        limits: &Limits,
    ) -> Result<(), OpError> {
        if hops > 0 {
            // A forwarded message is a new message in its destination.
            let key = match target {
                Target::Queue(k) | Target::Topic(k) => k,
            };
            if let Some(side) = self.send_sides.get_mut(key) {
                message.seq = side.take_seq();
            }
        }
        match target {
            Target::Queue(key) => self.deliver_to_queue(key, message, hops, now, limits),
            Target::Topic(key) => {
                let Some(topic) = self.topics.get(key) else {
                    return Err(OpError::entity_not_found(key));
                };
                if let Some(ttl) = topic.default_ttl {
                    let limit = message.enqueued_ms.saturating_add(duration_ms(ttl));
                    message.expires_ms = Some(message.expires_ms.map_or(limit, |e| e.min(limit)));
                }
                let matching: Vec<String> = topic
                    .subscriptions
                    .iter()
                    .filter(|sub| {
                        self.queues.get(*sub).is_some_and(|q| {
                            q.rules.as_ref().is_some_and(|rules| {
                                rules.iter().any(|r| r.filter.matches(&message.message))
                            })
                        })
                    })
                    .cloned()
                    .collect();
                for sub in matching {
                    self.deliver_to_queue(&sub, message.clone(), hops, now, limits)?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn deliver_to_queue(
        &mut self,
        key: &str,
        mut message: StoredMessage,
        hops: u8,
        now: i64,
        limits: &Limits,
    ) -> Result<(), OpError> {
        let queue = self
            .queues
            .get(key)
            .ok_or_else(|| OpError::entity_not_found(key))?;
        if let Some(forward) = queue.props.forward_to.clone()
            && hops < MAX_FORWARD_HOPS
        {
            let target = self
                .target_of(&forward)
                .ok_or_else(|| OpError::entity_not_found(&forward))?;
            return self.deliver(&target, message, hops + 1, now, limits);
        }
        if queue.message_count() >= limits.max_entity_messages
            || queue.bytes + message.size > limits.max_entity_bytes
        {
            return Err(OpError::quota_exceeded(&queue.path));
        }
        // TTL: the shorter of the message's own and the entity default, from enqueue time.
        let mut ttl = duration_ms(queue.props.default_message_ttl);
        if let Some(own) = message.message.header.as_ref().and_then(|h| h.ttl) {
            ttl = ttl.min(i64::from(own));
        }
        let limit = message.enqueued_ms.saturating_add(ttl);
        message.expires_ms = Some(message.expires_ms.map_or(limit, |e| e.min(limit)));
        if let Some(queue) = self.queues.get_mut(key) {
            queue.insert(SubQueue::Active, message);
        }
        Ok(())
    }

    pub(super) fn target_of(&self, name: &str) -> Option<Target> {
        let key = entity_key(name);
        if self.topics.contains_key(&key) {
            Some(Target::Topic(key))
        } else if self.queues.contains_key(&key) {
            Some(Target::Queue(key))
        } else {
            None
        }
    }
}
