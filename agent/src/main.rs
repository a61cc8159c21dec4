//! `swiftgate`: the routing-peer agent and its inspection commands.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use swiftgate::{
    config::AgentConfig,
    dataplane::{self, State, addr},
    run,
};
use swiftgate_common::{PIN_ROOT, ct_flags, origin};

#[derive(Parser)]
#[command(
    name = "swiftgate",
    version,
    about = "Zero-trust routing peer with an eBPF fast path"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a peer: from a static configuration file (SIGHUP reloads it), or from a
    /// NetBird-compatible management server.
    Up {
        /// TOML configuration (see docs/config.md).
        #[arg(
            long,
            conflicts_with = "management_url",
            required_unless_present = "management_url"
        )]
        config: Option<PathBuf>,
        /// Management server URL: `https://host:port` (or `host:port`), or `http://host:port`
        /// for a server without TLS (the agent warns).
        #[arg(long)]
        management_url: Option<String>,
        /// A certificate (PEM) to trust for the management and Signal servers besides the
        /// system's roots: their CA, or the server's self-signed certificate
        /// (`<data-dir>/grpc-cert.pem` of swiftgate-management).
        #[arg(long, requires = "management_url")]
        management_ca: Option<PathBuf>,
        /// Setup key for the first login.
        #[arg(long, requires = "management_url")]
        setup_key: Option<String>,
        /// Where the peer key and the last network map are kept.
        #[arg(long, default_value = "/var/lib/swiftgate")]
        state_dir: PathBuf,
        /// Overlay interface (created by the agent).
        #[arg(long, default_value = "sg0")]
        interface: String,
        /// LAN interfaces for the networks this peer routes (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        lan: Vec<String>,
        /// WireGuard listen port.
        #[arg(long, default_value_t = 51820)]
        listen_port: u16,
        /// bpffs directory for pinned state.
        #[arg(long)]
        pin_path: Option<PathBuf>,
        /// Control socket.
        #[arg(long)]
        control_socket: Option<PathBuf>,
        /// Managed peers: conntrack table size, IPv4 flows (`[conntrack] capacity` of a file).
        #[arg(long, requires = "management_url")]
        conntrack_capacity: Option<u32>,
        /// Managed peers: the percent of the conntrack tables and masquerade ports one source
        /// may hold (`[conntrack] source_share`; default 25, 100 = no limit).
        #[arg(long, requires = "management_url")]
        conntrack_share: Option<u8>,
    },
    /// Detach the programs and remove all pinned state (and the agent's TUN, if named).
    Down {
        /// bpffs directory of the instance.
        #[arg(long, default_value = PIN_ROOT)]
        pin_path: PathBuf,
        /// The persistent TUN the agent created (`interface.overlay` with WireGuard).
        #[arg(long)]
        interface: Option<String>,
    },
    /// WireGuard peers of a running agent: endpoints, handshakes, traffic.
    Status(Control),
    /// Force a new handshake with every peer of a running agent.
    Rekey(Control),
    /// Validate a configuration file without applying it.
    Check {
        /// TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Tracked flows; with `--top`, the sources holding the most of the tables.
    Conntrack(ConntrackArgs),
    /// Masqueraded flows and their translations.
    Nat(Inspect),
    /// Packet counters by verdict and drop reason, and per-policy statistics.
    Counters(Inspect),
    /// Loaded programs and where they are attached.
    Programs(Inspect),
}

#[derive(clap::Args)]
struct Control {
    /// Control socket of the agent (`interface.control_socket`).
    #[arg(long, default_value = "/run/swiftgate/sg0.sock")]
    socket: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn ask(socket: &std::path::Path, cmd: &str) -> Result<serde_json::Value> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| anyhow::anyhow!("{}: {e} (is `swiftgate up` running?)", socket.display()))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    writeln!(s, "{}", json!({ "cmd": cmd }))?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("{e}");
    }
    Ok(v)
}

fn print_status(v: &serde_json::Value) {
    println!(
        "interface {}  listen port {}",
        v["interface"].as_str().unwrap_or("?"),
        v["listen_port"]
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let hs = p["last_handshake_s"]
            .as_f64()
            .map(|s| format!("{s:.0}s ago"))
            .unwrap_or_else(|| "never".into());
        let rtt = p["rtt_ms"]
            .as_u64()
            .map(|ms| format!("rtt {ms} ms"))
            .unwrap_or_default();
        println!(
            "  peer {:<20} {}  {:<10} {} endpoint {:<24} ({}) handshake {:<10} {} tx {} rx {}  allowed {}",
            p["name"].as_str().unwrap_or(""),
            p["public_key"].as_str().unwrap_or(""),
            p["state"].as_str().unwrap_or("?"),
            p["path"].as_str().unwrap_or("-"),
            p["endpoint"].as_str().unwrap_or("-"),
            p["endpoint_origin"].as_str().unwrap_or("-"),
            hs,
            rtt,
            p["tx_bytes"],
            p["rx_bytes"],
            p["allowed_ips"]
        );
    }
    if let Some(r) = v["reflexive"].as_array().filter(|r| !r.is_empty()) {
        let addrs: Vec<&str> = r.iter().filter_map(|a| a.as_str()).collect();
        println!("  server-reflexive {}", addrs.join(", "));
    }
    println!("  drops {}", v["drops"]);
    println!("  tun writes {}", v["tun_writes"]);
    let map = &v["map"];
    if let Some(e) = map["map_error"].as_object() {
        println!(
            "  network map {} NOT APPLIED (the previous one is in force): {}",
            e["serial"],
            e["error"].as_str().unwrap_or("")
        );
    }
    let refused = map["refused"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !refused.is_empty() {
        println!(
            "  network map entries not applied as sent: {}",
            refused.len()
        );
        for r in refused {
            println!(
                "    {} [{}]: {}",
                r["object"].as_str().unwrap_or(""),
                r["effect"].as_str().unwrap_or(""),
                r["reason"].as_str().unwrap_or("")
            );
        }
    }
}

#[derive(clap::Args)]
struct Inspect {
    /// bpffs directory of the instance.
    #[arg(long, default_value = PIN_ROOT)]
    pin_path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ConntrackArgs {
    #[command(flatten)]
    inspect: Inspect,
    /// List the N sources holding the most flows (default 10) instead of the flows: flows,
    /// masqueraded flows, share of the table, refusals.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10")]
    top: Option<usize>,
}

/// The sources holding the most of the tables (`swiftgate conntrack --top`).
fn print_top(state: &State, n: usize, json: bool) -> Result<()> {
    let tables = state.table_use();
    let rows: Vec<serde_json::Value> = state
        .sources()
        .into_iter()
        .take(n)
        .map(|s| {
            let capacity = if s.source.is_ipv4() {
                tables.capacity4
            } else {
                tables.capacity6
            };
            json!({
                "source": s.source.to_string(),
                "flows": s.flows,
                "nat_flows": s.nat_flows,
                "refused": s.refused,
                "share_percent": 100.0 * s.flows as f64 / f64::from(capacity.max(1)),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>10} {:>10} {:>8} {:>10}",
        "source", "flows", "nat_flows", "share", "refused"
    );
    for r in &rows {
        println!(
            "{:<40} {:>10} {:>10} {:>7.2}% {:>10}",
            r["source"].as_str().unwrap_or("?"),
            r["flows"],
            r["nat_flows"],
            r["share_percent"].as_f64().unwrap_or(0.0),
            r["refused"]
        );
    }
    println!(
        "tables: IPv4 {}/{} ({:.1}%), IPv6 {}/{}",
        tables.flows4,
        tables.capacity4,
        100.0 * tables.flows4 as f64 / f64::from(tables.capacity4.max(1)),
        tables.flows6,
        tables.capacity6
    );
    Ok(())
}

fn origin_name(o: u8) -> &'static str {
    match o {
        origin::OVERLAY => "overlay",
        origin::LAN => "lan",
        origin::HOST => "host",
        _ => "?",
    }
}

fn flows_json(state: &State, only_nat: bool) -> Vec<serde_json::Value> {
    let now = dataplane::monotonic_ns();
    // The running agent's timeouts (the defaults before one wrote them).
    let timeouts = state
        .kernel_config()
        .ok()
        .map(|k| k.ct_timeouts)
        .filter(|t| t.tcp_established != 0)
        .unwrap_or_default();
    state
        .flows()
        .into_iter()
        .filter(|f| !only_nat || f.entry.flags & ct_flags::SNAT != 0)
        .map(|f| {
            let k = &f.key;
            let e = &f.entry;
            let nat = (e.flags & ct_flags::SNAT != 0).then(|| {
                std::net::SocketAddr::new(addr(&e.nat_addr, k.family), e.nat_port).to_string()
            });
            json!({
                "proto": k.proto,
                "src": addr(&k.saddr, k.family).to_string(),
                "dst": addr(&k.daddr, k.family).to_string(),
                "sport": k.sport,
                "dport": k.dport,
                "origin": origin_name(e.origin),
                "nat": nat,
                "policy_id": e.policy_id,
                "packets_orig": e.packets_orig,
                "bytes_orig": e.bytes_orig,
                "packets_reply": e.packets_reply,
                "bytes_reply": e.bytes_reply,
                "idle_s": now.saturating_sub(e.last_seen_ns) / 1_000_000_000,
                "timeout_s": dataplane::timeout_secs(k, e, &timeouts),
                "flags": e.flags,
            })
        })
        .collect()
}

fn print_flows(rows: &[serde_json::Value], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<5} {:<40} {:<40} {:<8} {:<40} {:>8} {:>8} {:>6}",
        "proto", "source", "destination", "origin", "nat", "pkts>", "pkts<", "idle"
    );
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    for r in rows {
        let ep = |a: &str, p: &str| format!("{}:{}", text(&r[a]), text(&r[p]));
        println!(
            "{:<5} {:<40} {:<40} {:<8} {:<40} {:>8} {:>8} {:>5}s",
            text(&r["proto"]),
            ep("src", "sport"),
            ep("dst", "dport"),
            text(&r["origin"]),
            text(&r["nat"]),
            text(&r["packets_orig"]),
            text(&r["packets_reply"]),
            text(&r["idle_s"]),
        );
    }
    println!("{} flows", rows.len());
    Ok(())
}

fn programs(i: &Inspect) -> Result<()> {
    use aya::programs::{
        SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
    };
    let dir = i.pin_path.join("links");
    let mut rows = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e} (is the agent set up?)", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    for name in entries {
        let Some((ifname, hook)) = name.split_once('@') else {
            continue;
        };
        if hook == "xdp" {
            // One XDP link per interface: its program, through the pinned link.
            let id = PinnedLink::from_pin(dir.join(&name))
                .ok()
                .and_then(|l| FdLink::from(l).info().ok())
                .map(|li| li.program_id());
            let progs: Vec<String> = aya::programs::loaded_programs()
                .filter_map(|p| p.ok())
                .filter(|p| Some(p.id()) == id)
                .map(|p| format!("{}(id {})", p.name_as_str().unwrap_or("?"), p.id()))
                .collect();
            rows.push(
                json!({"interface": ifname, "hook": hook, "attach": "xdp", "programs": progs}),
            );
            continue;
        }
        let ty = if hook == "egress" {
            TcAttachType::Egress
        } else {
            TcAttachType::Ingress
        };
        let progs = SchedClassifier::query_tcx(ifname, ty)
            .map(|(_, infos)| {
                infos
                    .iter()
                    .map(|p| format!("{}(id {})", p.name_as_str().unwrap_or("?"), p.id()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        rows.push(json!({"interface": ifname, "hook": hook, "attach": "tcx", "programs": progs}));
    }
    if i.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{:<16} {:<8} {:<4} {}",
                r["interface"].as_str().unwrap_or(""),
                r["hook"].as_str().unwrap_or(""),
                r["attach"].as_str().unwrap_or(""),
                r["programs"]
            );
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWIFTGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swiftgate: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            config,
            management_url,
            setup_key,
            state_dir,
            interface,
            lan,
            listen_port,
            pin_path,
            control_socket,
            conntrack_capacity,
            conntrack_share,
            management_ca,
        } => {
            let trust = swiftgate_proto::client::Trust {
                extra_pem: match &management_ca {
                    Some(p) => Some(
                        std::fs::read(p)
                            .with_context(|| format!("--management-ca {}", p.display()))?,
                    ),
                    None => None,
                },
            };
            if let Some(url) = &management_url {
                if url.starts_with("http://") {
                    tracing::warn!(
                        %url,
                        "the management URL is http://: Signal messages and request metadata \
                         travel in clear (use https://)"
                    );
                }
                // Checked now: a bad URL or certificate stops the start.
                swiftgate_proto::client::endpoint_with(url, &trust)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let conntrack = swiftgate::config::ConntrackConfig {
                capacity: conntrack_capacity,
                source_share: conntrack_share,
                ..Default::default()
            };
            if management_url.is_some() {
                // Checked here, so a bad value stops the start instead of every network map.
                swiftgate::config::AgentConfig::local(
                    &swiftgate::config::InterfaceConfig {
                        overlay: interface.clone(),
                        ..Default::default()
                    },
                    &conntrack,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let source = match (config, management_url) {
                (Some(path), _) => run::Source::File(path),
                (None, Some(url)) => run::Source::Management {
                    url,
                    setup_key,
                    state_dir,
                    local: swiftgate::mgmt::Local {
                        overlay: interface,
                        lan,
                        listen_port,
                        pin_path,
                        control_socket,
                        workers: None,
                        conntrack,
                        trust,
                        server_key: Default::default(),
                    },
                },
                (None, None) => anyhow::bail!("give --config FILE or --management-url URL"),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(run::up(source))
        }
        Cmd::Down {
            pin_path,
            interface,
        } => {
            dataplane::remove_all(&pin_path)?;
            swiftgate::routing::remove_all();
            if let Some(i) = interface {
                swiftgate::wg::tun::remove(&i)?;
            }
            Ok(())
        }
        Cmd::Status(c) => {
            let v = ask(&c.socket, "status")?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(())
        }
        Cmd::Rekey(c) => ask(&c.socket, "rekey").map(|_| ()),
        Cmd::Check { config } => {
            let c = AgentConfig::from_file(&config)?;
            let compiled = swiftgate::policy::compile(&c);
            compiled.check_capacity()?;
            println!(
                "ok: {} peers, {} resources, {} rules -> {} identities, {} destinations, {} policy entries",
                c.peers.len(),
                c.resources.len(),
                c.rules.len(),
                compiled.identities.len(),
                compiled.dests.len(),
                compiled.policy.len()
            );
            Ok(())
        }
        Cmd::Conntrack(a) => {
            let st = State::open(&a.inspect.pin_path)?;
            match a.top {
                Some(n) => print_top(&st, n, a.inspect.json),
                None => print_flows(&flows_json(&st, false), a.inspect.json),
            }
        }
        Cmd::Nat(i) => print_flows(&flows_json(&State::open(&i.pin_path)?, true), i.json),
        Cmd::Counters(i) => {
            let st = State::open(&i.pin_path)?;
            let counters = st.counters()?;
            let policies = st.policy_stats();
            if i.json {
                let mut m = serde_json::Map::new();
                for (c, v) in &counters {
                    m.insert(c.name().into(), json!(v));
                }
                // Flat name -> number, per-policy figures as `policy.<id>.<what>`, the
                // tables' use as `conntrack.<what>`.
                let t = st.table_use();
                m.insert("conntrack.flows_v4".into(), json!(t.flows4));
                m.insert("conntrack.capacity_v4".into(), json!(t.capacity4));
                m.insert("conntrack.flows_v6".into(), json!(t.flows6));
                m.insert("conntrack.capacity_v6".into(), json!(t.capacity6));
                for (id, s) in &policies {
                    m.insert(
                        format!("policy.{id}.accepted_flows"),
                        json!(s.accepted_flows),
                    );
                    m.insert(
                        format!("policy.{id}.dropped_packets"),
                        json!(s.dropped_packets),
                    );
                }
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                for (c, v) in &counters {
                    println!("{:<22} {v}", c.name());
                }
                let t = st.table_use();
                println!(
                    "{:<22} IPv4 {}/{} ({:.1}%), IPv6 {}/{} ({:.1}%)",
                    "conntrack",
                    t.flows4,
                    t.capacity4,
                    100.0 * t.flows4 as f64 / f64::from(t.capacity4.max(1)),
                    t.flows6,
                    t.capacity6,
                    100.0 * t.flows6 as f64 / f64::from(t.capacity6.max(1)),
                );
                for (id, s) in &policies {
                    println!(
                        "policy {id:<12} accepted_flows {:<10} dropped_packets {}",
                        s.accepted_flows, s.dropped_packets
                    );
                }
            }
            Ok(())
        }
        Cmd::Programs(i) => programs(&i),
    }
}
