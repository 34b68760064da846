//! Session locks and session state.

use super::*;

impl Broker {
    /// Locks a session for a receive link: the named one, or the next one with messages.
    pub fn accept_session(
        &self,
        source: &Source,
        requested: Option<&str>,
        link: u64,
    ) -> Result<(String, i64), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        let id = match requested {
            Some(id) if queue.session_locked(id, now) => {
                return Err(OpError::session_cannot_be_locked(id));
            }
            Some(id) => id.to_string(),
            None => queue
                .next_free_session(now)
                .ok_or_else(OpError::no_session_available)?,
        };
        let until = now.saturating_add(duration_ms(queue.props.lock_duration));
        queue.lock_session(&id, link, until);
        Ok((id, until))
    }

    /// `renew-session-lock`.
    pub fn renew_session(&self, source: &Source, id: &str) -> Result<i64, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        let duration = duration_ms(queue.props.lock_duration);
        let info = queue.live_session(id, now)?;
        let until = now.saturating_add(duration);
        if let Some(holder) = &mut info.holder {
            holder.until_ms = until;
        }
        Ok(until)
    }

    /// `get-session-state`.
    pub fn session_state(&self, source: &Source, id: &str) -> Result<Option<Vec<u8>>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        Ok(queue.live_session(id, now)?.state.clone())
    }

    /// `set-session-state` (`None` clears it).
    pub fn set_session_state(
        &self,
        source: &Source,
        id: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        queue.live_session(id, now)?.state = value;
        Ok(())
    }

    /// A receive link went away: its session locks are released at once and the session messages
    /// it held count as abandoned. Plain peek-lock locks stay until they expire.
    pub fn link_closed(&self, link: u64) {
        let now = now_ms();
        let mut state = self.lock();
        let keys: Vec<String> = state.queues.keys().cloned().collect();
        for key in keys {
            let mut to_release = Vec::new();
            if let Some(queue) = state.queues.get_mut(&key) {
                for info in queue.sessions.values_mut() {
                    if info.holder.is_some_and(|h| h.link == link) {
                        info.holder = None;
                    }
                }
                for (sub, seq, token) in queue.locked_by(LockOwner::Link(link)) {
                    let message = queue.store(sub).get(&seq);
                    let undelivered = message.and_then(|m| m.lock).is_some_and(|l| !l.delivered);
                    let in_session =
                        message.is_some_and(|m| m.lock.is_some_and(|l| l.until_ms == i64::MAX));
                    if undelivered || in_session {
                        to_release.push((sub, seq, token));
                    }
                }
            }
            for (sub, seq, token) in to_release {
                state.locks.remove(&token);
                state.release_counted(&key, sub, seq, now);
            }
        }
        drop(state);
        self.notify();
    }
}
