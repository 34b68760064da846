//! [`DeadLetters`] on `<topic>.<group>.dlq` topics.
//!
//! A Kafka topic is a log: records cannot be taken out of it. What has been redriven or purged is
//! marked instead by the committed offsets of a cursor group, `busway-dlq-cursor.<dlq topic>`:
//! the queue is what lies between the cursor and the end of the log. Redrive sends records to
//! the group's first retry tier (due at once), so only that group sees them again, with their
//! attempt count reset.
//!
//! Redrive pages through the queue: at most [`PAGE_RECORDS`] records or [`PAGE_BYTES`] bytes are
//! read, sent and confirmed, then the cursor moves past them, page after page. Memory stays
//! bounded whatever the queue holds, each page has a request timeout of its own, and a redrive
//! that is stopped half-way (process killed, future dropped) has moved what it moved: run again,
//! it repeats at most the one page whose cursor move it did not see through.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busway_core::{DeadLetter, DeadLetterMetadata, DeadLetterQueue, DeadLetters, Error, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::broker::KafkaBroker;
use crate::codec::{InRecord, add_due_header};
use crate::config::KafkaConfig;
use crate::error::{classify, creating};
use crate::topology;

/// Most records one redrive page reads, sends and confirms before moving the cursor.
pub(crate) const PAGE_RECORDS: usize = 500;
/// Most bytes (keys and values) one redrive page holds; one record larger than this is a page
/// of its own.
pub(crate) const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// One partition of a DLQ topic: where the queue starts and ends.
#[derive(Clone, Copy)]
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
            .plain_consumer_config(&topology::dlq_cursor_group(topic))
            .create()
            .map_err(|e| creating(config, "creating a DLQ reader", e))?;
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

    /// Spans as [`spans`](Self::spans) sees them, but ending no later than `ends` (the ends when
    /// a redrive started: what is dead-lettered meanwhile waits for the next one).
    fn spans_until(&self, ends: &[Span]) -> Result<Vec<Span>> {
        Ok(self
            .spans()?
            .into_iter()
            .filter_map(|s| {
                let end = ends.iter().find(|e| e.partition == s.partition)?.high;
                Some(Span {
                    high: s.high.min(end),
                    cursor: s.cursor.min(end),
                    ..s
                })
            })
            .collect())
    }

    /// Up to `limit` records from the cursor on, oldest first (merged across partitions by
    /// timestamp, so that each partition contributes a prefix), holding about `max_bytes` of
    /// keys and values at most (always at least one record).
    fn read(&self, spans: &[Span], limit: usize, max_bytes: usize) -> Result<Vec<InRecord>> {
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
        let mut bytes = 0usize;
        while per_partition.iter().any(|(_, _, finished, _)| !finished) {
            if bytes >= max_bytes {
                // What each partition read so far is a prefix of it: enough for this call.
                break;
            }
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
                    bytes = bytes.saturating_add(record.size());
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

/// Runs `f` on a blocking thread (librdkafka's calls block).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Closed(format!("DLQ task failed: {e}")))?
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

fn to_dead_letter(record: &InRecord) -> DeadLetter {
    let message = record.decode().unwrap_or_else(|_| record.placeholder());
    let metadata = DeadLetterMetadata::from_headers(|k| record.header(k).map(str::to_owned));
    DeadLetter { message, metadata }
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
                .filter(|n| topology::parse_dlq(n).is_some())
                .collect::<Vec<_>>())
        })
        .await?;
        let mut queues = Vec::new();
        for dlq in topics {
            let Some((topic, group)) = topology::parse_dlq(&dlq) else {
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
        topology::validate_pair(topic, group, self.inner.config.retry_tiers)?;
        let records = with_reader(&self.inner.config, topology::dlq(topic, group), move |r| {
            r.read(&r.spans()?, limit, usize::MAX)
        })
        .await?;
        Ok(records.iter().map(to_dead_letter).collect())
    }

    async fn redrive(&self, topic: &str, group: &str, limit: Option<usize>) -> Result<usize> {
        topology::validate_pair(topic, group, self.inner.config.retry_tiers)?;
        let dlq = topology::dlq(topic, group);
        let limit = limit.unwrap_or(usize::MAX);
        let config = self.inner.config.clone();
        let reader = blocking(move || Reader::new(&config, &dlq).map(Arc::new)).await?;
        let ends = {
            let reader = reader.clone();
            blocking(move || reader.spans()).await?
        };
        let target = topology::retry(topic, group, 1);
        let mut moved = 0;
        while moved < limit {
            let page = (limit - moved).min(PAGE_RECORDS);
            let (spans, records) = {
                let (reader, ends) = (reader.clone(), ends.clone());
                blocking(move || {
                    let spans = reader.spans_until(&ends)?;
                    let records = reader.read(&spans, page, PAGE_BYTES)?;
                    Ok((spans, records))
                })
                .await?
            };
            if records.is_empty() {
                break;
            }
            if moved == 0 {
                self.inner
                    .topics
                    .ensure(&[(target.clone(), self.inner.config.partitions)])
                    .await?;
            }
            let now = chrono::Utc::now();
            let out: Vec<_> = records
                .iter()
                .map(|r| {
                    // Back as a first delivery: no attempt header, due at once.
                    let mut o = r.original();
                    add_due_header(&mut o, now);
                    o
                })
                .collect();
            self.inner.producer.send_all(&target, out).await?;
            // Only once every record of the page is confirmed does the cursor move past it.
            let count = records.len();
            let reader = reader.clone();
            blocking(move || reader.advance(&spans, Some(&records))).await?;
            moved += count;
            tracing::debug!(topic, group, moved, "redrive page sent");
        }
        Ok(moved)
    }

    async fn purge(&self, topic: &str, group: &str) -> Result<usize> {
        topology::validate_pair(topic, group, self.inner.config.retry_tiers)?;
        with_reader(&self.inner.config, topology::dlq(topic, group), |r| {
            let spans = r.spans()?;
            let depth: u64 = spans.iter().map(Span::depth).sum();
            r.advance(&spans, None)?;
            Ok(usize::try_from(depth).unwrap_or(usize::MAX))
        })
        .await
    }
}
