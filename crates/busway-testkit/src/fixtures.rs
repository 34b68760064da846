//! Addresses of real brokers for adapter tests.
//!
//! Each fixture takes the address from its `BUSWAY_*` environment variable (what `scripts/test`
//! exports). When the variable is unset and Docker is available (with the default `containers`
//! feature), it starts the broker's official image with testcontainers, once per test binary, and
//! every test of the binary shares it. With neither, it panics with a message naming both ways:
//! a test never passes without its broker.

use std::time::Duration;

/// Which broker a fixture provides: its variable and how to start it in a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    /// RabbitMQ (`BUSWAY_RABBITMQ_URL`, an `amqp://` URL).
    RabbitMq,
    /// Kafka (`BUSWAY_KAFKA_BOOTSTRAP`, `host:port[,host:port]`).
    Kafka,
    /// PostgreSQL (`BUSWAY_POSTGRES_URL`, a `postgres://` URL).
    Postgres,
    /// Redis (`BUSWAY_REDIS_URL`, a `redis://` URL).
    Redis,
    /// A Confluent-compatible schema registry (`BUSWAY_SCHEMA_REGISTRY_URL`, an `http://` URL).
    SchemaRegistry,
}

impl Broker {
    /// The environment variable naming a running instance.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::RabbitMq => "BUSWAY_RABBITMQ_URL",
            Self::Kafka => "BUSWAY_KAFKA_BOOTSTRAP",
            Self::Postgres => "BUSWAY_POSTGRES_URL",
            Self::Redis => "BUSWAY_REDIS_URL",
            Self::SchemaRegistry => "BUSWAY_SCHEMA_REGISTRY_URL",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::RabbitMq => "RabbitMQ",
            Self::Kafka => "Kafka",
            Self::Postgres => "PostgreSQL",
            Self::Redis => "Redis",
            Self::SchemaRegistry => "schema registry",
        }
    }
}

/// The address of a running `broker`: from its environment variable, or a container.
///
/// # Panics
///
/// When neither the variable is set nor Docker available (or the container fails to start).
pub async fn address(broker: Broker) -> String {
    if let Some(address) = std::env::var(broker.env_var())
        .ok()
        .filter(|v| !v.is_empty())
    {
        return address;
    }
    #[cfg(feature = "containers")]
    if containers::docker_available() {
        return containers::start(broker).await;
    }
    panic!(
        "no {name} for the tests: set {var} to the address of a running {name} \
         (`scripts/test` installs, starts and exports one), or make Docker available so the \
         fixture can start the official image with testcontainers",
        name = broker.name(),
        var = broker.env_var()
    );
}

/// An `amqp://` URL of a running RabbitMQ.
pub async fn rabbitmq_url() -> String {
    address(Broker::RabbitMq).await
}

/// The bootstrap servers of a running Kafka.
pub async fn kafka_bootstrap() -> String {
    address(Broker::Kafka).await
}

/// A `postgres://` URL of a running PostgreSQL.
pub async fn postgres_url() -> String {
    address(Broker::Postgres).await
}

/// A `redis://` URL of a running Redis.
pub async fn redis_url() -> String {
    address(Broker::Redis).await
}

/// The `http://` URL of a running Confluent-compatible schema registry.
///
/// In a container this is Redpanda's built-in registry (one container, no Kafka to wire up),
/// which implements the Confluent Schema Registry API.
pub async fn schema_registry_url() -> String {
    address(Broker::SchemaRegistry).await
}

/// How long a containerised broker may take to start.
pub const CONTAINER_START_TIMEOUT: Duration = Duration::from_secs(180);

#[cfg(feature = "containers")]
mod containers {
    use std::sync::OnceLock;

    use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::rabbitmq::RabbitMq;
    use testcontainers_modules::redis::Redis;
    use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    use testcontainers_modules::testcontainers::{Container, GenericImage, ImageExt};

    use super::{Broker, CONTAINER_START_TIMEOUT};

    pub(super) fn docker_available() -> bool {
        std::env::var_os("DOCKER_HOST").is_some()
            || std::path::Path::new("/var/run/docker.sock").exists()
                && std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
    }

    /// Containers live as long as the test binary; each test runs on its own runtime, so they are
    /// started with the blocking runner on a plain thread and kept in statics.
    struct Running {
        address: String,
        _rabbitmq: Option<Container<RabbitMq>>,
        _kafka: Option<Container<Kafka>>,
        _postgres: Option<Container<Postgres>>,
        _redis: Option<Container<Redis>>,
        _generic: Option<Container<GenericImage>>,
    }

    static RABBITMQ: OnceLock<Running> = OnceLock::new();
    static KAFKA: OnceLock<Running> = OnceLock::new();
    static POSTGRES: OnceLock<Running> = OnceLock::new();
    static REDIS: OnceLock<Running> = OnceLock::new();
    static SCHEMA_REGISTRY: OnceLock<Running> = OnceLock::new();

    pub(super) async fn start(broker: Broker) -> String {
        let cell = match broker {
            Broker::RabbitMq => &RABBITMQ,
            Broker::Kafka => &KAFKA,
            Broker::Postgres => &POSTGRES,
            Broker::Redis => &REDIS,
            Broker::SchemaRegistry => &SCHEMA_REGISTRY,
        };
        // The blocking runner must not run on an async worker thread.
        let handle =
            std::thread::spawn(move || cell.get_or_init(|| launch(broker)).address.clone());
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("starting the {broker:?} container failed"))
    }

    fn launch(broker: Broker) -> Running {
        let fail = |e: &dyn std::fmt::Display| -> ! {
            panic!("starting the {broker:?} container failed: {e}")
        };
        let mut running = Running {
            address: String::new(),
            _rabbitmq: None,
            _kafka: None,
            _postgres: None,
            _redis: None,
            _generic: None,
        };
        match broker {
            Broker::RabbitMq => {
                let c = RabbitMq::default()
                    .with_tag("3.13-management")
                    .with_startup_timeout(CONTAINER_START_TIMEOUT)
                    .start()
                    .unwrap_or_else(|e| fail(&e));
                let port = c.get_host_port_ipv4(5672).unwrap_or_else(|e| fail(&e));
                running.address = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
                running._rabbitmq = Some(c);
            }
            Broker::Kafka => {
                let c = Kafka::default()
                    .with_startup_timeout(CONTAINER_START_TIMEOUT)
                    .start()
                    .unwrap_or_else(|e| fail(&e));
                let port = c
                    .get_host_port_ipv4(KAFKA_PORT)
                    .unwrap_or_else(|e| fail(&e));
                running.address = format!("127.0.0.1:{port}");
                running._kafka = Some(c);
            }
            Broker::Postgres => {
                let c = Postgres::default()
                    .with_tag("16-alpine")
                    .with_startup_timeout(CONTAINER_START_TIMEOUT)
                    .start()
                    .unwrap_or_else(|e| fail(&e));
                let port = c.get_host_port_ipv4(5432).unwrap_or_else(|e| fail(&e));
                running.address = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
                running._postgres = Some(c);
            }
            Broker::Redis => {
                let c = Redis::default()
                    .with_startup_timeout(CONTAINER_START_TIMEOUT)
                    .start()
                    .unwrap_or_else(|e| fail(&e));
                let port = c.get_host_port_ipv4(6379).unwrap_or_else(|e| fail(&e));
                running.address = format!("redis://127.0.0.1:{port}");
                running._redis = Some(c);
            }
            Broker::SchemaRegistry => {
                // Redpanda's dev-container mode serves its Confluent-compatible schema registry
                // on 8081 from a single container.
                let c = GenericImage::new("redpandadata/redpanda", "v24.2.7")
                    .with_exposed_port(8081.tcp())
                    .with_wait_for(WaitFor::message_on_either_std(
                        "Successfully started Redpanda!",
                    ))
                    .with_cmd(["redpanda", "start", "--mode", "dev-container", "--smp", "1"])
                    .with_startup_timeout(CONTAINER_START_TIMEOUT)
                    .start()
                    .unwrap_or_else(|e| fail(&e));
                let port = c.get_host_port_ipv4(8081).unwrap_or_else(|e| fail(&e));
                running.address = format!("http://127.0.0.1:{port}");
                running._generic = Some(c);
            }
        }
        running
    }
}
