//! The domain model, sans IO: one account's peers, groups, Networks, resources, routers,
//! policies, setup keys, posture checks and settings, with operations that validate a whole
//! request before changing anything. Time comes in as an argument (`now`, unix seconds).

mod account;
mod error;
pub mod ids;
mod ops_dns_routes;
mod ops_groups;
mod ops_networks;
mod ops_peers;
mod ops_policies;
pub mod ports;
pub mod posture;
mod posture_report;
pub mod requests;
mod types;
pub mod version;

pub use account::{Account, Map, Members};
pub use error::{ModelError, ModelResult, conflict, invalid};
pub use ops_dns_routes::MAX_ROUTE_DOMAINS;
pub use ops_peers::{check_ssh_key, validate_wg_key};
pub use ops_policies::DEFAULT_SETUP_KEY_LIFETIME_SECS;
pub use ports::{PortRange, Protocol, RuleError};
pub use posture_report::{PostureCheckReport, PostureReport};
pub use requests::*;
pub use types::*;

#[cfg(test)]
mod tests;
