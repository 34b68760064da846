//! The ledgers: append-only files of message numbers, one per line, and what they add up to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::RunError;

/// An append-only ledger file.
///
/// Each record is written with one `write` of a whole line to a file opened for appending, so a
/// process killed with SIGKILL leaves whole lines behind (the kernel keeps what was written;
/// only a machine crash could lose it, which these runs do not cause).
pub struct Ledger {
    path: PathBuf,
    file: tokio::fs::File,
}

impl Ledger {
    /// Opens (creating) the ledger at `path` for appending.
    pub async fn open(path: &Path) -> Result<Self, RunError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|source| ledger_error(path, source))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends numbers, one line each, in one write.
    pub async fn append(&mut self, numbers: &[u64]) -> Result<(), RunError> {
        let mut text = String::with_capacity(numbers.len() * 8);
        for n in numbers {
            text.push_str(&n.to_string());
            text.push('\n');
        }
        // tokio's file hands the write to a blocking thread and returns before it is done; the
        // flush waits for it, so a record is in the kernel before the caller acknowledges.
        self.file
            .write_all(text.as_bytes())
            .await
            .map_err(|source| ledger_error(&self.path, source))?;
        self.file
            .flush()
            .await
            .map_err(|source| ledger_error(&self.path, source))
    }
}

fn ledger_error(path: &Path, source: std::io::Error) -> RunError {
    RunError::Ledger {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a ledger: how often each number appears. A missing file is an empty ledger; a torn or
/// foreign line is skipped.
pub fn read(path: &Path) -> Result<BTreeMap<u64, u32>, RunError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ledger_error(path, source)),
    };
    let mut counts = BTreeMap::new();
    for n in text.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
        *counts.entry(n).or_insert(0) += 1;
    }
    Ok(counts)
}

/// What a run's ledgers add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Messages the broker confirmed.
    pub confirmed: u64,
    /// Distinct confirmed messages the consumer handled.
    pub handled: u64,
    /// Confirmed messages the consumer never handled.
    pub lost: u64,
    /// Handlings beyond the first, summed over messages.
    pub duplicated: u64,
    /// Messages handled that were never confirmed (published, but the confirm was lost).
    pub unconfirmed_handled: u64,
}

impl Tally {
    /// Compares the producer's and the consumer's ledgers.
    pub fn of(sent: &BTreeMap<u64, u32>, handled: &BTreeMap<u64, u32>) -> Self {
        let mut tally = Tally {
            confirmed: sent.len() as u64,
            ..Tally::default()
        };
        for n in sent.keys() {
            match handled.get(n) {
                Some(_) => tally.handled += 1,
                None => tally.lost += 1,
            }
        }
        for (n, times) in handled {
            tally.duplicated += u64::from(times.saturating_sub(1));
            if !sent.contains_key(n) {
                tally.unconfirmed_handled += 1;
            }
        }
        tally
    }

    /// Numbers confirmed and not (yet) handled, at most `limit` of them.
    pub fn missing(
        sent: &BTreeMap<u64, u32>,
        handled: &BTreeMap<u64, u32>,
        limit: usize,
    ) -> Vec<u64> {
        sent.keys()
            .filter(|n| !handled.contains_key(n))
            .take(limit)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_tally_counts_losses_and_duplicates() {
        let dir = std::env::temp_dir().join(format!("busway-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (sent_path, got_path) = (dir.join("sent"), dir.join("got"));
        let _ = std::fs::remove_file(&sent_path);
        let _ = std::fs::remove_file(&got_path);
        Ledger::open(&sent_path)
            .await
            .unwrap()
            .append(&[1, 2, 3, 4])
            .await
            .unwrap();
        let mut got = Ledger::open(&got_path).await.unwrap();
        got.append(&[1, 2, 2, 4]).await.unwrap();
        got.append(&[4, 9]).await.unwrap();
        // A line torn by a crash is not a record.
        std::fs::write(
            &got_path,
            std::fs::read_to_string(&got_path).unwrap() + "1x",
        )
        .unwrap();
        let tally = Tally::of(&read(&sent_path).unwrap(), &read(&got_path).unwrap());
        assert_eq!(
            tally,
            Tally {
                confirmed: 4,
                handled: 3,
                lost: 1,
                duplicated: 2,
                unconfirmed_handled: 1,
            }
        );
        assert_eq!(
            Tally::missing(&read(&sent_path).unwrap(), &read(&got_path).unwrap(), 10),
            [3]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
