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

/// Errors finding the SAS key the binary accepts. They name where the key was looked for, never
/// the key itself.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read the key file {path}: {source}")]
    Read {
        /// Path of the key file.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The key file or variable holds no key.
    #[error("{0} holds no key")]
    Empty(String),
    /// The emulator would listen beyond this machine with the public development key.
    #[error(
        "listening on {0} (not a loopback address) needs a key of your own: set \
         BUSWAY_SB_EMULATOR_KEY or pass --key-file"
    )]
    PublicKeyOnNetwork(String),
}
