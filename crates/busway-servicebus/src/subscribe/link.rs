//! One receive link (a plain or a session receiver) behind a common interface, so the pump that
//! drives it does not care which it is.

use std::future::Future;
use std::time::Duration;

use azservicebus::receiver::DeadLetterOptions;
use azservicebus::{ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusSessionReceiver};
use fe2o3_amqp_types::primitives::{OrderedMap, Value};
use time::OffsetDateTime;

type Res<T> = Result<T, azure_core::Error>;

/// What the pump needs from a receiver. Every method needs `&mut`: the client settles a message
/// on the link that received it, so one task owns the link and everything goes through it.
pub(crate) trait Link: Send + 'static {
    /// Waits up to `wait` for one message. Cancel-safe for a single message: the client hands a
    /// delivery over in the same poll that takes it off the link.
    fn receive_one(
        &mut self,
        wait: Duration,
    ) -> impl Future<Output = Res<Option<ServiceBusReceivedMessage>>> + Send;
    fn complete(&mut self, m: &ServiceBusReceivedMessage) -> impl Future<Output = Res<()>> + Send;
    /// Abandons `m`, setting `props` as application properties.
    fn abandon(
        &mut self,
        m: &ServiceBusReceivedMessage,
        props: Option<OrderedMap<String, Value>>,
    ) -> impl Future<Output = Res<()>> + Send;
    fn dead_letter(
        &mut self,
        m: &ServiceBusReceivedMessage,
        options: DeadLetterOptions,
    ) -> impl Future<Output = Res<()>> + Send;
    /// Renews the lock of `m` (the session's lock for session links).
    fn renew(&mut self, m: &mut ServiceBusReceivedMessage) -> impl Future<Output = Res<()>> + Send;
    /// When the session lock ends, for session links.
    fn session_locked_until(&self) -> Option<OffsetDateTime>;
    /// The session id, for session links.
    fn session_id(&self) -> Option<&str>;
    fn dispose(self) -> impl Future<Output = Res<()>> + Send;
}

/// The methods both receivers have under the same names in the client.
macro_rules! settlement_via_client {
    () => {
        async fn receive_one(&mut self, wait: Duration) -> Res<Option<ServiceBusReceivedMessage>> {
            self.receive_message_with_max_wait_time(wait).await
        }
        async fn complete(&mut self, m: &ServiceBusReceivedMessage) -> Res<()> {
            self.complete_message(m).await
        }
        async fn abandon(
            &mut self,
            m: &ServiceBusReceivedMessage,
            props: Option<OrderedMap<String, Value>>,
        ) -> Res<()> {
            self.abandon_message(m, props).await
        }
        async fn dead_letter(
            &mut self,
            m: &ServiceBusReceivedMessage,
            o: DeadLetterOptions,
        ) -> Res<()> {
            self.dead_letter_message(m, o).await
        }
    };
}

impl Link for ServiceBusReceiver {
    settlement_via_client!();
    async fn renew(&mut self, m: &mut ServiceBusReceivedMessage) -> Res<()> {
        self.renew_message_lock(m).await
    }
    fn session_locked_until(&self) -> Option<OffsetDateTime> {
        None
    }
    fn session_id(&self) -> Option<&str> {
        None
    }
    async fn dispose(self) -> Res<()> {
        ServiceBusReceiver::dispose(self).await
    }
}

impl Link for ServiceBusSessionReceiver {
    settlement_via_client!();
    async fn renew(&mut self, _m: &mut ServiceBusReceivedMessage) -> Res<()> {
        // Messages of a session are covered by the session lock.
        self.renew_session_lock().await
    }
    fn session_locked_until(&self) -> Option<OffsetDateTime> {
        Some(ServiceBusSessionReceiver::session_locked_until(self))
    }
    fn session_id(&self) -> Option<&str> {
        Some(ServiceBusSessionReceiver::session_id(self))
    }
    async fn dispose(self) -> Res<()> {
        ServiceBusSessionReceiver::dispose(self).await
    }
}
