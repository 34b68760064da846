//! Opening clients (AMQP connections) to a namespace or an emulator.

use std::sync::Arc;
use std::time::Duration;

use azservicebus::authorization::AzureNamedKeyCredential;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::{ServiceBusClient, ServiceBusClientOptions, ServiceBusRetryOptions};
use azure_core::credentials::TokenCredential;
use busway_core::{Error, Result};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;

use crate::config::{ServiceBusConfig, Target};
use crate::error::classify;

pub(crate) type Client = ServiceBusClient<BasicRetryPolicy>;
/// The client's link-opening methods need `&mut`; links, once open, work on their own.
pub(crate) type SharedClient = Arc<Mutex<Client>>;

/// Everything needed to open another connection to the same namespace.
#[derive(Clone)]
pub(crate) struct Connector {
    target: Arc<Target>,
    credential: Option<Arc<dyn TokenCredential>>,
    options: ServiceBusClientOptions,
}

impl Connector {
    pub(crate) fn new(
        config: &ServiceBusConfig,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self> {
        let target = config.target()?;
        if target.key.is_none() && credential.is_none() {
            return Err(Error::config(
                "servicebus.sas_key",
                "no shared access key: give sas_key_name and sas_key, a connection string, or connect with a token credential",
            ));
        }
        let options = ServiceBusClientOptions {
            retry_options: ServiceBusRetryOptions {
                max_retries: config.max_retries,
                try_timeout: config.operation_timeout.max(Duration::from_secs(1)),
                ..ServiceBusRetryOptions::default()
            },
            ..ServiceBusClientOptions::default()
        };
        Ok(Self {
            target: Arc::new(target),
            credential,
            options,
        })
    }

    /// The namespace (or emulator `host:port`) connections go to.
    pub(crate) fn endpoint(&self) -> &str {
        &self.target.endpoint
    }

    /// Opens a connection.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let endpoint = self.target.endpoint.clone();
        let options = self.options.clone();
        let result = match (&self.credential, &self.target.key, self.target.plain) {
            (Some(credential), _, false) => {
                Client::new_from_token_credential(endpoint.clone(), credential.clone(), options)
                    .await
            }
            (Some(credential), _, true) => {
                Client::unsecured()
                    .new_from_token_credential(endpoint.clone(), credential.clone(), options)
                    .await
            }
            (None, Some((name, key)), plain) => {
                let credential = AzureNamedKeyCredential::new(name.clone(), key.expose_secret());
                if plain {
                    Client::unsecured()
                        .new_from_named_key_credential(endpoint.clone(), credential, options)
                        .await
                } else {
                    Client::new_from_named_key_credential(endpoint.clone(), credential, options)
                        .await
                }
            }
            (None, None, _) => {
                return Err(Error::config("servicebus.sas_key", "no credential"));
            }
        };
        result.map_err(|e| match classify("connecting", &endpoint, e) {
            Error::Unroutable(m) | Error::Rejected(m) => Error::Connection {
                message: m,
                source: None,
            },
            other => other,
        })
    }
}
