//! Subscription rules that let busway address one group of a topic.
//!
//! Service Bus has no "send to one subscription": a message sent to a topic goes to every
//! subscription whose rules match. A delayed redelivery (a scheduled copy) and a redriven dead
//! letter must reach only the group they came from, so busway marks them with the application
//! property `busway-group` and gives each of its subscriptions two rules instead of `$Default`:
//!
//! - `busway-broadcast`: SQL `[busway-group] IS NULL`: every ordinary message;
//! - `busway-direct`: a correlation filter `busway-group = <group>`: copies meant for this group.
//!
//! A subscription with rules of its own keeps them; only `busway-direct` is added.

use azservicebus::administration::{CorrelationRuleFilter, RuleFilter, SqlRuleFilter};
use busway_core::Result;
use fe2o3_amqp_types::primitives::{OrderedMap, Value};

use crate::client::SharedClient;
use crate::codec::TARGET_GROUP;
use crate::error::classify;

const DIRECT: &str = "busway-direct";
const BROADCAST: &str = "busway-broadcast";
const DEFAULT: &str = "$Default";

/// Installs the routing rules on `topic`/`group` if they are missing.
pub(crate) async fn ensure(client: &SharedClient, topic: &str, group: &str) -> Result<()> {
    let path = format!("{topic}/Subscriptions/{group}");
    let mut manager = client
        .lock()
        .await
        .create_rule_manager(topic, group)
        .await
        .map_err(|e| classify("opening the rule manager", &path, e))?;
    let result = install(&mut manager, &path, group).await;
    if let Err(e) = manager.dispose().await {
        tracing::debug!(error = %e, "disposing a rule manager");
    }
    result
}

async fn install(
    manager: &mut azservicebus::ServiceBusRuleManager,
    path: &str,
    group: &str,
) -> Result<()> {
    let rules = manager
        .get_rules()
        .await
        .map_err(|e| classify("listing rules", path, e))?;
    if rules.iter().any(|r| r.name == DIRECT) {
        return Ok(());
    }
    let only_default = rules.iter().all(|r| {
        r.name == DEFAULT || r.name == BROADCAST || matches!(r.filters, RuleFilter::True(_))
    });
    let mut properties = OrderedMap::new();
    properties.insert(TARGET_GROUP.to_owned(), Value::String(group.to_owned()));
    let direct = CorrelationRuleFilter::builder()
        .properties(properties)
        .build();
    tolerate(
        manager.create_rule(DIRECT, direct).await,
        "adding busway-direct",
        path,
        EXISTS,
    )?;
    if only_default {
        // Add the broadcast rule before removing the catch-all, so nothing published meanwhile
        // misses the subscription.
        let broadcast = SqlRuleFilter::new(format!("[{TARGET_GROUP}] IS NULL"));
        if !rules.iter().any(|r| r.name == BROADCAST) {
            tolerate(
                manager.create_rule(BROADCAST, broadcast).await,
                "adding busway-broadcast",
                path,
                EXISTS,
            )?;
        }
        for rule in rules.iter().filter(|r| r.name != BROADCAST) {
            tolerate(
                manager.delete_rule(rule.name.clone()).await,
                "removing the catch-all rule",
                path,
                GONE,
            )?;
        }
    } else {
        tracing::info!(
            subscription = path,
            "subscription has rules of its own; busway added only its direct rule"
        );
    }
    Ok(())
}

/// Answers meaning "someone else already did it".
const EXISTS: &[&str] = &[
    "409",
    "conflict",
    "already exists",
    "messagingentityalreadyexists",
];
/// Answers meaning "someone else already removed it".
const GONE: &[&str] = &["404", "not-found", "notfound"];

/// Another member of the group may be installing the same rules at the same time.
fn tolerate(
    result: std::result::Result<(), azure_core::Error>,
    what: &str,
    path: &str,
    benign: &[&str],
) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = format!("{e:?} {e}").to_ascii_lowercase();
            if benign.iter().any(|n| text.contains(n)) {
                Ok(())
            } else {
                Err(classify(what, path, e))
            }
        }
    }
}
