//! Per-peer network maps: which peers a peer connects to, which routes it uses or serves, and
//! which peer-ACL and route-ACL rules it enforces. A pure function of the account.

mod compute;
pub mod proto;
mod types;

pub use compute::{Netmapper, compute_network_map};
pub use types::*;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
