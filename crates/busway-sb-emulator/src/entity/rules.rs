//! Rules of subscriptions at runtime (`add-rule`, `remove-rule`, `enumerate-rules`).

use super::*;

impl Broker {
    /// Rule operations on a subscription.
    pub fn add_rule(&self, source: &Source, rule: RuleConfig) -> Result<(), OpError> {
        let filter = CompiledFilter::compile(&rule.filter).map_err(OpError::bad_request)?;
        let mut state = self.lock();
        let rules = state
            .queues
            .get_mut(&source.key)
            .and_then(|q| q.rules.as_mut())
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        if rules
            .iter()
            .any(|r| r.name.eq_ignore_ascii_case(&rule.name))
        {
            return Err(OpError::conflict(format!(
                "The messaging entity '{}' already exists.",
                rule.name
            )));
        }
        rules.push(Rule {
            name: rule.name,
            source: rule.filter,
            filter,
            created_ms: now_ms(),
        });
        Ok(())
    }

    /// Removes a rule by name.
    pub fn remove_rule(&self, source: &Source, name: &str) -> Result<(), OpError> {
        let mut state = self.lock();
        let rules = state
            .queues
            .get_mut(&source.key)
            .and_then(|q| q.rules.as_mut())
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        let before = rules.len();
        rules.retain(|r| !r.name.eq_ignore_ascii_case(name));
        if rules.len() == before {
            return Err(OpError::new(
                404,
                "amqp:not-found",
                format!("The messaging entity '{name}' could not be found."),
            ));
        }
        Ok(())
    }

    /// The rules of a subscription.
    pub fn rules(&self, source: &Source) -> Result<Vec<(String, RuleFilter, i64)>, OpError> {
        let state = self.lock();
        let rules = state
            .queues
            .get(&source.key)
            .and_then(|q| q.rules.as_ref())
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        Ok(rules
            .iter()
            .map(|r| (r.name.clone(), r.source.clone(), r.created_ms))
            .collect())
    }
}
