//! The `swiftgate-management` command line: `serve` runs the server; every other command talks
//! to a running server's admin REST API and prints a table (or the JSON with `--json`).

mod client;
mod posture;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

pub use client::{Client, ClientError, segment};
use table::{cell, render, time};

/// swiftgate management server and admin CLI.
#[derive(Parser, Debug)]
#[command(name = "swiftgate-management", version, about)]
pub struct Cli {
    /// Admin API base URL (for every command but `serve`).
    #[arg(
        long,
        global = true,
        env = "SWIFTGATE_API",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api: String,
    /// Personal access token for the admin API (client commands). Prefer --token-file: a
    /// token on the command line is visible to other users of the machine.
    #[arg(
        long,
        global = true,
        env = "SWIFTGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// File holding the personal access token (client commands). Default: `admin-token` in
    /// $SWIFTGATE_DATA_DIR (or the current directory), where `serve` writes the first
    /// start's admin token, if that file exists.
    #[arg(long, global = true, env = "SWIFTGATE_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the management server (admin REST API and gRPC management service).
    Serve(ServeArgs),
    /// Peers.
    #[command(subcommand)]
    Peers(PeersCmd),
    /// Groups of peers and resources.
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Networks.
    #[command(subcommand)]
    Networks(NetworksCmd),
    /// Resources of Networks.
    #[command(subcommand)]
    Resources(ResourcesCmd),
    /// Routing peers of Networks.
    #[command(subcommand)]
    Routers(RoutersCmd),
    /// Access policies.
    #[command(subcommand)]
    Policies(PoliciesCmd),
    /// Setup keys.
    #[command(subcommand, name = "setup-keys")]
    SetupKeys(SetupKeysCmd),
    /// Posture checks.
    #[command(subcommand)]
    Posture(PostureCmd),
    /// Account settings.
    #[command(subcommand)]
    Settings(SettingsCmd),
}

/// `serve` options.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Directory of the database (`swiftgate-management.db`).
    #[arg(long, env = "SWIFTGATE_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// Admin REST API address; keep it on loopback unless a proxy authenticates.
    #[arg(long, default_value = crate::api::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// gRPC management service address (where agents connect).
    #[arg(long, default_value = crate::grpc::DEFAULT_LISTEN)]
    pub grpc_listen: SocketAddr,
    /// Do not run the gRPC management service.
    #[arg(long)]
    pub no_grpc: bool,
    /// Initialise a new account (and server key) in an existing database file that is empty
    /// or holds no account, instead of refusing to start. A missing file is created without
    /// it; an existing account is never replaced.
    #[arg(long)]
    pub init: bool,
    /// Signal server `host:port` announced to agents.
    #[arg(long)]
    pub signal: Option<String>,
    /// The Signal server speaks TLS.
    #[arg(long)]
    pub signal_tls: bool,
    /// STUN URI announced to agents, e.g. stun:stun.example.org:3478 (repeat).
    #[arg(long = "stun")]
    pub stuns: Vec<String>,
    /// NetBird relay URL announced to agents, e.g. rels://relay.example.org:443 (repeat);
    /// needs --relay-secret-file (agents get tokens signed with it).
    #[arg(long = "relay", requires = "relay_secret_file")]
    pub relays: Vec<String>,
    /// File holding the secret shared with the NetBird relays (mode 0600).
    #[arg(long)]
    pub relay_secret_file: Option<PathBuf>,
    /// Lifetime of relay tokens, seconds (renewed at three quarters of it).
    #[arg(long, default_value_t = 12 * 3600)]
    pub relay_credentials_ttl: u64,
    /// TURN URI announced to agents, e.g. turn:turn.example.org:3478?transport=udp
    /// (repeat); needs --turn-secret-file (coturn's `static-auth-secret`).
    #[arg(long = "turn", requires = "turn_secret_file")]
    pub turns: Vec<String>,
    /// File holding the secret shared with the TURN servers (mode 0600); each peer gets
    /// time-limited credentials derived from it.
    #[arg(long)]
    pub turn_secret_file: Option<PathBuf>,
    /// Lifetime of TURN credentials, seconds (renewed at three quarters of it).
    #[arg(long, default_value_t = 12 * 3600)]
    pub turn_credentials_ttl: u64,
    /// A DNS name clients reach the admin API under (repeat). Requests whose `Host` is
    /// neither one of these, `localhost`, nor an IP address are refused (DNS rebinding).
    #[arg(long = "api-host")]
    pub api_hosts: Vec<String>,
    /// TLS certificate chain (PEM) of the gRPC service; with --grpc-tls-key.
    #[arg(long, requires = "grpc_tls_key", conflicts_with = "grpc_plaintext")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of the gRPC service; with --grpc-tls-cert.
    #[arg(long, requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,
    /// A name agents reach the gRPC service under (repeat): put into the self-signed
    /// certificate made when no --grpc-tls-cert is given (besides localhost and loopback).
    #[arg(long = "grpc-host")]
    pub grpc_hosts: Vec<String>,
    /// Issue a new admin token for the owner user and write it to <data-dir>/admin-token (a
    /// lost token); older tokens stay valid until deleted.
    #[arg(long)]
    pub reissue_admin_token: bool,
    /// Serve gRPC (management and Signal) WITHOUT TLS.
    #[arg(long)]
    pub grpc_plaintext: bool,
    /// Serve the admin API WITHOUT AUTHENTICATION (development only; loopback addresses
    /// only; logged loudly). Without it every request needs a personal access token.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// `peers` commands.
#[derive(Subcommand, Debug)]
pub enum PeersCmd {
    /// List peers.
    Ls,
    /// Show one peer.
    Show {
        /// Id or name.
        peer: String,
    },
    /// Register a peer by WireGuard key with a setup key (what an agent's login does).
    Register {
        /// Setup key text.
        #[arg(long)]
        setup_key: String,
        /// WireGuard public key (base64).
        #[arg(long)]
        wg_key: String,
        /// Name (default: "peer").
        #[arg(long)]
        name: Option<String>,
    },
    /// Approve a peer.
    Approve {
        /// Id or name.
        peer: String,
    },
    /// Rename a peer.
    Rename {
        /// Id or name.
        peer: String,
        /// New name.
        name: String,
    },
    /// Set a peer's groups (exactly these afterwards).
    SetGroups {
        /// Id or name.
        peer: String,
        /// Group ids or names.
        groups: Vec<String>,
    },
    /// Delete a peer.
    Rm {
        /// Id or name.
        peer: String,
    },
    /// Show the network map the peer receives.
    Map {
        /// Id or name.
        peer: String,
    },
    /// Show why the peer passes or fails each posture check that applies to it.
    Posture {
        /// Id or name.
        peer: String,
    },
}

/// `groups` commands.
#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    /// List groups.
    Ls,
    /// Create a group.
    Add {
        /// Name.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Peers to put in it (ids or names).
        #[arg(long = "peer")]
        peers: Vec<String>,
    },
    /// Delete a group.
    Rm {
        /// Id or name.
        group: String,
    },
}

/// `networks` commands.
#[derive(Subcommand, Debug)]
pub enum NetworksCmd {
    /// List Networks.
    Ls,
    /// Create a Network.
    Add {
        /// Name.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a Network with its resources and routers.
    Rm {
        /// Id or name.
        network: String,
    },
}

/// `resources` commands.
#[derive(Subcommand, Debug)]
pub enum ResourcesCmd {
    /// List resources (of one Network with --network).
    Ls {
        /// Network id or name.
        #[arg(long)]
        network: Option<String>,
    },
    /// Add a resource to a Network.
    Add {
        /// Network id or name.
        #[arg(long)]
        network: String,
        /// Name.
        name: String,
        /// Address: 10.10.0.5, 10.10.0.0/16, grafana.berlin.internal, *.berlin.internal.
        address: String,
        /// Resource groups (repeat).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a resource.
    Rm {
        /// Network id or name.
        #[arg(long)]
        network: String,
        /// Resource id or name.
        resource: String,
    },
}

/// `routers` commands.
#[derive(Subcommand, Debug)]
pub enum RoutersCmd {
    /// List the routers of a Network.
    Ls {
        /// Network id or name.
        #[arg(long)]
        network: String,
    },
    /// Add a routing peer (or peer groups) to a Network.
    Add {
        /// Network id or name.
        #[arg(long)]
        network: String,
        /// Routing peer id or name.
        #[arg(long, conflicts_with = "peer_groups")]
        peer: Option<String>,
        /// Groups whose peers all route (repeat).
        #[arg(long = "peer-group")]
        peer_groups: Vec<String>,
        /// Metric 1..9999, lower preferred.
        #[arg(long)]
        metric: Option<i64>,
        /// Keep the clients' overlay source addresses (needs a return route on the LAN).
        #[arg(long)]
        no_masquerade: bool,
    },
    /// Remove a router.
    Rm {
        /// Network id or name.
        #[arg(long)]
        network: String,
        /// Router id.
        router: String,
    },
}

/// `policies` commands.
#[derive(Subcommand, Debug)]
pub enum PoliciesCmd {
    /// List policies.
    Ls,
    /// Show one policy.
    Show {
        /// Id or name.
        policy: String,
    },
    /// Create a one-rule policy (or any policy from a JSON file with --from-json).
    Add(Box<PolicyAddArgs>),
    /// Enable a policy.
    Enable {
        /// Id or name.
        policy: String,
    },
    /// Disable a policy.
    Disable {
        /// Id or name.
        policy: String,
    },
    /// Delete a policy.
    Rm {
        /// Id or name.
        policy: String,
    },
}

/// `policies add` options.
#[derive(Args, Debug)]
pub struct PolicyAddArgs {
    /// Name (ignored with --from-json, which carries its own).
    #[arg(required_unless_present = "from_json")]
    pub name: Option<String>,
    /// Source groups (repeat).
    #[arg(long = "src")]
    pub sources: Vec<String>,
    /// Destination groups (repeat).
    #[arg(long = "dst")]
    pub destinations: Vec<String>,
    /// A single source resource (Site-to-VPN).
    #[arg(long)]
    pub src_resource: Option<String>,
    /// A single source peer.
    #[arg(long)]
    pub src_peer: Option<String>,
    /// A single destination resource.
    #[arg(long)]
    pub dst_resource: Option<String>,
    /// A single destination peer.
    #[arg(long)]
    pub dst_peer: Option<String>,
    /// all, tcp, udp or icmp.
    #[arg(long, default_value = "all")]
    pub protocol: String,
    /// Ports and ranges, comma-separated: 443,8000-8080.
    #[arg(long, value_delimiter = ',')]
    pub ports: Vec<String>,
    /// accept or drop.
    #[arg(long, default_value = "accept")]
    pub action: String,
    /// Also destinations -> sources.
    #[arg(long)]
    pub bidirectional: bool,
    /// Create it disabled (e.g. an emergency policy kept for rollback).
    #[arg(long)]
    pub disabled: bool,
    /// Description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Posture checks source peers must pass (repeat).
    #[arg(long = "posture-check")]
    pub posture_checks: Vec<String>,
    /// Read the whole policy (API JSON) from a file; `-` for stdin.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
}

/// `setup-keys` commands.
#[derive(Subcommand, Debug)]
pub enum SetupKeysCmd {
    /// List setup keys.
    Ls,
    /// Create a setup key; its text is printed once.
    Create {
        /// Name.
        name: String,
        /// One registration only.
        #[arg(long)]
        one_off: bool,
        /// Groups given to peers registered with it (repeat).
        #[arg(long = "auto-group")]
        auto_groups: Vec<String>,
        /// Lifetime: seconds, or with a unit: 30m, 12h, 30d; 0 = never expires.
        #[arg(long)]
        expires_in: Option<String>,
        /// Most registrations (reusable keys).
        #[arg(long)]
        usage_limit: Option<u32>,
        /// Registered peers are removed after being offline for a while.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Revoke a setup key.
    Revoke {
        /// Id or name.
        key: String,
    },
    /// Delete a setup key.
    Rm {
        /// Id or name.
        key: String,
    },
}

/// `posture` commands.
#[derive(Subcommand, Debug)]
pub enum PostureCmd {
    /// List posture checks.
    Ls,
    /// Create a posture check.
    Add {
        /// Name.
        name: String,
        /// Minimum agent version, e.g. 0.45.0.
        #[arg(long)]
        min_client_version: Option<String>,
        /// Minimum OS version per OS (repeat): linux=5.10 (kernel), darwin=13, windows=10.0.22000.
        #[arg(long = "min-os")]
        min_os: Vec<String>,
        /// Peer network ranges (repeat).
        #[arg(long = "network-range")]
        network_ranges: Vec<String>,
        /// allow or deny for --network-range.
        #[arg(long, default_value = "allow")]
        range_action: String,
        /// A process that must run, per OS (repeat): linux=/usr/bin/falcon-sensor.
        #[arg(long = "process")]
        processes: Vec<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a posture check.
    Rm {
        /// Id or name.
        check: String,
    },
}

/// `settings` commands.
#[derive(Subcommand, Debug)]
pub enum SettingsCmd {
    /// Show settings.
    Show,
    /// Change settings.
    Set {
        /// Require approval of new peers.
        #[arg(long)]
        peer_approval: Option<bool>,
        /// Ephemeral peers' offline timeout in seconds.
        #[arg(long)]
        ephemeral_offline_secs: Option<u64>,
        /// DNS domain of peer names.
        #[arg(long)]
        dns_domain: Option<String>,
        /// Overlay range (only before the first peer registers).
        #[arg(long)]
        overlay_range: Option<String>,
        /// IPv6 overlay range, a ULA /64 or wider (only before the first peer registers).
        #[arg(long)]
        overlay_range_v6: Option<String>,
        /// Groups whose peers get IPv6 addresses, comma-separated; "" turns IPv6 off.
        #[arg(long, value_delimiter = ',')]
        ipv6_groups: Option<Vec<String>>,
    },
}

/// Why a CLI command failed: what the user gave, or what the server answered.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The admin API refused the request or could not be reached.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// A duration that is not `30`, `30m`, `12h` or `30d`.
    #[error("bad duration {0:?}: use e.g. 3600, 30m, 12h or 30d")]
    Duration(String),
    /// A `KEY=VALUE` flag without `=` or with a key it does not know.
    #[error("{flag} {text:?}: {expected}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What was given.
        text: String,
        /// What it takes.
        expected: &'static str,
    },
    /// A token file that cannot be read.
    #[error("token file {path}: {why}")]
    TokenFile {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A policy file that cannot be read or is not JSON.
    #[error("{path}: {why}")]
    PolicyFile {
        /// The file (`-`: standard input).
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A command that is not a client command.
    #[error("{0} is not a client command")]
    NotClient(&'static str),
}

/// Parses `30`, `30s`, `30m`, `12h`, `30d` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, CliError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| CliError::Duration(s.to_string()))
}

fn split_kv<'a>(flag: &'static str, s: &'a str) -> Result<(&'a str, &'a str), CliError> {
    s.split_once('=').ok_or_else(|| CliError::Flag {
        flag,
        text: s.to_string(),
        expected: "expected OS=VALUE, e.g. linux=5.10",
    })
}

struct Out {
    json: bool,
}

impl Out {
    fn print(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
            );
        } else {
            print!("{}", human(v));
        }
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn done(what: &str) -> impl FnOnce(&Value) -> String + '_ {
    move |v| {
        format!(
            "{what} {} ({})\n",
            v.get("name").and_then(Value::as_str).unwrap_or("-"),
            v.get("id").and_then(Value::as_str).unwrap_or("-")
        )
    }
}

fn peers_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = arr(v)
        .iter()
        .map(|p| {
            vec![
                cell(p.get("name")),
                cell(p.get("ip")),
                cell(p.get("group_names")),
                if p["connected"].as_bool() == Some(true) {
                    "connected".into()
                } else {
                    "offline".into()
                },
                if p["approved"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "pending".into()
                },
                cell(p.pointer("/meta/client_version")),
                match p.pointer("/meta/map_refusals").and_then(Value::as_array) {
                    Some(r) if !r.is_empty() => format!("{} refused", r.len()),
                    _ => "ok".into(),
                },
                time(p.get("last_seen_at")),
                cell(p.get("id")),
            ]
        })
        .collect();
    render(
        &[
            "NAME",
            "IP",
            "GROUPS",
            "STATUS",
            "APPROVED",
            "VERSION",
            "MAP",
            "LAST SEEN",
            "ID",
        ],
        &rows,
    )
}

fn map_text(v: &Value) -> String {
    let mut s = format!(
        "serial {}  address {}  fqdn {}\n\nremote peers:\n",
        cell(v.get("serial")),
        cell(v.pointer("/peer_config/address")),
        cell(v.pointer("/peer_config/fqdn"))
    );
    let rows: Vec<Vec<String>> = arr(&v["remote_peers"])
        .iter()
        .map(|p| {
            vec![
                cell(p.get("name")),
                cell(p.get("allowed_ips")),
                cell(p.get("wg_pubkey")),
            ]
        })
        .collect();
    s.push_str(&render(&["NAME", "ALLOWED IPS", "KEY"], &rows));
    s.push_str("\nroutes:\n");
    let peer_name = |id: Option<&Value>| -> String {
        let id = cell(id);
        arr(&v["remote_peers"])
            .iter()
            .find(|p| p["id"].as_str() == Some(id.as_str()))
            .map(|p| cell(p.get("name")))
            .unwrap_or_else(|| "(this peer)".into())
    };
    let rows: Vec<Vec<String>> = arr(&v["routes"])
        .iter()
        .map(|r| {
            let dest = if r["network"].is_null() {
                cell(r.get("domains"))
            } else {
                cell(r.get("network"))
            };
            vec![
                cell(r.get("net_id")),
                dest,
                peer_name(r.get("router_peer_id")),
                cell(r.get("metric")),
                cell(r.get("masquerade")),
            ]
        })
        .collect();
    s.push_str(&render(
        &["NET ID", "DESTINATION", "ROUTER", "METRIC", "MASQUERADE"],
        &rows,
    ));
    s.push_str("\nfirewall rules (peer ACL):\n");
    let rows: Vec<Vec<String>> = arr(&v["firewall_rules"])
        .iter()
        .map(|r| {
            vec![
                cell(r.get("direction")),
                cell(r.get("peer_ip")),
                cell(r.get("protocol")),
                cell(r.get("port")),
                cell(r.get("action")),
                cell(r.get("policy_id")),
            ]
        })
        .collect();
    s.push_str(&render(
        &["DIR", "PEER", "PROTO", "PORT", "ACTION", "POLICY"],
        &rows,
    ));
    s.push_str("\nroute firewall rules (route ACL):\n");
    let rows: Vec<Vec<String>> = arr(&v["route_firewall_rules"])
        .iter()
        .map(|r| {
            let dest = if r["destination"].is_null() {
                cell(r.get("domains"))
            } else {
                cell(r.get("destination"))
            };
            vec![
                cell(r.get("source_ranges")),
                dest,
                cell(r.get("protocol")),
                cell(r.get("port")),
                cell(r.get("action")),
                cell(r.get("policy_id")),
            ]
        })
        .collect();
    s.push_str(&render(
        &[
            "SOURCES",
            "DESTINATION",
            "PROTO",
            "PORT",
            "ACTION",
            "POLICY",
        ],
        &rows,
    ));
    s
}

fn policies_table(v: &Value) -> String {
    let mut rows = Vec::new();
    for p in arr(v) {
        for r in arr(&p["rules"]) {
            let side = |groups: &str, single: &str| -> String {
                match r.get(single) {
                    Some(t) if !t.is_null() => {
                        format!("{}:{}", cell(t.get("type")), cell(t.get("id")))
                    }
                    _ => cell(r.get(groups)),
                }
            };
            rows.push(vec![
                cell(p.get("name")),
                if p["enabled"].as_bool() == Some(true) && r["enabled"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                side("sources", "source_resource"),
                side("destinations", "destination_resource"),
                cell(r.get("protocol")),
                {
                    // Single ports, then ranges (NetBird's `port_ranges`).
                    let mut ports: Vec<String> = arr(&r["ports"])
                        .iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect();
                    ports.extend(
                        arr(&r["port_ranges"])
                            .iter()
                            .map(|p| format!("{}-{}", p["start"], p["end"])),
                    );
                    if ports.is_empty() {
                        "-".to_string()
                    } else {
                        ports.join(",")
                    }
                },
                cell(r.get("action")),
                if r["bidirectional"].as_bool() == Some(true) {
                    "<->"
                } else {
                    "->"
                }
                .into(),
                cell(p.get("id")),
            ]);
        }
    }
    render(
        &[
            "NAME",
            "ENABLED",
            "SOURCES",
            "DESTINATIONS",
            "PROTO",
            "PORTS",
            "ACTION",
            "DIR",
            "ID",
        ],
        &rows,
    )
}

/// Replaces group ids in JSON arrays by names, for tables.
fn group_names(c: &Client, v: &mut Value, fields: &[&str]) -> Result<(), ClientError> {
    let groups = c.get("/api/groups")?;
    let name = |id: &str| -> String {
        arr(&groups)
            .iter()
            .find(|g| g["id"] == id)
            .and_then(|g| g["name"].as_str())
            .unwrap_or(id)
            .to_string()
    };
    let fix = |x: &mut Value| {
        for f in fields {
            if let Some(a) = x.get_mut(*f).and_then(Value::as_array_mut) {
                for g in a.iter_mut() {
                    if let Some(id) = g.as_str() {
                        *g = Value::String(name(id));
                    } else if let Some(n) = g.get("name").and_then(Value::as_str) {
                        // NetBird's group objects carry their name.
                        *g = Value::String(n.to_string());
                    }
                }
            }
        }
    };
    if let Some(items) = v.as_array_mut() {
        for it in items {
            fix(it);
            if let Some(rules) = it.get_mut("rules").and_then(Value::as_array_mut) {
                for r in rules {
                    fix(r);
                }
            }
        }
    }
    Ok(())
}

/// The token the client sends: `--token`, else the contents of `--token-file`, else of
/// `admin-token` in `$SWIFTGATE_DATA_DIR` (default `.`) if it exists, else none.
fn client_token(cli: &Cli) -> Result<Option<String>, CliError> {
    if let Some(t) = &cli.token {
        return Ok(Some(t.trim().to_string()));
    }
    let (path, must_exist) = match &cli.token_file {
        Some(p) => (p.clone(), true),
        None => (
            std::env::var_os("SWIFTGATE_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(crate::server::ADMIN_TOKEN_FILE),
            false,
        ),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        Ok(_) => Err(CliError::TokenFile {
            path: path.display().to_string(),
            why: "the file is empty".into(),
        }),
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::TokenFile {
            path: path.display().to_string(),
            why: e.to_string(),
        }),
    }
}

/// Runs a client command against the API; `serve` is handled by the binary.
pub fn run_client(cli: &Cli) -> Result<(), CliError> {
    let c = Client::new(&cli.api, client_token(cli)?);
    let out = Out { json: cli.json };
    let e = CliError::Api;
    match &cli.command {
        Command::Serve(_) => return Err(CliError::NotClient("serve")),
        Command::Peers(cmd) => match cmd {
            PeersCmd::Ls => out.print(&c.get("/api/peers").map_err(e)?, peers_table),
            PeersCmd::Show { peer } => {
                let v = c.get(&format!("/api/peers/{}", segment(peer))).map_err(e)?;
                out.print(&v, |v| peers_table(&json!([v])));
            }
            PeersCmd::Register {
                setup_key,
                wg_key,
                name,
            } => {
                let v = c
                    .post(
                        "/api/peers",
                        Some(&json!({"setup_key": setup_key, "wg_pubkey": wg_key, "name": name})),
                    )
                    .map_err(e)?;
                out.print(&v, |v| {
                    format!(
                        "registered peer {} with {}\n",
                        cell(v.get("name")),
                        cell(v.get("ip"))
                    )
                });
            }
            PeersCmd::Approve { peer } => {
                let v = c
                    .post::<Value>(&format!("/api/peers/{}/approve", segment(peer)), None)
                    .map_err(e)?;
                out.print(&v, done("approved peer"));
            }
            PeersCmd::Rename { peer, name } => {
                let v = c
                    .put(
                        &format!("/api/peers/{}", segment(peer)),
                        &json!({"name": name}),
                    )
                    .map_err(e)?;
                out.print(&v, done("renamed peer to"));
            }
            PeersCmd::SetGroups { peer, groups } => {
                let v = c
                    .put(
                        &format!("/api/peers/{}", segment(peer)),
                        &json!({"groups": groups}),
                    )
                    .map_err(e)?;
                out.print(&v, |v| {
                    format!(
                        "peer {} is in {}\n",
                        cell(v.get("name")),
                        cell(v.get("group_names"))
                    )
                });
            }
            PeersCmd::Rm { peer } => {
                let v = c
                    .delete(&format!("/api/peers/{}", segment(peer)))
                    .map_err(e)?;
                out.print(&v, done("deleted peer"));
            }
            PeersCmd::Map { peer } => {
                let v = c
                    .get(&format!("/api/peers/{}/network-map", segment(peer)))
                    .map_err(e)?;
                out.print(&v, map_text);
            }
            PeersCmd::Posture { peer } => {
                let v = c
                    .get(&format!("/api/peers/{}/posture", segment(peer)))
                    .map_err(e)?;
                out.print(&v, posture::posture_text);
            }
        },
        Command::Groups(cmd) => match cmd {
            GroupsCmd::Ls => out.print(&c.get("/api/groups").map_err(e)?, |v| {
                let rows: Vec<Vec<String>> = arr(v)
                    .iter()
                    .map(|g| {
                        vec![
                            cell(g.get("name")),
                            arr(&g["peers"]).len().to_string(),
                            arr(&g["resources"]).len().to_string(),
                            cell(g.get("description")),
                            cell(g.get("id")),
                        ]
                    })
                    .collect();
                render(&["NAME", "PEERS", "RESOURCES", "DESCRIPTION", "ID"], &rows)
            }),
            GroupsCmd::Add {
                name,
                description,
                peers,
            } => {
                let mut body = json!({"name": name, "description": description});
                if !peers.is_empty() {
                    body["peers"] = json!(peers);
                }
                out.print(
                    &c.post("/api/groups", Some(&body)).map_err(e)?,
                    done("created group"),
                );
            }
            GroupsCmd::Rm { group } => {
                let v = c
                    .delete(&format!("/api/groups/{}", segment(group)))
                    .map_err(e)?;
                out.print(&v, done("deleted group"));
            }
        },
        Command::Networks(cmd) => match cmd {
            NetworksCmd::Ls => out.print(&c.get("/api/networks").map_err(e)?, |v| {
                let rows: Vec<Vec<String>> = arr(v)
                    .iter()
                    .map(|n| {
                        vec![
                            cell(n.get("name")),
                            cell(n.get("resources_count")),
                            cell(n.get("routers_count")),
                            cell(n.get("description")),
                            cell(n.get("id")),
                        ]
                    })
                    .collect();
                render(
                    &["NAME", "RESOURCES", "ROUTERS", "DESCRIPTION", "ID"],
                    &rows,
                )
            }),
            NetworksCmd::Add { name, description } => {
                let v = c
                    .post(
                        "/api/networks",
                        Some(&json!({"name": name, "description": description})),
                    )
                    .map_err(e)?;
                out.print(&v, done("created network"));
            }
            NetworksCmd::Rm { network } => {
                let v = c
                    .delete(&format!("/api/networks/{}", segment(network)))
                    .map_err(e)?;
                out.print(&v, done("deleted network"));
            }
        },
        Command::Resources(cmd) => match cmd {
            ResourcesCmd::Ls { network } => {
                let path = match network {
                    Some(n) => format!("/api/networks/{}/resources", segment(n)),
                    None => "/api/resources".into(),
                };
                let mut v = c.get(&path).map_err(e)?;
                if !out.json {
                    group_names(&c, &mut v, &["groups"]).map_err(e)?;
                }
                out.print(&v, |v| {
                    let rows: Vec<Vec<String>> = arr(v)
                        .iter()
                        .map(|r| {
                            vec![
                                cell(r.get("name")),
                                cell(r.get("network_name")),
                                cell(r.get("type")),
                                cell(r.get("address")),
                                cell(r.get("groups")),
                                cell(r.get("enabled")),
                                cell(r.get("id")),
                            ]
                        })
                        .collect();
                    render(
                        &[
                            "NAME", "NETWORK", "TYPE", "ADDRESS", "GROUPS", "ENABLED", "ID",
                        ],
                        &rows,
                    )
                });
            }
            ResourcesCmd::Add {
                network,
                name,
                address,
                groups,
                description,
                disabled,
            } => {
                let v = c
                    .post(
                        &format!("/api/networks/{}/resources", segment(network)),
                        Some(&json!({
                            "name": name, "address": address, "groups": groups,
                            "description": description, "enabled": !disabled,
                        })),
                    )
                    .map_err(e)?;
                out.print(&v, done("created resource"));
            }
            ResourcesCmd::Rm { network, resource } => {
                let v = c
                    .delete(&format!(
                        "/api/networks/{}/resources/{}",
                        segment(network),
                        segment(resource)
                    ))
                    .map_err(e)?;
                out.print(&v, done("deleted resource"));
            }
        },
        Command::Routers(cmd) => match cmd {
            RoutersCmd::Ls { network } => {
                let mut v = c
                    .get(&format!("/api/networks/{}/routers", segment(network)))
                    .map_err(e)?;
                if !out.json {
                    group_names(&c, &mut v, &["peer_groups"]).map_err(e)?;
                }
                out.print(&v, |v| {
                    let rows: Vec<Vec<String>> = arr(v)
                        .iter()
                        .map(|r| {
                            vec![
                                cell(r.get("id")),
                                cell(r.get("peer_name")),
                                cell(r.get("peer_groups")),
                                cell(r.get("metric")),
                                cell(r.get("masquerade")),
                                cell(r.get("enabled")),
                            ]
                        })
                        .collect();
                    render(
                        &[
                            "ID",
                            "PEER",
                            "PEER GROUPS",
                            "METRIC",
                            "MASQUERADE",
                            "ENABLED",
                        ],
                        &rows,
                    )
                });
            }
            RoutersCmd::Add {
                network,
                peer,
                peer_groups,
                metric,
                no_masquerade,
            } => {
                let v = c
                    .post(
                        &format!("/api/networks/{}/routers", segment(network)),
                        Some(&json!({
                            "peer": peer, "peer_groups": peer_groups, "metric": metric,
                            "masquerade": !no_masquerade,
                        })),
                    )
                    .map_err(e)?;
                out.print(&v, |v| {
                    format!(
                        "added router {} to network {} ({})\n",
                        v.get("peer_name")
                            .filter(|x| !x.is_null())
                            .map(|x| cell(Some(x)))
                            .unwrap_or_else(|| cell(v.get("peer_groups"))),
                        cell(v.get("network_name")),
                        cell(v.get("id"))
                    )
                });
            }
            RoutersCmd::Rm { network, router } => {
                let v = c
                    .delete(&format!(
                        "/api/networks/{}/routers/{}",
                        segment(network),
                        segment(router)
                    ))
                    .map_err(e)?;
                out.print(&v, |v| format!("removed router {}\n", cell(v.get("id"))));
            }
        },
        Command::Policies(cmd) => match cmd {
            PoliciesCmd::Ls => {
                let mut v = c.get("/api/policies").map_err(e)?;
                if !out.json {
                    group_names(&c, &mut v, &["sources", "destinations"]).map_err(e)?;
                }
                out.print(&v, policies_table);
            }
            PoliciesCmd::Show { policy } => {
                let v = c
                    .get(&format!("/api/policies/{}", segment(policy)))
                    .map_err(e)?;
                let mut list = json!([v]);
                if !out.json {
                    group_names(&c, &mut list, &["sources", "destinations"]).map_err(e)?;
                }
                out.print(&v, |_| policies_table(&list));
            }
            PoliciesCmd::Add(a) => {
                let body = policy_body(a)?;
                out.print(
                    &c.post("/api/policies", Some(&body)).map_err(e)?,
                    done("created policy"),
                );
            }
            PoliciesCmd::Enable { policy } => {
                let v = c
                    .post::<Value>(&format!("/api/policies/{}/enable", segment(policy)), None)
                    .map_err(e)?;
                out.print(&v, done("enabled policy"));
            }
            PoliciesCmd::Disable { policy } => {
                let v = c
                    .post::<Value>(&format!("/api/policies/{}/disable", segment(policy)), None)
                    .map_err(e)?;
                out.print(&v, done("disabled policy"));
            }
            PoliciesCmd::Rm { policy } => {
                let v = c
                    .delete(&format!("/api/policies/{}", segment(policy)))
                    .map_err(e)?;
                out.print(&v, done("deleted policy"));
            }
        },
        Command::SetupKeys(cmd) => match cmd {
            SetupKeysCmd::Ls => {
                let mut v = c.get("/api/setup-keys").map_err(e)?;
                if !out.json {
                    group_names(&c, &mut v, &["auto_groups"]).map_err(e)?;
                }
                out.print(&v, |v| {
                    let rows: Vec<Vec<String>> = arr(v)
                        .iter()
                        .map(|k| {
                            let state = if k["valid"].as_bool() == Some(true) {
                                "valid".to_string()
                            } else {
                                cell(k.get("invalid_reason"))
                            };
                            vec![
                                cell(k.get("name")),
                                format!("{}...", cell(k.get("key_prefix"))),
                                cell(k.get("type")),
                                cell(k.get("auto_groups")),
                                format!(
                                    "{}/{}",
                                    cell(k.get("used_times")),
                                    match k["usage_limit"].as_u64() {
                                        Some(0) | None => "unlimited".to_string(),
                                        Some(n) => n.to_string(),
                                    }
                                ),
                                time(k.get("expires_at")),
                                cell(k.get("ephemeral")),
                                state,
                            ]
                        })
                        .collect();
                    render(
                        &[
                            "NAME",
                            "KEY",
                            "TYPE",
                            "AUTO GROUPS",
                            "USED",
                            "EXPIRES",
                            "EPHEMERAL",
                            "STATE",
                        ],
                        &rows,
                    )
                });
            }
            SetupKeysCmd::Create {
                name,
                one_off,
                auto_groups,
                expires_in,
                usage_limit,
                ephemeral,
            } => {
                let expires = match expires_in {
                    Some(s) => Some(parse_duration(s)?),
                    None => None,
                };
                let v = c
                    .post(
                        "/api/setup-keys",
                        Some(&json!({
                            "name": name,
                            "kind": if *one_off { "one-off" } else { "reusable" },
                            "auto_groups": auto_groups,
                            "expires_in_secs": expires,
                            "usage_limit": usage_limit,
                            "ephemeral": ephemeral,
                        })),
                    )
                    .map_err(e)?;
                out.print(&v, |v| {
                    format!(
                        "created setup key {} ({})\nkey: {}\n(store it now: it is not shown again)\n",
                        cell(v.get("name")),
                        cell(v.get("id")),
                        cell(v.get("key"))
                    )
                });
            }
            SetupKeysCmd::Revoke { key } => {
                let v = c
                    .post::<Value>(&format!("/api/setup-keys/{}/revoke", segment(key)), None)
                    .map_err(e)?;
                out.print(&v, done("revoked setup key"));
            }
            SetupKeysCmd::Rm { key } => {
                let v = c
                    .delete(&format!("/api/setup-keys/{}", segment(key)))
                    .map_err(e)?;
                out.print(&v, done("deleted setup key"));
            }
        },
        Command::Posture(cmd) => match cmd {
            PostureCmd::Ls => out.print(&c.get("/api/posture-checks").map_err(e)?, |v| {
                let rows: Vec<Vec<String>> = arr(v)
                    .iter()
                    .map(|p| {
                        let checks = p["checks"]
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .filter(|(_, v)| !v.is_null())
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .unwrap_or_default();
                        vec![cell(p.get("name")), checks, cell(p.get("id"))]
                    })
                    .collect();
                render(&["NAME", "CHECKS", "ID"], &rows)
            }),
            PostureCmd::Add {
                name,
                min_client_version,
                min_os,
                network_ranges,
                range_action,
                processes,
                description,
            } => {
                let mut checks = json!({});
                if let Some(v) = min_client_version {
                    checks["nb_version_check"] = json!({ "min_version": v });
                }
                if !min_os.is_empty() {
                    let mut os = json!({});
                    for kv in min_os {
                        let (k, v) = split_kv("--min-os", kv)?;
                        let field = if matches!(k, "linux" | "windows") {
                            "min_kernel_version"
                        } else {
                            "min_version"
                        };
                        os[k] = json!({ field: v });
                    }
                    checks["os_version_check"] = os;
                }
                if !network_ranges.is_empty() {
                    checks["peer_network_range_check"] =
                        json!({ "ranges": network_ranges, "action": range_action });
                }
                if !processes.is_empty() {
                    let mut spec = json!({});
                    for kv in processes {
                        let (k, v) = split_kv("--process", kv)?;
                        let field = match k {
                            "linux" => "linux_path",
                            "darwin" | "mac" | "macos" => "mac_path",
                            "windows" => "windows_path",
                            other => {
                                return Err(CliError::Flag {
                                    flag: "--process",
                                    text: format!("{other}=..."),
                                    expected: "use linux=, darwin= or windows=",
                                });
                            }
                        };
                        spec[field] = json!(v);
                    }
                    checks["process_check"] = json!({ "processes": [spec] });
                }
                let v = c
                    .post(
                        "/api/posture-checks",
                        Some(&json!({"name": name, "description": description, "checks": checks})),
                    )
                    .map_err(e)?;
                out.print(&v, done("created posture check"));
            }
            PostureCmd::Rm { check } => {
                let v = c
                    .delete(&format!("/api/posture-checks/{}", segment(check)))
                    .map_err(e)?;
                out.print(&v, done("deleted posture check"));
            }
        },
        Command::Settings(cmd) => match cmd {
            SettingsCmd::Show => out.print(&c.get("/api/settings").map_err(e)?, settings_text),
            SettingsCmd::Set {
                peer_approval,
                ephemeral_offline_secs,
                dns_domain,
                overlay_range,
                overlay_range_v6,
                ipv6_groups,
            } => {
                let mut body = json!({});
                if let Some(v) = peer_approval {
                    body["peer_approval_required"] = json!(v);
                }
                if let Some(v) = ephemeral_offline_secs {
                    body["ephemeral_offline_secs"] = json!(v);
                }
                if let Some(v) = dns_domain {
                    body["dns_domain"] = json!(v);
                }
                if let Some(v) = overlay_range {
                    body["overlay_range"] = json!(v);
                }
                if let Some(v) = overlay_range_v6 {
                    body["overlay_range_v6"] = json!(v);
                }
                if let Some(v) = ipv6_groups {
                    let groups: Vec<&String> = v.iter().filter(|g| !g.trim().is_empty()).collect();
                    body["ipv6_enabled_groups"] = json!(groups);
                }
                out.print(&c.put("/api/settings", &body).map_err(e)?, settings_text);
            }
        },
    }
    Ok(())
}

fn settings_text(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| vec![k.clone(), cell(Some(v))])
                .collect()
        })
        .unwrap_or_default();
    render(&["SETTING", "VALUE"], &rows)
}

fn policy_body(a: &PolicyAddArgs) -> Result<Value, CliError> {
    if let Some(path) = &a.from_json {
        let file = |why: String| CliError::PolicyFile {
            path: path.display().to_string(),
            why,
        };
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| file(e.to_string()))?
        } else {
            std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?
        };
        return serde_json::from_str(&text).map_err(|e| file(e.to_string()));
    }
    let target =
        |kind: &str, id: &Option<String>| id.as_ref().map(|i| json!({"type": kind, "id": i}));
    let src = target("resource", &a.src_resource).or_else(|| target("peer", &a.src_peer));
    let dst = target("resource", &a.dst_resource).or_else(|| target("peer", &a.dst_peer));
    let mut body = json!({
        "name": a.name,
        "description": a.description,
        "enabled": !a.disabled,
        "protocol": a.protocol,
        "action": a.action,
        "bidirectional": a.bidirectional,
        "ports": a.ports,
        "source_posture_checks": a.posture_checks,
    });
    if !a.sources.is_empty() {
        body["sources"] = json!(a.sources);
    }
    if !a.destinations.is_empty() {
        body["destinations"] = json!(a.destinations);
    }
    if let Some(s) = src {
        body["source_resource"] = s;
    }
    if let Some(d) = dst {
        body["destination_resource"] = d;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86400);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("12h").unwrap(), 43200);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "swiftgate-management",
            "policies",
            "add",
            "dev-to-apps",
            "--src",
            "Development",
            "--dst",
            "Internal Apps",
            "--protocol",
            "tcp",
            "--ports",
            "443,8000-8080",
        ])
        .unwrap();
        let Command::Policies(PoliciesCmd::Add(a)) = c.command else {
            panic!("wrong command")
        };
        let b = policy_body(&a).unwrap();
        assert_eq!(b["ports"], json!(["443", "8000-8080"]));
        assert_eq!(b["destinations"], json!(["Internal Apps"]));
        let c = Cli::try_parse_from([
            "swiftgate-management",
            "settings",
            "set",
            "--ipv6-groups",
            "All,Ops",
        ])
        .unwrap();
        let Command::Settings(SettingsCmd::Set { ipv6_groups, .. }) = c.command else {
            panic!("wrong command")
        };
        assert_eq!(
            ipv6_groups,
            Some(vec!["All".to_string(), "Ops".to_string()])
        );
    }
}
