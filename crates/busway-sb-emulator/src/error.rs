//! Error types of the emulator's public API.

/// Errors reading or validating entity configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path of the file.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The JSON document does not have the official emulator's shape.
    #[error("invalid Config.json: {0}")]
    Json(#[from] serde_json::Error),
    /// `UserConfig.Namespaces` is empty.
    #[error("Config.json declares no namespace")]
    NoNamespace,
    /// A duration is not a supported ISO 8601 duration.
    #[error("invalid ISO 8601 duration {0:?}")]
    Duration(String),
    /// A rule has an unknown filter type or lacks its filter.
    #[error("invalid rule {0:?}")]
    Rule(String),
    /// Two entities share a name, or a forwarding target does not exist.
    #[error("invalid entity {name:?}: {reason}")]
    Entity {
        /// Entity name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Errors starting or running the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
}
