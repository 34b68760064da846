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
//! A rule of the subscription's own must exclude copies addressed to other groups, i.e. be a
//! SQL filter of the form `(<filter>) AND [busway-group] IS NULL`; busway never rewrites a
//! user's rule, it refuses the subscription and says how to fix the rule. Catch-all rules
//! (`$Default`, `1=1`, a true filter) are replaced by `busway-broadcast`.
//!
//! Without Manage rights (`manage_rules = false`) the rules are only checked: when they are not
//! in place, subscribing and redriving fail with a configuration error naming the setting.

use azservicebus::ServiceBusRuleManager;
use azservicebus::administration::{
    CorrelationRuleFilter, RuleFilter, RuleProperties, SqlRuleFilter,
};
use busway_core::{Error, Result};
use fe2o3_amqp_types::primitives::{OrderedMap, Value};

use crate::codec::TARGET_GROUP;
use crate::connection::{CLOSE_TIMEOUT, Connection};
use crate::error::classify;

const DIRECT: &str = "busway-direct";
const BROADCAST: &str = "busway-broadcast";
const DEFAULT: &str = "$Default";
/// The setting every routing error names.
const SETTING: &str = "servicebus.manage_rules";

/// What a subscription's rules need so that copies addressed to `group` reach it alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    add_direct: bool,
    add_broadcast: bool,
    remove: Vec<String>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.add_direct && !self.add_broadcast && self.remove.is_empty()
    }

    fn describe(&self, group: &str) -> String {
        let mut steps = Vec::new();
        if self.add_direct {
            steps.push(format!(
                "add rule `{DIRECT}` (correlation filter, property {TARGET_GROUP} = '{group}')"
            ));
        }
        if self.add_broadcast {
            steps.push(format!(
                "add rule `{BROADCAST}` (SQL filter `[{TARGET_GROUP}] IS NULL`)"
            ));
        }
        for name in &self.remove {
            steps.push(format!("remove the catch-all rule `{name}`"));
        }
        steps.join("; ")
    }
}

/// Works out what `rules` lack; `Err` names a rule of the user's own that would also take
/// copies addressed to other groups.
pub(crate) fn plan(rules: &[(String, RuleFilter)], group: &str, path: &str) -> Result<Plan> {
    let mut plan = Plan {
        add_direct: true,
        ..Plan::default()
    };
    let mut catch_alls = Vec::new();
    let mut has_broadcast = false;
    for (name, filter) in rules {
        if name == DIRECT {
            if !is_direct_for(filter, group) {
                return Err(Error::config(
                    SETTING,
                    format!(
                        "rule `{DIRECT}` of `{path}` is not the correlation filter {TARGET_GROUP} = '{group}'; remove it so busway can install its own"
                    ),
                ));
            }
            plan.add_direct = false;
        } else if name == BROADCAST {
            has_broadcast = true;
        } else if name == DEFAULT || is_catch_all(filter) {
            catch_alls.push(name.clone());
        } else if !excludes_copies(filter, group) {
            return Err(Error::config(
                SETTING,
                format!(
                    "rule `{name}` of `{path}` would also receive the delayed redeliveries and redriven dead letters busway addresses to other groups; make it a SQL filter of the form `(<your filter>) AND [{TARGET_GROUP}] IS NULL`"
                ),
            ));
        }
    }
    // A catch-all is replaced by the broadcast rule; a subscription filtered by rules of its own
    // keeps its filters and gets no broadcast rule (it would widen them).
    if !catch_alls.is_empty() {
        plan.add_broadcast = !has_broadcast;
        plan.remove = catch_alls;
    }
    Ok(plan)
}

fn is_direct_for(filter: &RuleFilter, group: &str) -> bool {
    match filter {
        RuleFilter::Correlation(c) => correlation_only_for(c, group),
        _ => false,
    }
}

/// A correlation filter matching only copies addressed to `group`.
fn correlation_only_for(filter: &CorrelationRuleFilter, group: &str) -> bool {
    filter.properties.as_ref().is_some_and(|p| {
        p.iter()
            .any(|(k, v)| k == TARGET_GROUP && text(v) == Some(group))
    })
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

fn is_catch_all(filter: &RuleFilter) -> bool {
    match filter {
        RuleFilter::True(_) => true,
        RuleFilter::Sql(sql) => {
            let normal = normalize(&sql.expression);
            normal == "1=1" || normal == "1 = 1" || normal == "true"
        }
        _ => false,
    }
}

/// Whether a rule of the user's own lets no copy addressed to another group through.
pub(crate) fn excludes_copies(filter: &RuleFilter, group: &str) -> bool {
    match filter {
        RuleFilter::False(_) => true,
        RuleFilter::True(_) => false,
        // A correlation filter cannot say "property absent"; it is safe only when it requires
        // this group's address.
        RuleFilter::Correlation(c) => correlation_only_for(c, group),
        RuleFilter::Sql(sql) => sql_excludes_copies(&sql.expression),
    }
}

/// `[busway-group] IS NULL` or `(<anything balanced>) AND [busway-group] IS NULL`: the only
/// shapes accepted, because anything looser (`a OR b AND [busway-group] IS NULL`) may not
/// exclude what it seems to.
fn sql_excludes_copies(expression: &str) -> bool {
    let normal = normalize(expression);
    let guard = format!("[{TARGET_GROUP}] is null");
    if normal == guard {
        return true;
    }
    let Some(rest) = normal.strip_suffix(&format!(" and {guard}")) else {
        return false;
    };
    let rest = rest.trim();
    rest.starts_with('(') && rest.ends_with(')') && outer_parens_enclose_all(rest)
}

/// Lower case, runs of whitespace as one space.
fn normalize(expression: &str) -> String {
    expression
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// Whether the parenthesis opening `text` closes at its very end (quoted text ignored).
fn outer_parens_enclose_all(text: &str) -> bool {
    let mut depth = 0usize;
    let mut quoted = false;
    let last = text.len().saturating_sub(1);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = match depth.checked_sub(1) {
                    Some(d) => d,
                    None => return false,
                };
                if depth == 0 && i != last {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && !quoted
}

/// Makes sure copies addressed to `group` reach `topic`/`group` alone: installs what is
/// missing when `manage` is set, otherwise checks. Errors name the setting and the fix.
pub(crate) async fn ensure(
    connection: &Connection,
    topic: &str,
    group: &str,
    manage: bool,
) -> Result<()> {
    let path = format!("{topic}/Subscriptions/{group}");
    let mut manager = connection
        .open("opening the rule manager", &path, |client| {
            let (topic, group) = (topic.to_owned(), group.to_owned());
            Box::pin(async move { client.create_rule_manager(topic, group).await })
        })
        .await
        .map_err(|e| no_rights(e, &path))?;
    let result = check_and_install(&mut manager, &path, group, manage).await;
    if let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, manager.dispose()).await {
        tracing::debug!(error = %e, "disposing a rule manager");
    }
    result
}

/// An authorisation failure becomes a configuration error naming the setting.
fn no_rights(err: Error, path: &str) -> Error {
    if err.kind() == busway_core::ErrorKind::Auth {
        return Error::config(
            SETTING,
            format!(
                "the routing rules of `{path}` cannot be read or installed with this credential ({err}): give it Manage rights, or install the rules yourself (see the busway-servicebus docs)"
            ),
        );
    }
    err
}

async fn check_and_install(
    manager: &mut ServiceBusRuleManager,
    path: &str,
    group: &str,
    manage: bool,
) -> Result<()> {
    let rules: Vec<RuleProperties> = manager
        .get_rules()
        .await
        .map_err(|e| no_rights(classify("listing rules", path, e), path))?;
    let named: Vec<(String, RuleFilter)> = rules.into_iter().map(|r| (r.name, r.filters)).collect();
    let plan = plan(&named, group, path)?;
    if plan.is_empty() {
        return Ok(());
    }
    if !manage {
        return Err(Error::config(
            SETTING,
            format!(
                "busway's routing rules are not in place on `{path}`, so a delayed redelivery or a redriven dead letter would reach other groups of the topic too. Set {SETTING} = true (needs Manage rights), or: {}",
                plan.describe(group)
            ),
        ));
    }
    if plan.add_direct {
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
    }
    // The broadcast rule goes in before the catch-all goes, so nothing published meanwhile
    // misses the subscription.
    if plan.add_broadcast {
        let broadcast = SqlRuleFilter::new(format!("[{TARGET_GROUP}] IS NULL"));
        tolerate(
            manager.create_rule(BROADCAST, broadcast).await,
            "adding busway-broadcast",
            path,
            EXISTS,
        )?;
    }
    for name in plan.remove {
        tolerate(
            manager.delete_rule(name).await,
            "removing a catch-all rule",
            path,
            GONE,
        )?;
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
                Err(no_rights(classify(what, path, e), path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use azservicebus::administration::{FalseRuleFilter, TrueRuleFilter};

    fn sql(expression: &str) -> RuleFilter {
        RuleFilter::Sql(SqlRuleFilter::new(expression))
    }

    fn correlation(group: &str) -> RuleFilter {
        let mut properties = OrderedMap::new();
        properties.insert(TARGET_GROUP.to_owned(), Value::String(group.to_owned()));
        RuleFilter::Correlation(
            CorrelationRuleFilter::builder()
                .properties(properties)
                .build(),
        )
    }

    fn rules(list: &[(&str, RuleFilter)]) -> Vec<(String, RuleFilter)> {
        list.iter()
            .map(|(n, f)| ((*n).to_owned(), f.clone()))
            .collect()
    }

    #[test]
    fn only_filters_that_exclude_other_groups_copies_are_accepted() {
        for ok in [
            "[busway-group] IS NULL",
            "([tenant] = 'acme') AND [busway-group] IS NULL",
            "( a = 1 OR b = 2 )   and   [BUSWAY-GROUP] is null",
            "(x = ')') AND [busway-group] IS NULL",
        ] {
            assert!(excludes_copies(&sql(ok), "g"), "{ok}");
        }
        for bad in [
            "1=1",
            "[tenant] = 'acme'",
            "a = 1 OR b = 2 AND [busway-group] IS NULL",
            "(a = 1) OR (b = 2) AND [busway-group] IS NULL",
            "[busway-group] IS NULL OR a = 1",
            "(a) AND (b) AND [busway-group] IS NOT NULL",
        ] {
            assert!(!excludes_copies(&sql(bad), "g"), "{bad}");
        }
        assert!(excludes_copies(&correlation("g"), "g"));
        assert!(!excludes_copies(&correlation("other"), "g"));
        assert!(excludes_copies(
            &RuleFilter::False(FalseRuleFilter::new()),
            "g"
        ));
        assert!(!excludes_copies(
            &RuleFilter::True(TrueRuleFilter::new()),
            "g"
        ));
    }

    #[test]
    fn a_fresh_subscription_gets_both_rules_and_loses_its_catch_all() {
        let plan = plan(
            &rules(&[("$Default", RuleFilter::True(TrueRuleFilter::new()))]),
            "g",
            "t/Subscriptions/g",
        )
        .unwrap();
        assert_eq!(
            plan,
            Plan {
                add_direct: true,
                add_broadcast: true,
                remove: vec!["$Default".into()],
            }
        );
        let done = plan_of(&[
            ("busway-broadcast", sql("[busway-group] IS NULL")),
            ("busway-direct", correlation("g")),
        ]);
        assert!(done.is_empty());
    }

    fn plan_of(list: &[(&str, RuleFilter)]) -> Plan {
        plan(&rules(list), "g", "t/Subscriptions/g").unwrap()
    }

    #[test]
    fn rules_of_the_users_own_are_kept_or_refused_never_rewritten() {
        let kept = plan_of(&[(
            "orders-only",
            sql("([type] = 'order') AND [busway-group] IS NULL"),
        )]);
        assert_eq!(
            kept,
            Plan {
                add_direct: true,
                ..Plan::default()
            }
        );
        let err = plan(
            &rules(&[("orders-only", sql("[type] = 'order'"))]),
            "g",
            "t/Subscriptions/g",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("servicebus.manage_rules"), "{text}");
        assert!(text.contains("orders-only"), "{text}");
        assert!(text.contains("AND [busway-group] IS NULL"), "{text}");
        let wrong_direct = plan(
            &rules(&[("busway-direct", correlation("other"))]),
            "g",
            "t/Subscriptions/g",
        );
        assert!(wrong_direct.is_err());
    }
}
