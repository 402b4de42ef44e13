//! Who may do what on a replica: TLS on the gRPC port ([`tls`]), the
//! authorization table ([`authz`]) and the layer that enforces it ([`gate`]).
//! Tokens live in the replicated state (`scheduler::acl`).

pub mod authz;
pub mod gate;
pub mod tls;

pub use gate::{Gate, GateLayer, Principal, Via};

/// At most ~100 bytes of a caller-supplied value, for error messages.
pub fn quote(value: &str) -> String {
    const MAX: usize = 100;
    if value.len() <= MAX {
        return format!("'{value}'");
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("'{}…' ({} bytes)", &value[..end], value.len())
}
