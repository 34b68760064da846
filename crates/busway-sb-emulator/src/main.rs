//! `busway-sb-emulator --config Config.json --port 5672`: runs the emulator until Ctrl-C.

use std::path::PathBuf;

use busway_sb_emulator::{Emulator, NamespaceConfig};
use clap::Parser;

/// In-memory Azure Service Bus emulator speaking AMQP 1.0 on plain TCP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Entities in the official emulator's Config.json format.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Port to listen on.
    #[arg(long, default_value_t = 5672)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// SAS key name accepted in tokens.
    #[arg(long, default_value = busway_sb_emulator::DEFAULT_SAS_KEY_NAME)]
    key_name: String,
    /// SAS key accepted in tokens.
    #[arg(long, default_value = busway_sb_emulator::DEFAULT_SAS_KEY)]
    key: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut builder = Emulator::builder()
        .bind(format!("{}:{}", args.host, args.port))
        .sas_key(args.key_name, args.key);
    if let Some(path) = &args.config {
        builder = builder.namespace(NamespaceConfig::from_file(path)?);
    }
    let emulator = builder.start().await?;
    println!("{}", emulator.connection_string());
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    Ok(())
}
