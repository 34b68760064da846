//! A transport shim that repairs one client/server race in link flow control.
//!
//! The azservicebus client drains a receive link when a receive times out, and does not wait for
//! the service's answer before granting credit again. Its next flow therefore carries a stale
//! delivery count: the service, which advanced the count while draining, computes the new credit as
//! `delivery-count(client) + credit - delivery-count(service)` = 0, and the receiver sees nothing
//! until a later poll happens to win the race (the drain flow itself re-grants and re-drains the
//! credit, so the staleness can persist indefinitely on an idle queue).
//!
//! The credit computation lives inside fe2o3-amqp's session engine, so the fix sits below it, on
//! the bytes the client sends. When the client drains a receive link with delivery count `d` and
//! credit `c`, the service's count becomes `d + c` (it consumes the credit without transfers). If
//! the client's next flow on that link still carries a count behind `d + c`, it was written before
//! the client saw the drain answer, and the shim raises it to `d + c`. That is exactly the client's
//! intent: no transfer can follow a drain answer without new credit, so the client had seen all of
//! them. Both flows are usually read in the same TCP segment, which is why the repair predicts the
//! answer instead of waiting for it.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use fe2o3_amqp_types::{
    definitions::Role,
    performatives::{Attach, Flow},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Descriptor codes of the performatives the shim looks at.
const ATTACH: u8 = 0x12;
const FLOW: u8 = 0x13;

#[derive(Debug, Default)]
struct Links {
    /// The client's receiving links by (its channel, its handle), with the delivery count the
    /// service will hold after the client's last drain, until the client's next non-drain flow.
    receiving: HashMap<(u16, u32), Option<u32>>,
}

/// Incremental frame splitter for one direction of the byte stream.
#[derive(Debug, Default)]
struct Frames {
    buf: Vec<u8>,
}

enum Unit {
    /// Protocol header or a frame the shim does not change.
    Raw(Vec<u8>),
    /// An AMQP frame: channel and body (performative and payload).
    Frame {
        channel: u16,
        raw: Vec<u8>,
        body_at: usize,
    },
}

impl Frames {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Next complete unit, if buffered.
    fn next(&mut self) -> Option<Unit> {
        if self.buf.len() >= 4 && &self.buf[..4] == b"AMQP" {
            if self.buf.len() < 8 {
                return None;
            }
            return Some(Unit::Raw(self.buf.drain(..8).collect()));
        }
        if self.buf.len() < 8 {
            return None;
        }
        let size =
            u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if size < 8 || self.buf.len() < size {
            // A malformed size is passed on as is; the AMQP layer reports it.
            if size < 8 {
                let all = std::mem::take(&mut self.buf);
                return Some(Unit::Raw(all));
            }
            return None;
        }
        let raw: Vec<u8> = self.buf.drain(..size).collect();
        let doff = usize::from(raw[4]) * 4;
        let frame_type = raw[5];
        if frame_type != 0 || doff < 8 || doff >= raw.len() {
            return Some(Unit::Raw(raw));
        }
        let channel = u16::from_be_bytes([raw[6], raw[7]]);
        Some(Unit::Frame {
            channel,
            raw,
            body_at: doff,
        })
    }
}

fn descriptor(body: &[u8]) -> Option<u8> {
    // described(0x00) smallulong(0x53) code
    (body.len() >= 3 && body[0] == 0x00 && body[1] == 0x53).then(|| body[2])
}

/// Wraps a stream, repairing stale flows on the way in.
#[derive(Debug)]
pub(crate) struct FlowFix<S> {
    inner: S,
    links: Links,
    incoming: Frames,
    ready: Vec<u8>,
}

impl<S> FlowFix<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            links: Links::default(),
            incoming: Frames::default(),
            ready: Vec::new(),
        }
    }

    /// Rewrites a stale client flow; other units pass unchanged.
    fn repair_incoming(&mut self, unit: Unit) -> Vec<u8> {
        let (channel, raw, body_at) = match unit {
            Unit::Raw(raw) => return raw,
            Unit::Frame {
                channel,
                raw,
                body_at,
            } => (channel, raw, body_at),
        };
        let body = &raw[body_at..];
        match descriptor(body) {
            Some(ATTACH) => {
                if let Ok(attach) = serde_amqp::from_slice::<Attach>(body) {
                    let key = (channel, attach.handle.0);
                    if attach.role == Role::Receiver {
                        self.links.receiving.insert(key, None);
                    } else {
                        self.links.receiving.remove(&key);
                    }
                }
                raw
            }
            Some(FLOW) => {
                let Ok(mut flow) = serde_amqp::from_slice::<Flow>(body) else {
                    return raw;
                };
                let (Some(handle), Some(count)) = (flow.handle.clone(), flow.delivery_count) else {
                    return raw;
                };
                let Some(expected) = self.links.receiving.get_mut(&(channel, handle.0)) else {
                    return raw;
                };
                // Serial-number comparison: is the client's count behind the drained count?
                let fixed = match *expected {
                    Some(d) if (d.wrapping_sub(count) as i32) > 0 => Some(d),
                    _ => None,
                };
                let count = fixed.unwrap_or(count);
                *expected = if flow.drain {
                    flow.link_credit.map(|credit| count.wrapping_add(credit))
                } else {
                    None
                };
                let Some(d) = fixed else {
                    return raw;
                };
                tracing::trace!(link_handle = handle.0, stale = ?flow.delivery_count, fixed = d, "stale flow repaired");
                flow.delivery_count = Some(d);
                match serde_amqp::to_vec(&flow) {
                    Ok(new_body) => {
                        let mut out = Vec::with_capacity(body_at + new_body.len());
                        out.extend_from_slice(&raw[..body_at]);
                        out.extend_from_slice(&new_body);
                        let size = u32::try_from(out.len()).unwrap_or(u32::MAX).to_be_bytes();
                        out[..4].copy_from_slice(&size);
                        out
                    }
                    Err(_) => raw,
                }
            }
            _ => raw,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FlowFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.ready.is_empty() {
                let n = self.ready.len().min(buf.remaining());
                buf.put_slice(&self.ready[..n]);
                self.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let filled = read.filled();
                    if filled.is_empty() {
                        // EOF: hand over anything still buffered, then report EOF.
                        let rest = std::mem::take(&mut self.incoming.buf);
                        if rest.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        self.ready = rest;
                        continue;
                    }
                    let filled = filled.to_vec();
                    self.incoming.push(&filled);
                    while let Some(unit) = self.incoming.next() {
                        let bytes = self.repair_incoming(unit);
                        self.ready.extend_from_slice(&bytes);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FlowFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
