//! Who may do what on a replica: TLS on the gRPC port ([`tls`]), the
//! authorization table ([`authz`]) and the layer that enforces it ([`gate`]).
//! Tokens live in the replicated state (`scheduler::acl`).

pub mod authz;
pub mod gate;
pub mod tls;

pub use gate::{Gate, GateLayer, Principal, Via};

/// Quotes caller-supplied values in errors; one definition, in the core.
pub use crate::scheduler::validate::quote;
