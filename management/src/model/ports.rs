//! Protocols, actions and destination port ranges of policy rules: swiftgate's one rule
//! vocabulary (the `swiftgate-rules` crate), shared with the network-map encoder and the agent.

pub use swiftgate_rules::{Action, PortRange, Protocol, RuleError};
