//! `busway-reliability`: fault runs against real processes and brokers. The broker comes from
//! the environment (`BUSWAY_BROKER`, `BUSWAY_<BROKER>__*`), as for any busway service.
//!
//! ```text
//! busway-reliability run --fault kill-consumer --messages 100000 --workdir /tmp/run
//! busway-reliability produce --topic t --count 1000 --ledger sent.log     (started by `run`)
//! busway-reliability consume --topic t --group g --ledger handled.log     (started by `run`)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use busway::{Bus, BusConfig};
use busway_reliability::RunError;
use busway_reliability::consume::{ConsumeOptions, consume};
use busway_reliability::produce::{ProduceOptions, produce};
use busway_reliability::run::{Fault, RunOptions, markdown_row, run};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    version,
    about = "Fault runs: count what a crash, a cut or a restart loses or repeats"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish numbered messages, recording each confirmed one.
    Produce {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 16)]
        keys: u64,
        #[arg(long)]
        ledger: PathBuf,
    },
    /// Consume numbered messages, recording each one handled, until SIGTERM.
    Consume {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        ledger: PathBuf,
        #[arg(long)]
        panic_every: Option<u64>,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// One fault run: producer and consumer processes, a fault, the tally (JSON on stdout).
    Run {
        #[arg(long, value_enum)]
        fault: FaultKind,
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Default: a fresh name.
        #[arg(long)]
        topic: Option<String>,
        /// Default: named after the topic (a Kafka consumer group spans topics, so runs must not
        /// share one).
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        workdir: PathBuf,
        /// kill-consumer: how many kills.
        #[arg(long, default_value_t = 5)]
        kills: u32,
        /// kill-consumer: seconds between a kill and the replacement consumer's start (0: at
        /// once). Past the broker's session timeout, the killed member has left the group when
        /// the replacement joins (tansu 0.6 can leave a group with no working leader when a
        /// member joins while a killed one is still in it: see RELIABILITY.md).
        #[arg(long, default_value_t = 0)]
        replace_after: u64,
        /// restart-broker: a shell command that restarts the broker and returns once it is back.
        #[arg(long)]
        restart_command: Option<String>,
        /// cut-connections: where the processes connect (the broker settings must point here).
        #[arg(long)]
        proxy_listen: Option<SocketAddr>,
        /// cut-connections: the broker's address.
        #[arg(long)]
        proxy_upstream: Option<SocketAddr>,
        #[arg(long, default_value_t = 3)]
        cuts: u32,
        /// panics: every n-th message panics on its first delivery.
        #[arg(long, default_value_t = 100)]
        panic_every: u64,
        /// Seconds without progress before the run gives up.
        #[arg(long, default_value_t = 120)]
        patience: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FaultKind {
    None,
    KillConsumer,
    RestartBroker,
    CutConnections,
    Panics,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match execute(Cli::parse().command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busway-reliability: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn connect() -> Result<Bus, RunError> {
    Ok(Bus::connect(&BusConfig::load()?).await?)
}

async fn execute(command: Command) -> Result<(), RunError> {
    match command {
        Command::Produce {
            topic,
            start,
            count,
            batch,
            keys,
            ledger,
        } => {
            let bus = connect().await?;
            let options = ProduceOptions {
                topic,
                start,
                count,
                batch: batch.max(1),
                ledger,
                keys,
            };
            produce(&bus, &options).await
        }
        Command::Consume {
            topic,
            group,
            ledger,
            panic_every,
            concurrency,
        } => {
            let bus = connect().await?;
            let options = ConsumeOptions {
                topic,
                group,
                ledger,
                panic_every,
                concurrency,
            };
            consume(&bus, &options).await
        }
        Command::Run {
            fault,
            messages,
            topic,
            group,
            batch,
            concurrency,
            workdir,
            kills,
            replace_after,
            restart_command,
            proxy_listen,
            proxy_upstream,
            cuts,
            panic_every,
            patience,
        } => {
            let fault = match fault {
                FaultKind::None => Fault::None,
                FaultKind::KillConsumer => Fault::KillConsumer {
                    kills,
                    replace_after: Duration::from_secs(replace_after),
                },
                FaultKind::RestartBroker => Fault::RestartBroker {
                    command: restart_command.ok_or_else(|| {
                        busway::Error::config("--restart-command", "restart-broker needs it")
                    })?,
                },
                FaultKind::CutConnections => Fault::CutConnections {
                    listen: proxy_listen.ok_or_else(|| {
                        busway::Error::config("--proxy-listen", "cut-connections needs it")
                    })?,
                    upstream: proxy_upstream.ok_or_else(|| {
                        busway::Error::config("--proxy-upstream", "cut-connections needs it")
                    })?,
                    cuts,
                },
                FaultKind::Panics => Fault::Panics { every: panic_every },
            };
            let binary = std::env::current_exe().map_err(|source| RunError::Process {
                what: "finding this program".into(),
                source,
            })?;
            let topic =
                topic.unwrap_or_else(|| format!("reliability-{}", uuid_like(std::process::id())));
            let group = group.unwrap_or_else(|| format!("{topic}-group"));
            let options = RunOptions {
                binary,
                topic,
                group,
                messages,
                batch: batch.max(1),
                concurrency,
                workdir,
                fault,
                patience: Duration::from_secs(patience),
            };
            let outcome = run(&options).await?;
            println!(
                "{}",
                serde_json::to_string(&outcome)
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            );
            eprintln!("{}", markdown_row(&outcome));
            Ok(())
        }
    }
}

/// A short name that differs between runs.
fn uuid_like(pid: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{pid:x}{nanos:x}")
}
