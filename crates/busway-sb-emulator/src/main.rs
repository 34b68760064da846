//! `busway-sb-emulator --config Config.json --port 5672`: runs the emulator until Ctrl-C.
//!
//! The SAS key comes from `--key-file` or `BUSWAY_SB_EMULATOR_KEY`, never from the command line
//! (other users of the machine can read a process's arguments), and is never printed.

use std::path::PathBuf;

use busway_sb_emulator::{Emulator, KEY_ENV, NamespaceConfig, check_key_for_host, load_key};
use clap::Parser;

/// In-memory Azure Service Bus emulator speaking AMQP 1.0 on plain TCP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Entities in the official emulator's Config.json format.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 5672)]
    port: u16,
    /// Address to listen on. Anything but a loopback address needs a key of your own.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// SAS key name accepted in tokens.
    #[arg(long, default_value = busway_sb_emulator::DEFAULT_SAS_KEY_NAME)]
    key_name: String,
    /// File whose first line is the SAS key accepted in tokens. Without it the key comes from
    /// BUSWAY_SB_EMULATOR_KEY, else it is the official emulator's public development key.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Display, not Debug: errors name where the key was looked for, never the key.
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let env_key = std::env::var(KEY_ENV).ok();
    let key = load_key(args.key_file.as_deref(), env_key.as_deref())?;
    check_key_for_host(&args.host, key.as_deref())?;
    let key_source = match (&args.key_file, &key) {
        (Some(path), _) => format!("the key in {}", path.display()),
        (None, Some(_)) => format!("the key in {KEY_ENV}"),
        (None, None) => "the official emulator's public development key".to_string(),
    };
    let mut builder = Emulator::builder().bind(format!("{}:{}", args.host, args.port));
    if let Some(key) = key {
        builder = builder.sas_key(args.key_name, key);
    } else if args.key_name != busway_sb_emulator::DEFAULT_SAS_KEY_NAME {
        builder = builder.sas_key(args.key_name, busway_sb_emulator::DEFAULT_SAS_KEY);
    }
    if let Some(path) = &args.config {
        builder = builder.namespace(NamespaceConfig::from_file(path)?);
    }
    let emulator = builder.start().await?;
    // The key is never printed: the connection string shows where it comes from instead.
    println!("{emulator}");
    println!("SharedAccessKey: {key_source}");
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    Ok(())
}
