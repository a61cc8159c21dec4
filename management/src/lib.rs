//! swiftgate management server: the model of a zero-trust overlay (peers, groups, Networks,
//! resources, routers, policies, setup keys, posture checks), its SQLite store, per-peer
//! network maps, the admin REST API, the gRPC management service and the CLI.
#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod civil;
pub mod cli;
pub mod events;
pub mod grpc;
pub mod model;
pub mod netmap;
pub mod replay;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod turn;
