//! Timers: scheduled messages, TTL, lock and session-lock expiry, duplicate-detection history.

use super::*;

impl Broker {
    /// Timers: scheduled messages, TTL, lock and session expiry, duplicate-detection history.
    pub fn housekeeping(&self) {
        let now = now_ms();
        let mut state = self.lock();
        if state.housekeeping(now, &self.limits) {
            drop(state);
            self.notify();
        }
    }
}

impl State {
    pub(super) fn housekeeping(&mut self, now: i64, limits: &Limits) -> bool {
        let mut changed = false;
        // Expired message locks.
        let expired: Vec<([u8; 16], LockRef)> = self
            .locks
            .iter()
            .filter(|(token, r)| {
                self.queues
                    .get(&r.key)
                    .and_then(|q| q.store(r.sub).get(&r.seq))
                    .and_then(|m| m.lock)
                    .is_none_or(|l| l.token != **token || l.until_ms <= now)
            })
            .map(|(t, r)| (*t, r.clone()))
            .collect();
        for (token, lock_ref) in expired {
            self.locks.remove(&token);
            let still_locked = self
                .queues
                .get(&lock_ref.key)
                .and_then(|q| q.store(lock_ref.sub).get(&lock_ref.seq))
                .and_then(|m| m.lock)
                .is_some_and(|l| l.token == token);
            if still_locked {
                self.release_counted(&lock_ref.key, lock_ref.sub, lock_ref.seq, now);
                changed = true;
            }
        }
        let keys: Vec<String> = self.queues.keys().cloned().collect();
        for key in keys {
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            changed |= queue.activate_scheduled(now);
            // Session locks that ran out free the session and its messages.
            let mut held = Vec::new();
            for (id, link) in queue.expire_sessions(now) {
                changed = true;
                held.extend(queue.locked_by(LockOwner::Link(link)).into_iter().filter(
                    |(sub, seq, _)| {
                        queue
                            .store(*sub)
                            .get(seq)
                            .is_some_and(|m| m.session_id.as_deref() == Some(id.as_str()))
                    },
                ));
            }
            for (sub, seq, token) in held {
                self.locks.remove(&token);
                self.release_counted(&key, sub, seq, now);
            }
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            let dead_letter_expired = queue.props.dead_lettering_on_message_expiration;
            let expired = queue.take_expired(now);
            for message in expired {
                changed = true;
                if dead_letter_expired {
                    self.dead_letter(
                        &key,
                        message,
                        Some("TTLExpiredException".into()),
                        Some("The message expired and was dead lettered.".into()),
                        now,
                        limits,
                    );
                }
            }
        }
        // Scheduled messages of topics fan out when due.
        let due: Vec<(String, StoredMessage)> = self
            .topics
            .iter_mut()
            .flat_map(|(key, topic)| {
                let ready: Vec<i64> = topic
                    .scheduled
                    .values()
                    .filter(|m| m.scheduled_ms.is_some_and(|t| t <= now))
                    .map(|m| m.seq)
                    .collect();
                ready
                    .into_iter()
                    .filter_map(|seq| topic.scheduled.remove(&seq))
                    .map(|m| (key.clone(), m))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (key, mut message) in due {
            changed = true;
            message.state = MessageState::Active;
            if let Err(e) = self.deliver(&Target::Topic(key.clone()), message, 0, now, limits) {
                tracing::warn!(topic = %key, error = %e.description, "scheduled message dropped");
            }
        }
        for side in self.send_sides.values_mut() {
            side.dedup.purge(now);
        }
        changed
    }
}
