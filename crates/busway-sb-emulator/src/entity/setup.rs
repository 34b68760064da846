//! Building the namespace from its configuration.

use super::*;

impl Broker {
    /// Builds the namespace from its configuration.
    pub fn new(config: &NamespaceConfig, limits: Limits) -> Result<Self, ConfigError> {
        let mut state = State {
            limits,
            ..State::default()
        };
        for queue in &config.queues {
            add_queue(&mut state, queue)?;
        }
        for topic in &config.topics {
            add_topic(&mut state, topic)?;
        }
        // Forwarding targets must exist (Service Bus refuses to create such an entity).
        for queue in state.queues.values() {
            for target in [
                &queue.props.forward_to,
                &queue.props.forward_dead_lettered_messages_to,
            ]
            .into_iter()
            .flatten()
            {
                let key = entity_key(target);
                if !state.queues.contains_key(&key) && !state.topics.contains_key(&key)
                    || key.contains("/subscriptions/")
                {
                    return Err(ConfigError::Entity {
                        name: queue.path.clone(),
                        reason: format!("forwarding target {target:?} is not a queue or topic"),
                    });
                }
            }
        }
        let (changed, _) = watch::channel(0);
        Ok(Self {
            state: Mutex::new(state),
            changed,
            limits,
        })
    }
}

fn add_queue(state: &mut State, queue: &QueueConfig) -> Result<(), ConfigError> {
    let key = entity_key(&queue.name);
    if key.is_empty() || state.queues.contains_key(&key) || state.topics.contains_key(&key) {
        return Err(ConfigError::Entity {
            name: queue.name.clone(),
            reason: "empty or duplicate name".into(),
        });
    }
    state.queues.insert(
        key.clone(),
        QueueEntity::new(queue.name.clone(), queue.properties.clone(), None),
    );
    state
        .send_sides
        .insert(key, SendSide::new(queue.duplicate_detection.clone()));
    Ok(())
}

fn add_topic(state: &mut State, topic: &TopicConfig) -> Result<(), ConfigError> {
    let key = entity_key(&topic.name);
    if key.is_empty() || state.queues.contains_key(&key) || state.topics.contains_key(&key) {
        return Err(ConfigError::Entity {
            name: topic.name.clone(),
            reason: "empty or duplicate name".into(),
        });
    }
    let mut subscriptions = Vec::new();
    for sub in &topic.subscriptions {
        let path = format!("{}/Subscriptions/{}", topic.name, sub.name);
        let sub_key = entity_key(&path);
        let configured = if sub.rules.is_empty() {
            vec![RuleConfig::sql("$Default", "1=1")]
        } else {
            sub.rules.clone()
        };
        let mut rules = Vec::new();
        for rule in configured {
            let filter =
                CompiledFilter::compile(&rule.filter).map_err(|reason| ConfigError::Entity {
                    name: format!("{path} rule {}", rule.name),
                    reason,
                })?;
            rules.push(Rule {
                name: rule.name,
                source: rule.filter,
                filter,
                created_ms: now_ms(),
            });
        }
        if state.queues.contains_key(&sub_key) {
            return Err(ConfigError::Entity {
                name: path,
                reason: "duplicate subscription".into(),
            });
        }
        state.queues.insert(
            sub_key.clone(),
            QueueEntity::new(path, sub.properties.clone(), Some(rules)),
        );
        subscriptions.push(sub_key);
    }
    state.topics.insert(
        key.clone(),
        TopicEntity {
            default_ttl: topic.default_message_ttl,
            subscriptions,
            scheduled: BTreeMap::new(),
        },
    );
    state
        .send_sides
        .insert(key, SendSide::new(topic.duplicate_detection.clone()));
    Ok(())
}
