//! Entry points for the workspace's fuzz targets (`fuzz/` at the root for cargo-fuzz, and the
//! bounded stable-toolchain harness in `crates/busway-fuzz`). Not part of the supported API.

use crate::{
    config::RuleFilter,
    filter::CompiledFilter,
    wire::{Inbound, Outbound},
};

/// Feeds peer bytes to the inbound frame layer, split into reads at the positions `data` itself
/// chooses, as a socket would deliver them. Must never panic, and must never hold more than one
/// allowed frame's worth of bytes.
pub fn wire_inbound(data: &[u8]) {
    let (cuts, stream) = split_input(data);
    let mut inbound = Inbound::default();
    let mut offset = 0;
    for cut in cuts.iter().copied().chain(std::iter::once(stream.len())) {
        let end = cut.clamp(offset, stream.len());
        if inbound.feed(&stream[offset..end]).is_err() {
            return;
        }
        offset = end;
    }
}

/// Feeds engine bytes to the outbound rewriting (delivery tags to lock tokens, frame splitting).
/// Must never panic.
pub fn wire_outbound(data: &[u8]) {
    let (cuts, stream) = split_input(data);
    let peer_max = cuts
        .first()
        .map_or(u32::MAX, |c| 512 + (*c as u32 % 70_000));
    let mut outbound = Outbound::default();
    let mut offset = 0;
    for cut in cuts.iter().copied().chain(std::iter::once(stream.len())) {
        let end = cut.clamp(offset, stream.len());
        let _ = outbound.feed(&stream[offset..end], peer_max);
        offset = end;
    }
}

/// Compiles a SQL filter and, when it compiles, evaluates it against a message with a few
/// properties. Must never panic or overflow the stack.
pub fn sql_filter(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(filter) = CompiledFilter::compile(&RuleFilter::Sql(text.into_owned())) {
        let _ = filter.matches(&sample_message());
    }
}

fn sample_message() -> crate::entity::message::AmqpMessage {
    use fe2o3_amqp_types::messaging::{ApplicationProperties, Body, Message, Properties};
    Message::builder()
        .properties(Properties {
            subject: Some("orders".into()),
            ..Default::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("color", "red")
                .insert("n", 5i64)
                .build(),
        )
        .body(Body::Empty)
        .build()
}

/// The first byte says how many read boundaries follow (each one byte, scaled); the rest is the
/// stream.
fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count % 8).min(rest.len());
    let (cuts, stream) = rest.split_at(count);
    let mut positions: Vec<usize> = cuts.iter().map(|c| usize::from(*c) * 16).collect();
    positions.sort_unstable();
    (positions, stream)
}

/// Well-formed client traffic to start mutating from: protocol headers and the frames a Service
/// Bus client sends (open, begin, attaches, flows with drain, a transfer, dispositions with
/// string-keyed outcome maps), each as a complete frame.
pub fn inbound_seeds() -> Vec<Vec<u8>> {
    use fe2o3_amqp_types::{
        definitions::{Error, Handle, Role},
        messaging::{DeliveryState, Rejected, Source, Target},
        performatives::{Attach, Begin, Disposition, Flow, Open, Transfer},
        primitives::{OrderedMap, Symbol},
    };
    use serde_amqp::to_vec;

    fn frame(channel: u16, body: Vec<u8>) -> Vec<u8> {
        let size = u32::try_from(body.len() + 8)
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        let [hi, lo] = channel.to_be_bytes();
        let mut out = vec![size[0], size[1], size[2], size[3], 2, 0, hi, lo];
        out.extend(body);
        out
    }
    let open = Open {
        container_id: "fuzz".into(),
        hostname: Some("127.0.0.1".into()),
        max_frame_size: 65_536.into(),
        channel_max: 255.into(),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    let begin = Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 2048,
        outgoing_window: 2048,
        handle_max: 255.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    let attach = |role: Role, handle: u32| Attach {
        name: format!("link-{handle}"),
        handle: Handle(handle),
        role,
        snd_settle_mode: Default::default(),
        rcv_settle_mode: Default::default(),
        source: Some(Box::new(Source::builder().address("q").build())),
        target: Some(Box::new(Target::builder().address("q").build().into())),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    let flow = |drain: bool, count: u32| Flow {
        next_incoming_id: Some(0),
        incoming_window: 2048,
        next_outgoing_id: 0,
        outgoing_window: 2048,
        handle: Some(Handle(1)),
        delivery_count: Some(count),
        link_credit: Some(5),
        available: None,
        drain,
        echo: false,
        properties: None,
    };
    let transfer = Transfer {
        handle: Handle(0),
        delivery_id: Some(0),
        delivery_tag: Some(vec![0, 0, 0, 1].into()),
        message_format: Some(0),
        settled: Some(false),
        more: false,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    };
    let mut info = OrderedMap::new();
    info.insert(
        Symbol::from("DeadLetterReason"),
        fe2o3_amqp_types::primitives::Value::String("reason".into()),
    );
    let disposition = Disposition {
        role: Role::Receiver,
        first: 0,
        last: Some(3),
        settled: false,
        state: Some(DeliveryState::Rejected(Rejected {
            error: Some(Error::new(
                fe2o3_amqp_types::definitions::ErrorCondition::Custom(Symbol::from(
                    "com.microsoft:dead-letter",
                )),
                None,
                Some(info),
            )),
        })),
        batchable: false,
    };
    let mut seeds = vec![
        b"AMQP\x03\x01\x00\x00".to_vec(),
        b"AMQP\x00\x01\x00\x00".to_vec(),
    ];
    for body in [
        to_vec(&open),
        to_vec(&begin),
        to_vec(&attach(Role::Receiver, 1)),
        to_vec(&attach(Role::Sender, 0)),
        to_vec(&flow(true, 0)),
        to_vec(&flow(false, 0)),
        to_vec(&transfer),
        to_vec(&disposition),
    ]
    .into_iter()
    .flatten()
    {
        seeds.push(frame(1, body));
    }
    seeds
}

/// SQL filter texts to start mutating from.
pub fn sql_seeds() -> Vec<&'static str> {
    vec![
        "1=1",
        "color = 'red' AND n > 3",
        "NOT (sys.Label = 'orders') OR user.n <= 5",
        "color IN ('green', 'red') AND missing IS NULL",
        "EXISTS(color) AND [odd name] <> 'x'",
        "((n >= -1.5)) AND NOT NOT TRUE",
        "sys.CorrelationId = 'c' OR color NOT IN ('a')",
    ]
}
