//! W3C trace context (<https://www.w3.org/TR/trace-context/>): the `traceparent` header
//! parsed and formatted, without allocating until it is written out.

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

/// `version-traceid-parentid-flags` of version 00: 55 characters.
const LENGTH: usize = 55;

/// A 16-byte trace id, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// One `traceparent`: the trace, the span it came from, and the flags (01: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// What a message carries: its `traceparent`, and the `tracestate` it came with (shared,
/// so every event of a request holds the same one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub parent: TraceParent,
    pub state: Option<Arc<str>>,
}

impl TraceParent {
    /// The header's value, or `None` when it is not one (a caller then starts a new trace).
    pub fn parse(header: &str) -> Option<Self> {
        let bytes = header.as_bytes();
        if bytes.len() < LENGTH || [2, 35, 52].iter().any(|&i| bytes[i] != b'-') {
            return None;
        }
        let version = hex::<1>(&bytes[0..2])?[0];
        // Version 00 is exactly this long; a later version may append fields after a dash.
        let tail_ok = match version {
            0 => bytes.len() == LENGTH,
            0xff => false,
            _ => bytes.len() == LENGTH || bytes[LENGTH] == b'-',
        };
        let trace_id = hex::<16>(&bytes[3..35])?;
        let parent_id = hex::<8>(&bytes[36..52])?;
        let flags = hex::<1>(&bytes[53..55])?[0];
        let valid = tail_ok && trace_id != [0; 16] && parent_id != [0; 8];
        valid.then_some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id,
            flags,
        })
    }

    /// A new trace (sampled) starting at a new span.
    pub fn new_trace() -> Self {
        TraceParent {
            trace_id: TraceId(Uuid::new_v4().into_bytes()),
            parent_id: new_span_id(),
            flags: 1,
        }
    }

    /// The same trace, continued from the span `span_id`.
    pub fn child(self, span_id: [u8; 8]) -> Self {
        TraceParent {
            parent_id: span_id,
            ..self
        }
    }
}

/// A random, never all-zero span id (a v4 UUID's first half always has its version bits).
/// Longest `tracestate` passed on, and most list members (W3C trace context).
const TRACESTATE_MAX_BYTES: usize = 512;
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// `tracestate` as it may be passed on: at most 512 bytes and 32 `key=value` members of
/// printable ASCII; anything else is dropped (the trace itself continues).
pub fn valid_tracestate(state: &str) -> Option<&str> {
    let state = state.trim();
    let members: Vec<&str> = state
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    let well_formed = |member: &&str| {
        member.split_once('=').is_some_and(|(key, value)| {
            !key.is_empty()
                && !value.is_empty()
                && member.bytes().all(|b| (0x20..0x7f).contains(&b))
        })
    };
    (!state.is_empty()
        && state.len() <= TRACESTATE_MAX_BYTES
        && members.len() <= TRACESTATE_MAX_MEMBERS
        && members.iter().all(well_formed))
    .then_some(state)
}

pub fn new_span_id() -> [u8; 8] {
    Uuid::new_v4().as_u64_pair().0.to_be_bytes()
}

/// Lowercase hex digits only, as the header requires.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-", self.trace_id)?;
        write_hex(f, &self.parent_id)?;
        write!(f, "-{:02x}", self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracestate_is_passed_on_only_when_bounded_and_well_formed() {
        assert_eq!(
            valid_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(valid_tracestate(&format!("a={}", "x".repeat(600))), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(valid_tracestate(&many.join(",")), None);
        assert_eq!(valid_tracestate("no-equals-sign"), None);
        assert_eq!(valid_tracestate("a=b\u{0}"), None);
        assert_eq!(valid_tracestate(""), None);
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let parent = TraceParent::parse(VALID).expect("valid");
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            parent.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(parent.flags, 1);
        assert_eq!(parent.to_string(), VALID);
    }

    #[test]
    fn a_later_version_may_append_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert_eq!(TraceParent::parse(later).map(|p| p.flags), Some(0));
    }

    #[test]
    fn invalid_headers_are_refused() {
        for header in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceParent::parse(header), None, "{header}");
        }
    }

    #[test]
    fn a_new_trace_is_sampled_and_valid() {
        let parent = TraceParent::new_trace();
        assert_eq!(TraceParent::parse(&parent.to_string()), Some(parent));
        let child = parent.child(new_span_id());
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.parent_id, parent.parent_id);
    }
}
