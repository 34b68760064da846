//! [`DeadLetters`] on `<topic>.<group>.dlq` topics.
//!
//! A Kafka topic is a log: records cannot be taken out of it. What has been redriven or purged is
//! marked instead by the committed offsets of a cursor group, `busway-dlq-cursor.<dlq topic>`:
//! the queue is what lies between the cursor and the end of the log. Redrive sends records to
//! the group's first retry tier (due at once), so only that group sees them again, with their
//! attempt count reset.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busway_core::{DeadLetter, DeadLetterMetadata, DeadLetterQueue, DeadLetters, Error, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::broker::KafkaBroker;
use crate::codec::{DUE, InRecord};
use crate::config::KafkaConfig;
use crate::error::classify;
use crate::names;

/// One partition of a DLQ topic: where the queue starts and ends.
struct Span {
    partition: i32,
    cursor: i64,
    high: i64,
}

impl Span {
    fn depth(&self) -> u64 {
        u64::try_from(self.high - self.cursor).unwrap_or(0)
    }
}

/// A blocking reader of one DLQ topic, positioned by its cursor group.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    timeout: Duration,
}

impl Reader {
    fn new(config: &KafkaConfig, topic: &str) -> Result<Self> {
        let consumer = config
            .plain_consumer_config(&names::dlq_cursor_group(topic))
            .create()
            .map_err(|e| classify("creating a DLQ reader", e))?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            timeout: config.request_timeout,
        })
    }

    /// The queue's span in each partition (none when the topic does not exist).
    fn spans(&self) -> Result<Vec<Span>> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), self.timeout)
            .map_err(|e| classify("reading DLQ metadata", e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, self.timeout)
            .map_err(|e| classify("reading the DLQ cursor", e))?;
        partitions
            .into_iter()
            .map(|p| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, p, self.timeout)
                    .map_err(|e| classify("reading DLQ offsets", e))?;
                let cursor = match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.max(low),
                    _ => low,
                };
                Ok(Span {
                    partition: p,
                    cursor: cursor.min(high),
                    high,
                })
            })
            .collect()
    }

    /// Up to `limit` records from the cursor on, oldest first (merged across partitions by
    /// timestamp, so that each partition contributes a prefix).
    fn read(&self, spans: &[Span], limit: usize) -> Result<Vec<InRecord>> {
        let wanted: Vec<&Span> = spans.iter().filter(|s| s.depth() > 0).collect();
        if wanted.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for s in &wanted {
            let _ = tpl.add_partition_offset(&self.topic, s.partition, Offset::Offset(s.cursor));
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| classify("reading the DLQ", e))?;
        // (partition, end, reached the end, records)
        let mut per_partition: Vec<(i32, i64, bool, VecDeque<InRecord>)> = wanted
            .iter()
            .map(|s| {
                let end = s
                    .cursor
                    .saturating_add(i64::try_from(limit).unwrap_or(i64::MAX))
                    .min(s.high);
                (s.partition, end, false, VecDeque::new())
            })
            .collect();
        let deadline = Instant::now() + self.timeout;
        while per_partition.iter().any(|(_, _, finished, _)| !finished) {
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!("reading the DLQ {}", self.topic)));
            }
            let Some(result) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let record = match result {
                Ok(m) => InRecord::from_borrowed(&m),
                // The log ends before `end` (compacted records): nothing more to read there.
                Err(KafkaError::PartitionEOF(p)) => {
                    if let Some(entry) = per_partition.iter_mut().find(|e| e.0 == p) {
                        entry.2 = true;
                    }
                    continue;
                }
                Err(e) => return Err(classify("reading the DLQ", e)),
            };
            if let Some((_, end, finished, got)) =
                per_partition.iter_mut().find(|e| e.0 == record.partition)
                && got.back().is_none_or(|r| r.offset < record.offset)
            {
                if record.offset + 1 >= *end {
                    *finished = true;
                }
                if record.offset < *end {
                    got.push_back(record);
                }
            }
        }
        let mut merged = Vec::new();
        while merged.len() < limit {
            let oldest = per_partition
                .iter_mut()
                .filter(|e| !e.3.is_empty())
                .min_by_key(|e| (e.3.front().and_then(|r| r.timestamp), e.0));
            match oldest.and_then(|e| e.3.pop_front()) {
                Some(r) => merged.push(r),
                None => break,
            }
        }
        Ok(merged)
    }

    /// Moves the cursor of each partition past `records` (or to `spans`' ends when `None`).
    fn advance(&self, spans: &[Span], records: Option<&[InRecord]>) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for s in spans {
            let to = match records {
                None => Some(s.high),
                Some(records) => records
                    .iter()
                    .filter(|r| r.partition == s.partition)
                    .map(|r| r.offset + 1)
                    .max(),
            };
            if let Some(to) = to.filter(|to| *to > s.cursor) {
                let _ = tpl.add_partition_offset(&self.topic, s.partition, Offset::Offset(to));
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| classify("moving the DLQ cursor", e))
    }
}

/// Runs `f` with a reader of `topic` on a blocking thread.
async fn with_reader<T: Send + 'static>(
    config: &KafkaConfig,
    topic: String,
    f: impl FnOnce(&Reader) -> Result<T> + Send + 'static,
) -> Result<T> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || f(&Reader::new(&config, &topic)?))
        .await
        .map_err(|e| Error::Closed(format!("DLQ task failed: {e}")))?
}

fn to_dead_letter(record: &InRecord) -> Option<DeadLetter> {
    let message = record.decode().ok().or_else(|| record.placeholder())?;
    let metadata = DeadLetterMetadata::from_headers(|k| record.header(k).map(str::to_owned));
    Some(DeadLetter { message, metadata })
}

#[async_trait]
impl DeadLetters for KafkaBroker {
    async fn list(&self) -> Result<Vec<DeadLetterQueue>> {
        let config = self.inner.config.clone();
        let timeout = config.request_timeout;
        let topics = with_reader(&config, "busway-dlq-list".into(), move |r| {
            let metadata = r
                .consumer
                .fetch_metadata(None, timeout)
                .map_err(|e| classify("listing topics", e))?;
            Ok(metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|n| names::parse_dlq(n).is_some())
                .collect::<Vec<_>>())
        })
        .await?;
        let mut queues = Vec::new();
        for dlq in topics {
            let Some((topic, group)) = names::parse_dlq(&dlq) else {
                continue;
            };
            let depth = with_reader(&config, dlq, |r| {
                Ok(r.spans()?.iter().map(Span::depth).sum())
            })
            .await?;
            queues.push(DeadLetterQueue {
                topic,
                group,
                depth,
            });
        }
        Ok(queues)
    }

    async fn peek(&self, topic: &str, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        names::validate_pair(topic, group, self.inner.config.retry_tiers)?;
        let records = with_reader(&self.inner.config, names::dlq(topic, group), move |r| {
            r.read(&r.spans()?, limit)
        })
        .await?;
        Ok(records.iter().filter_map(to_dead_letter).collect())
    }

    async fn redrive(&self, topic: &str, group: &str, limit: Option<usize>) -> Result<usize> {
        names::validate_pair(topic, group, self.inner.config.retry_tiers)?;
        let dlq = names::dlq(topic, group);
        let limit = limit.unwrap_or(usize::MAX);
        let (spans, records) = with_reader(&self.inner.config, dlq.clone(), move |r| {
            let spans = r.spans()?;
            let records = r.read(&spans, limit)?;
            Ok((spans, records))
        })
        .await?;
        if records.is_empty() {
            return Ok(0);
        }
        let target = names::retry(topic, group, 1);
        self.inner
            .topics
            .ensure(&[(target.clone(), self.inner.config.partitions)])
            .await?;
        let now = chrono::Utc::now().timestamp_millis().to_string();
        let out: Vec<_> = records
            .iter()
            .map(|r| {
                // Back as a first delivery: no attempt header, due at once.
                let mut o = r.original();
                o.add_header(DUE, Some(now.as_bytes()));
                o
            })
            .collect();
        self.inner.producer.send_all(&target, out).await?;
        // Only once every redriven record is confirmed does the cursor move past it.
        let moved = records.len();
        with_reader(&self.inner.config, dlq, move |r| {
            r.advance(&spans, Some(&records))
        })
        .await?;
        Ok(moved)
    }

    async fn purge(&self, topic: &str, group: &str) -> Result<usize> {
        names::validate_pair(topic, group, self.inner.config.retry_tiers)?;
        with_reader(&self.inner.config, names::dlq(topic, group), |r| {
            let spans = r.spans()?;
            let depth: u64 = spans.iter().map(Span::depth).sum();
            r.advance(&spans, None)?;
            Ok(usize::try_from(depth).unwrap_or(usize::MAX))
        })
        .await
    }
}
