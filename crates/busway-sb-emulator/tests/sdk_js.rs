//! Microsoft's JavaScript SDK (`@azure/service-bus`, pinned by `scripts/brokers/servicebus_sdks.sh`)
//! against the emulator: one test per case of `tests/sdk/js_cases.js`.

mod sdk;

use sdk::{Sdk, run};

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run(Sdk::JavaScript, stringify!($name)).await;
            }
        )*
    };
}

cases!(
    send_receive_complete,
    batch_send,
    receive_and_delete,
    abandon_increments_delivery_count,
    defer_and_receive_deferred,
    dead_letter_with_reason,
    max_delivery_count_to_dlq,
    ttl_expiry,
    scheduled_and_cancel,
    sessions_order_and_state,
    session_is_locked_to_one_receiver,
    duplicate_detection,
    peek,
    lock_renewal_and_lost_lock,
    rule_manager,
    topic_filters,
    properties_round_trip,
);
