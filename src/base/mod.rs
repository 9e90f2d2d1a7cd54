//! The bottom layer: the few types every other module needs, and nothing
//! else. Nothing here imports another module of the crate.
//!
//! - `id.rs`: [`ConnId`], a connection's never-reused identity.
//! - `close.rs`: [`CloseReason`], why a connection ended.
//! - `time.rs`: the loop's millisecond clock.

pub(crate) mod close;
pub(crate) mod id;
pub(crate) mod time;
