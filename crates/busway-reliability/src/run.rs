//! One fault run: a producer and a consumer process, a fault while messages flow, the tally.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use busway_testkit::proxy::Proxy;
use rand::Rng;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::RunError;
use crate::consume::{ConsumeOptions, consume_until};
use crate::ledger::{Tally, read};
use crate::produce::{ProduceOptions, produce};

/// The fault injected while messages flow.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Nothing: the baseline.
    None,
    /// The consumer process is killed with SIGKILL `kills` times at random points, and started
    /// again each time.
    KillConsumer {
        /// How many times.
        kills: u32,
        /// How long after a kill the replacement starts.
        replace_after: Duration,
    },
    /// The broker is restarted once, a third of the way through, by running `command` (a shell
    /// command that returns once the broker is back).
    RestartBroker {
        /// The shell command.
        command: String,
    },
    /// Every client connection is cut `cuts` times, through a TCP proxy on `listen` in front of
    /// `upstream` (the broker settings in the environment must point at `listen`).
    CutConnections {
        /// Where the processes connect.
        listen: SocketAddr,
        /// The broker.
        upstream: SocketAddr,
        /// How many times.
        cuts: u32,
    },
    /// The handler panics on the first delivery of every `every`-th message.
    Panics {
        /// Which messages panic.
        every: u64,
    },
}

impl Fault {
    /// The fault's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::KillConsumer { .. } => "consumer killed (SIGKILL) and restarted",
            Self::RestartBroker { .. } => "broker restarted mid-stream",
            Self::CutConnections { .. } => "client connections cut",
            Self::Panics { .. } => "handler panics",
        }
    }
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// This crate's binary, started as the producer and the consumer.
    pub binary: PathBuf,
    /// The topic and group (fresh names per run unless the broker needs declared ones).
    pub topic: String,
    /// The group.
    pub group: String,
    /// Messages to send.
    pub messages: u64,
    /// Messages per publish batch.
    pub batch: usize,
    /// Consumer concurrency.
    pub concurrency: usize,
    /// Where ledgers and process logs go (emptied first).
    pub workdir: PathBuf,
    /// The fault.
    pub fault: Fault,
    /// How long the consumer may go without progress before the run gives up.
    pub patience: Duration,
}

/// What a run found.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The fault injected.
    pub fault: String,
    /// The broker, as `BUSWAY_BROKER` named it.
    pub broker: String,
    /// Messages the producer was asked to send.
    pub messages: u64,
    /// How often the fault was injected.
    pub injected: u32,
    /// The ledgers' verdict.
    pub tally: Tally,
    /// Seconds from start to the last message handled.
    pub seconds: f64,
}

/// Runs one fault run to the end.
///
/// On the in-process broker producer and consumer share this process (separate processes would
/// have separate brokers); only the faults that leave the process alive apply there, since a
/// process crash takes the in-process broker and everything in it along, by design.
pub async fn run(options: &RunOptions) -> Result<Outcome, RunError> {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&options.workdir);
    std::fs::create_dir_all(&options.workdir).map_err(|source| RunError::Ledger {
        path: options.workdir.display().to_string(),
        source,
    })?;
    let sent = options.workdir.join("sent.log");
    let handled = options.workdir.join("handled.log");
    let config = busway::BusConfig::load()?;
    if config.broker == busway::BrokerKind::Memory {
        return run_in_process(options, &config, &sent, &handled, started).await;
    }
    let proxy = match &options.fault {
        Fault::CutConnections {
            listen, upstream, ..
        } => Some(Proxy::start_at(*listen, *upstream).await),
        _ => None,
    };
    let panic_every = match options.fault {
        Fault::Panics { every } => Some(every),
        _ => None,
    };
    let mut consumers = 0u32;
    let mut consumer = start_consumer(options, &handled, panic_every, &mut consumers).await?;
    let mut producer = spawn(
        Command::new(&options.binary)
            .arg("produce")
            .args(["--topic", &options.topic])
            .args(["--count", &options.messages.to_string()])
            .args(["--batch", &options.batch.to_string()])
            .arg("--ledger")
            .arg(&sent),
        &options.workdir.join("producer.log"),
        "the producer",
    )?;

    let mut injected = 0u32;
    match &options.fault {
        Fault::None => {}
        Fault::Panics { every } => injected = planned_panics(options.messages, *every),
        Fault::KillConsumer {
            kills,
            replace_after,
        } => {
            for _ in 0..*kills {
                let wait = rand::rng().random_range(300..2500);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                consumer.kill().await.map_err(|source| RunError::Process {
                    what: "killing the consumer".into(),
                    source,
                })?;
                injected += 1;
                tracing::info!(injected, "consumer killed");
                tokio::time::sleep(*replace_after).await;
                consumer = start_consumer(options, &handled, panic_every, &mut consumers).await?;
            }
        }
        Fault::RestartBroker { command } => {
            wait_for_progress(&handled, options.messages / 3, options.patience).await?;
            let status = Command::new("sh")
                .args(["-c", command])
                .status()
                .await
                .map_err(|source| RunError::Process {
                    what: format!("running the restart command `{command}`"),
                    source,
                })?;
            if !status.success() {
                return Err(RunError::Stalled(format!(
                    "the restart command `{command}` failed: {status}"
                )));
            }
            injected += 1;
        }
        Fault::CutConnections { cuts, .. } => {
            for i in 1..=*cuts {
                let target = options.messages * u64::from(i) / u64::from(cuts + 1);
                wait_for_progress(&handled, target, options.patience).await?;
                if let Some(proxy) = &proxy {
                    proxy.cut();
                }
                injected += 1;
                tracing::info!(injected, "connections cut");
            }
        }
    }

    let produced = tokio::time::timeout(options.patience * 4, producer.wait())
        .await
        .map_err(|_| RunError::Stalled("the producer did not finish".into()))?
        .map_err(|source| RunError::Process {
            what: "waiting for the producer".into(),
            source,
        })?;
    if !produced.success() {
        return Err(RunError::Stalled(format!(
            "the producer failed ({produced}); see {}",
            options.workdir.join("producer.log").display()
        )));
    }
    let confirmed = read(&sent)?;
    let mut last_progress = (Instant::now(), 0usize);
    let finished = loop {
        let got = read(&handled)?;
        let missing = Tally::missing(&confirmed, &got, 1);
        if missing.is_empty() {
            break Instant::now();
        }
        if got.len() > last_progress.1 {
            last_progress = (Instant::now(), got.len());
        } else if last_progress.0.elapsed() > options.patience {
            tracing::warn!(
                missing = ?Tally::missing(&confirmed, &got, 10),
                "the consumer made no progress; counting what is missing as lost"
            );
            break last_progress.0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A quiet period so that late duplicates show in the count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(&mut consumer).await?;
    if let Some(proxy) = proxy {
        proxy.down();
    }
    let tally = Tally::of(&confirmed, &read(&handled)?);
    Ok(Outcome {
        fault: options.fault.name().to_owned(),
        broker: std::env::var("BUSWAY_BROKER").unwrap_or_else(|_| "memory".into()),
        messages: options.messages,
        injected,
        tally,
        seconds: (finished - started).as_secs_f64(),
    })
}

async fn run_in_process(
    options: &RunOptions,
    config: &busway::BusConfig,
    sent: &Path,
    handled: &Path,
    started: Instant,
) -> Result<Outcome, RunError> {
    let panic_every = match &options.fault {
        Fault::None => None,
        Fault::Panics { every } => Some(*every),
        other => {
            return Err(RunError::Stalled(format!(
                "`{}` does not apply to the in-process broker: it lives and dies with the process",
                other.name()
            )));
        }
    };
    let bus = busway::Bus::connect(config).await?;
    let consume_options = ConsumeOptions {
        topic: options.topic.clone(),
        group: options.group.clone(),
        ledger: handled.to_owned(),
        panic_every,
        concurrency: options.concurrency,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, subscribed) = tokio::sync::oneshot::channel::<()>();
    let consumer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            consume_until(
                &bus,
                &consume_options,
                move || {
                    let _ = ready.send(());
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
        })
    };
    // The consumer subscribes before anything is published.
    if subscribed.await.is_err() {
        return match consumer.await {
            Ok(Err(e)) => Err(e),
            _ => Err(RunError::Stalled("the consumer did not start".into())),
        };
    }
    produce(
        &bus,
        &ProduceOptions {
            topic: options.topic.clone(),
            start: 0,
            count: options.messages,
            batch: options.batch,
            ledger: sent.to_owned(),
            keys: 16,
        },
    )
    .await?;
    let confirmed = read(sent)?;
    let deadline = Instant::now() + options.patience;
    while !Tally::missing(&confirmed, &read(handled)?, 1).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    consumer
        .await
        .map_err(|e| RunError::Stalled(format!("the consumer task failed: {e}")))??;
    let tally = Tally::of(&confirmed, &read(handled)?);
    Ok(Outcome {
        fault: options.fault.name().to_owned(),
        broker: "memory".into(),
        messages: options.messages,
        injected: panic_every.map_or(0, |every| planned_panics(options.messages, every)),
        tally,
        seconds: (finished - started).as_secs_f64(),
    })
}

/// How many of the messages numbered `0..messages` panic on their first delivery when every
/// `every`-th does (the consumer's rule: `n % every == 0`).
fn planned_panics(messages: u64, every: u64) -> u32 {
    u32::try_from(messages.div_ceil(every.max(1))).unwrap_or(u32::MAX)
}

/// Starts a consumer process and waits until it has subscribed.
async fn start_consumer(
    options: &RunOptions,
    handled: &Path,
    panic_every: Option<u64>,
    started: &mut u32,
) -> Result<Child, RunError> {
    *started += 1;
    let mut command = Command::new(&options.binary);
    command
        .arg("consume")
        .args(["--topic", &options.topic])
        .args(["--group", &options.group])
        .args(["--concurrency", &options.concurrency.to_string()])
        .arg("--ledger")
        .arg(handled);
    if let Some(every) = panic_every {
        command.args(["--panic-every", &every.to_string()]);
    }
    let log = options.workdir.join(format!("consumer-{started}.log"));
    let mut child = spawn(command.stdout(Stdio::piped()), &log, "a consumer")?;
    let Some(stdout) = child.stdout.take() else {
        return Err(RunError::Stalled("the consumer has no stdout".into()));
    };
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(options.patience, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "ready" {
                return true;
            }
        }
        false
    })
    .await;
    if ready != Ok(true) {
        let _ = child.kill().await;
        return Err(RunError::Stalled(format!(
            "a consumer did not start; see {}",
            log.display()
        )));
    }
    // Keep draining its stdout so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

fn spawn(command: &mut Command, log: &Path, what: &str) -> Result<Child, RunError> {
    let error = |source| RunError::Process {
        what: format!("starting {what}"),
        source,
    };
    let log = std::fs::File::create(log).map_err(error)?;
    command
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(error)
}

/// Waits until the consumer's ledger holds at least `target` distinct numbers.
async fn wait_for_progress(
    handled: &Path,
    target: u64,
    patience: Duration,
) -> Result<(), RunError> {
    let deadline = Instant::now() + patience * 4;
    while (read(handled)?.len() as u64) < target {
        if Instant::now() > deadline {
            return Err(RunError::Stalled(format!(
                "the consumer did not reach {target} messages"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Stops a consumer gracefully (SIGTERM), killing it if it does not stop in time.
async fn stop(consumer: &mut Child) -> Result<(), RunError> {
    if let Some(pid) = consumer.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(30), consumer.wait())
        .await
        .is_err()
    {
        consumer.kill().await.map_err(|source| RunError::Process {
            what: "killing a consumer that would not stop".into(),
            source,
        })?;
    }
    Ok(())
}

/// The fault runs' results as Markdown table rows: fault, messages, injected, lost, duplicated.
pub fn markdown_row(outcome: &Outcome) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {:.0} s |",
        outcome.broker,
        outcome.fault,
        outcome.messages,
        outcome.injected,
        outcome.tally.lost,
        outcome.tally.duplicated,
        outcome.seconds
    )
}
