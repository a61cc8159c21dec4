//! swiftgate agent library: configuration, policy compilation and the eBPF data-plane manager.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; tests use them directly.
#![deny(missing_docs)]

pub mod config;
pub mod connect;
pub mod dataplane;
pub mod ice;
pub mod mgmt;
pub mod netdev;
pub mod netmap;
pub mod policy;
pub mod routing;
pub mod run;
pub mod signal;
pub mod stun;
pub mod sysinfo;
pub mod turn;
pub mod wg;
