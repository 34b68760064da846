//! Receiving and settling: locks, deliveries, settlement, renewal, deferral, peeking and
//! dead-lettering.

use super::*;

impl Broker {
    /// Takes the next available message for a receive link and locks it (not yet counted as a
    /// delivery until [`Broker::confirm_delivery`]).
    pub fn acquire(
        &self,
        source: &Source,
        link: u64,
        session: Option<&str>,
        receive_and_delete: bool,
    ) -> Acquired {
        let now = now_ms();
        let mut state = self.lock();
        let Some(queue) = state.queues.get_mut(&source.key) else {
            return Acquired::Empty;
        };
        if let Some(id) = session
            && !queue.session_held_by(id, link, now)
        {
            return Acquired::SessionLost;
        }
        let Some(seq) = queue.next_available(source.sub, session, now) else {
            return Acquired::Empty;
        };
        let until_ms = if session.is_some() {
            i64::MAX
        } else {
            now.saturating_add(duration_ms(queue.props.lock_duration))
        };
        let lock = Lock {
            token: new_token(),
            until_ms,
            owner: LockOwner::Link(link),
            delivered: false,
        };
        let Some(message) = queue.lock(source.sub, seq, lock) else {
            return Acquired::Empty;
        };
        tracing::trace!(entity = %source.key, seq, link, "acquired");
        let wire = message.to_wire(Some(&lock), !receive_and_delete);
        state.locks.insert(
            lock.token,
            LockRef {
                key: source.key.clone(),
                sub: source.sub,
                seq,
            },
        );
        Acquired::Message {
            token: lock.token,
            seq,
            message: Box::new(wire),
        }
    }

    /// Whether a message with a lower sequence number than `seq` is available to the receiver.
    pub fn available_before(&self, source: &Source, session: Option<&str>, seq: i64) -> bool {
        let now = now_ms();
        let state = self.lock();
        state
            .queues
            .get(&source.key)
            .and_then(|q| q.next_available(source.sub, session, now))
            .is_some_and(|first| first < seq)
    }

    /// The message taken by [`Broker::acquire`] reached the client.
    pub fn confirm_delivery(&self, token: &[u8; 16]) {
        let mut state = self.lock();
        if let Some(message) = state.locked_message(token)
            && let Some(lock) = &mut message.lock
        {
            lock.delivered = true;
        }
    }

    /// Undoes [`Broker::acquire`] when the link had no credit: no delivery happened.
    pub fn release_unsent(&self, token: &[u8; 16]) {
        let mut state = self.lock();
        if let Some(lock) = state.locks.remove(token)
            && let Some(queue) = state.queues.get_mut(&lock.key)
        {
            queue.release(lock.sub, lock.seq, Release::Uncounted);
        }
        drop(state);
        self.notify();
    }

    /// Settles a locked message (link disposition or `update-disposition`).
    ///
    /// `link` is the receive link settling it, or `None` for the management node.
    pub fn settle(
        &self,
        token: &[u8; 16],
        link: Option<u64>,
        disposition: Disposition,
    ) -> Result<(), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        tracing::trace!(?disposition, ?link, "settle");
        if matches!(disposition, Disposition::DeadLetter { .. })
            && let Some(lock) = state.locks.get(token)
            && state.refused_dead_letters.contains(&lock.key)
        {
            // The lock stays: the message is still the receiver's, as after any failed
            // disposition.
            return Err(OpError::server_busy(format!(
                "dead-lettering on '{}' is refused (a fault injected by a test)",
                lock.key
            )));
        }
        let result = state.settle(token, link, disposition, now);
        drop(state);
        self.notify();
        result
    }

    /// Fault injection: while `refuse` is on, dead-lettering on the queue or subscription `path`
    /// fails with `com.microsoft:server-busy` and the message keeps its lock.
    pub fn refuse_dead_letters(&self, path: &str, refuse: bool) {
        let key = entity_key(path);
        let mut state = self.lock();
        if refuse {
            state.refused_dead_letters.insert(key);
        } else {
            state.refused_dead_letters.remove(&key);
        }
    }

    /// `renew-lock`: extends each lock by the entity's lock duration.
    pub fn renew_locks(&self, tokens: &[[u8; 16]]) -> Result<Vec<i64>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let mut expirations = Vec::with_capacity(tokens.len());
        for token in tokens {
            let lock_ref = state
                .locks
                .get(token)
                .cloned()
                .ok_or_else(OpError::lock_lost)?;
            let queue = state
                .queues
                .get_mut(&lock_ref.key)
                .ok_or_else(OpError::lock_lost)?;
            let duration = duration_ms(queue.props.lock_duration);
            let message = queue
                .store_mut(lock_ref.sub)
                .get_mut(&lock_ref.seq)
                .ok_or_else(OpError::lock_lost)?;
            let lock = message
                .lock
                .as_mut()
                .filter(|l| l.token == *token && l.until_ms > now)
                .ok_or_else(OpError::lock_lost)?;
            if lock.until_ms == i64::MAX {
                return Err(OpError::not_allowed(
                    "Message locks of session messages are renewed with the session lock.",
                ));
            }
            lock.until_ms = now + duration;
            expirations.push(lock.until_ms);
        }
        Ok(expirations)
    }

    /// `receive-by-sequence-number` for deferred messages.
    pub fn receive_deferred(
        &self,
        source: &Source,
        seqs: &[i64],
        receive_and_delete: bool,
        session: Option<&str>,
    ) -> Result<Vec<LockedBytes>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        for &seq in seqs {
            let ok = queue.store(source.sub).get(&seq).is_some_and(|m| {
                m.state == MessageState::Deferred
                    && m.lock.is_none()
                    && session.is_none_or(|id| m.session_id.as_deref() == Some(id))
            });
            if !ok {
                return Err(OpError::message_not_found(seq));
            }
        }
        let until_ms = now.saturating_add(duration_ms(queue.props.lock_duration));
        let mut out = Vec::with_capacity(seqs.len());
        let mut new_locks = Vec::new();
        for &seq in seqs {
            let lock = Lock {
                token: new_token(),
                until_ms,
                owner: LockOwner::Management,
                delivered: true,
            };
            if receive_and_delete {
                if let Some(message) = queue.remove(source.sub, seq) {
                    out.push((
                        lock.token,
                        encode(message.to_wire(Some(&lock), !receive_and_delete)),
                    ));
                }
            } else if let Some(message) = queue.lock(source.sub, seq, lock) {
                out.push((
                    lock.token,
                    encode(message.to_wire(Some(&lock), !receive_and_delete)),
                ));
                new_locks.push((lock.token, seq));
            }
        }
        for (token, seq) in new_locks {
            state.locks.insert(
                token,
                LockRef {
                    key: source.key.clone(),
                    sub: source.sub,
                    seq,
                },
            );
        }
        drop(state);
        self.notify();
        Ok(out)
    }

    /// `peek-message`: messages from `from` on, in sequence order, whatever their state.
    pub fn peek(
        &self,
        source: &Source,
        from: i64,
        count: usize,
        session: Option<&str>,
    ) -> Vec<Vec<u8>> {
        let state = self.lock();
        let Some(queue) = state.queues.get(&source.key) else {
            return Vec::new();
        };
        queue
            .store(source.sub)
            .range(from..)
            .map(|(_, m)| m)
            .filter(|m| session.is_none_or(|id| m.session_id.as_deref() == Some(id)))
            .take(count)
            .map(|m| encode(m.to_wire(None, false)))
            .collect()
    }
}

impl State {
    pub(super) fn locked_message(&mut self, token: &[u8; 16]) -> Option<&mut StoredMessage> {
        let lock_ref = self.locks.get(token)?.clone();
        self.queues
            .get_mut(&lock_ref.key)?
            .store_mut(lock_ref.sub)
            .get_mut(&lock_ref.seq)
    }

    /// Moves a message (already removed from its queue) to the dead-letter queue, or to the
    /// entity named by ForwardDeadLetteredMessagesTo.
    pub(super) fn dead_letter(
        &mut self,
        key: &str,
        mut message: StoredMessage,
        reason: Option<String>,
        description: Option<String>,
        now: i64,
        limits: &Limits,
    ) {
        message.lock = None;
        message.state = MessageState::Active;
        message.scheduled_ms = None;
        message.expires_ms = None;
        let mut props = Vec::new();
        if let Some(reason) = reason {
            props.push((
                DEAD_LETTER_REASON,
                fe2o3_amqp_types::primitives::Value::String(reason),
            ));
        }
        if let Some(description) = description {
            props.push((
                DEAD_LETTER_DESCRIPTION,
                fe2o3_amqp_types::primitives::Value::String(description),
            ));
        }
        message.modify_properties(props);
        let Some(queue) = self.queues.get(key) else {
            return;
        };
        if let Some(forward) = queue.props.forward_dead_lettered_messages_to.clone()
            && let Some(target) = self.target_of(&forward)
        {
            let mut forwarded = message.clone();
            forwarded.dead_letter_source = Some(queue.path.clone());
            match self.deliver(&target, forwarded, 1, now, limits) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(entity = key, error = %e.description, "dead-letter forwarding failed; keeping the message in the dead-letter queue")
                }
            }
        }
        if let Some(queue) = self.queues.get_mut(key) {
            queue.insert(SubQueue::DeadLetter, message);
        }
    }

    /// Counted release; dead-letters the message when it ran out of delivery attempts.
    pub(super) fn release_counted(&mut self, key: &str, sub: SubQueue, seq: i64, now: i64) {
        let limits = self.limits;
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let max = queue.props.max_delivery_count;
        if let Some(message) = queue.release(sub, seq, Release::Counted) {
            self.dead_letter(
                key,
                message,
                Some("MaxDeliveryCountExceeded".into()),
                Some(format!(
                    "Message could not be consumed after {max} delivery attempts."
                )),
                now,
                &limits,
            );
        }
    }

    pub(super) fn settle(
        &mut self,
        token: &[u8; 16],
        link: Option<u64>,
        disposition: Disposition,
        now: i64,
    ) -> Result<(), OpError> {
        let lock_ref = self
            .locks
            .get(token)
            .cloned()
            .ok_or_else(OpError::lock_lost)?;
        let queue = self
            .queues
            .get_mut(&lock_ref.key)
            .ok_or_else(OpError::lock_lost)?;
        let message = queue
            .store(lock_ref.sub)
            .get(&lock_ref.seq)
            .ok_or_else(OpError::lock_lost)?;
        let lock = message
            .lock
            .filter(|l| l.token == *token && l.until_ms > now)
            .ok_or_else(OpError::lock_lost)?;
        if lock.until_ms == i64::MAX {
            // Session message: valid only while the session lock is held (by this link).
            let id = message.session_id.clone().unwrap_or_default();
            let held = match (link, lock.owner) {
                (Some(l), _) => queue.session_held_by(&id, l, now),
                (None, LockOwner::Link(l)) => queue.session_held_by(&id, l, now),
                (None, LockOwner::Management) => true,
            };
            if !held {
                return Err(OpError::session_lock_lost(&id));
            }
        }
        self.locks.remove(token);
        let limits = self.limits;
        let key = lock_ref.key.clone();
        let (sub, seq) = (lock_ref.sub, lock_ref.seq);
        let Some(queue) = self.queues.get_mut(&key) else {
            return Err(OpError::lock_lost());
        };
        match disposition {
            Disposition::Complete => {
                queue.remove(sub, seq);
            }
            Disposition::Release => {
                queue.release(sub, seq, Release::Uncounted);
            }
            Disposition::Abandon(props) => {
                if let Some(m) = queue.store_mut(sub).get_mut(&seq) {
                    m.modify_properties(props.iter().map(|(k, v)| (k.as_str(), v.clone())));
                }
                self.release_counted(&key, sub, seq, now);
            }
            Disposition::Defer(props) => {
                if let Some(m) = queue.store_mut(sub).get_mut(&seq) {
                    m.modify_properties(props.iter().map(|(k, v)| (k.as_str(), v.clone())));
                    m.lock = None;
                    m.state = MessageState::Deferred;
                }
            }
            Disposition::DeadLetter {
                reason,
                description,
                properties,
            } => {
                if let Some(mut m) = queue.remove(sub, seq) {
                    m.modify_properties(properties.iter().map(|(k, v)| (k.as_str(), v.clone())));
                    if sub == SubQueue::DeadLetter {
                        // Dead-lettering from the dead-letter queue leaves it there.
                        m.lock = None;
                        queue.insert(sub, m);
                    } else {
                        self.dead_letter(&key, m, reason, description, now, &limits);
                    }
                }
            }
        }
        Ok(())
    }
}
