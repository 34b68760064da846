//! Entry points for the fuzz targets in `fuzz/` and for the bounded stable-toolchain run of the
//! same targets in `tests/fuzz_smoke.rs`. Not part of the supported API.

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
