//! Scheduled delivery.

use super::common::*;

/// A scheduled message arrives no earlier than its time.
pub async fn scheduled_delivery(h: Harness) {
    let topic = unique("scheduled");
    let rec = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .start(rec.handler())
        .await
        .expect("start");
    let wait = Duration::from_secs(2);
    let at = Utc::now() + chrono::Duration::from_std(wait).expect("small duration");
    let started = Instant::now();
    let m = numbered(1);
    scheduler(&h)
        .schedule(&topic, m.clone(), at)
        .await
        .expect("schedule");
    publish(&h, &topic, numbered(2)).await;
    rec.wait_for(2, h.expect.patience).await;
    stop(c).await;
    let timed = rec.timed();
    assert_ne!(timed[0].1.id(), m.id(), "the scheduled message came first");
    let (arrived, got) = &timed[1];
    assert_eq!(got, &m);
    let after = *arrived - started;
    assert!(
        after + h.expect.timing_tolerance >= wait,
        "arrived after {after:?}, scheduled for {wait:?}"
    );
}

/// Scheduling to a topic no group has joined is refused, or the message reaches a group that
/// joins before it is due; it is never accepted and then silently dropped.
pub async fn scheduled_to_topic_without_group_not_dropped(h: Harness) {
    let topic = unique("schednogroup");
    let m = numbered(1);
    let at = Utc::now() + chrono::Duration::seconds(2);
    match scheduler(&h).schedule(&topic, m.clone(), at).await {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::Unroutable,
            "refuse as unroutable, not with: {e}"
        ),
        Ok(()) => {
            let mut sub = join(&h, &topic, "late").await;
            let d = next_delivery(&mut sub, h.expect.patience).await;
            assert_eq!(
                d.message(),
                &m,
                "the scheduled message was accepted and then lost"
            );
            d.ack().await.expect("ack");
        }
    }
}

fn scheduler(h: &Harness) -> std::sync::Arc<dyn busway_core::Scheduler> {
    h.scheduler
        .clone()
        .expect("the broker reports no Scheduler: skip the scheduling scenarios")
}
