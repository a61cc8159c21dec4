//! `swiftgate up`: load, attach, apply, then keep the maps in step (reload on SIGHUP, garbage
//! collection, flow events) until SIGINT/SIGTERM. Pinned state is left in place on exit so
//! established flows keep flowing while no agent runs.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use swiftgate_common::{Counter, FlowEvent, event_kind, maps};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    config::AgentConfig,
    dataplane::{self, Dataplane, LoadOptions},
    mgmt,
    netmap::Refusal,
    policy, routing, signal,
    wg::Device,
};

/// A running routing peer: the eBPF data plane and, when the agent runs the tunnel itself,
/// the WireGuard device and the routing table into it.
pub struct Running {
    /// The data plane.
    pub dp: Dataplane,
    /// WireGuard.
    pub wg: Option<Arc<Device>>,
    /// Routes into the overlay (with WireGuard).
    pub table: Option<routing::Table>,
}

/// What the routing table should hold for `cfg`.
fn wanted_routes(cfg: &AgentConfig, underlay: &BTreeSet<IpAddr>) -> routing::Wanted {
    routing::Wanted {
        prefixes: cfg.routes.iter().copied().collect(),
        underlay: underlay.clone(),
    }
}

/// Starts WireGuard (when configured) with its routes, then the data plane on its interface.
/// `underlay`: addresses the agent itself talks to outside the tunnel (management, Signal).
pub fn bring_up_all(cfg: &AgentConfig, underlay: &BTreeSet<IpAddr>) -> Result<Running> {
    let wg = match &cfg.wireguard {
        Some(w) => Some(Arc::new(Device::start(w)?)),
        None => None,
    };
    let table = match wg {
        Some(_) => {
            let mut t = routing::Table::new(&cfg.overlay);
            t.apply(&wanted_routes(cfg, underlay))?;
            Some(t)
        }
        None => None,
    };
    let dp = bring_up(cfg)?;
    Ok(Running { dp, wg, table })
}

/// [`reload`] plus WireGuard peers and routes. Checked first, so a refused configuration
/// changes nothing.
pub fn reload_all(
    r: &mut Running,
    old: &AgentConfig,
    new: &AgentConfig,
    underlay: &BTreeSet<IpAddr>,
) -> Result<()> {
    match (&r.wg, &new.wireguard, &old.wireguard) {
        (Some(_), Some(n), Some(o)) => {
            if n.private != o.private
                || n.iface != o.iface
                || n.listen_port != o.listen_port
                || n.workers != o.workers
            {
                anyhow::bail!(
                    "private key, interface, listen port and workers cannot change while running (restart the agent)"
                );
            }
        }
        (None, None, _) => {}
        _ => anyhow::bail!("turning WireGuard on or off needs a restart of the agent"),
    }
    reload(&mut r.dp, old, new)?;
    if let (Some(dev), Some(w)) = (&r.wg, &new.wireguard) {
        dev.update(w)?;
        if let Some(t) = &mut r.table {
            t.apply(&wanted_routes(new, underlay))?;
        }
    }
    Ok(())
}

/// What the agent could not apply of the configuration in force, for `swiftgate status`.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Entries of the last network map not applied as sent.
    pub refused: Vec<Refusal>,
    /// Why the last map (by serial) could not be applied at all, if it could not.
    pub map_error: Option<(u64, String)>,
}

impl Health {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "refused": self.refused.iter().map(|r| serde_json::json!({
                "object": r.object.to_string(),
                "reason": r.reason,
                "effect": r.effect.name(),
            })).collect::<Vec<_>>(),
            "map_error": self.map_error.as_ref().map(|(serial, e)| serde_json::json!({"serial": serial, "error": e})),
        })
    }
}

/// Logs the refusals of a newly converted map that were not already refused before.
fn log_refusals(old: &[Refusal], new: &[Refusal], serial: u64) {
    for r in new.iter().filter(|r| !old.contains(r)) {
        tracing::warn!(serial, object = %r.object, reason = %r.reason, effect = ?r.effect, "network map entry not applied as sent");
    }
}

/// Answers one control request (`{"cmd": "status"}` or `{"cmd": "rekey"}`).
fn control(
    wg: Option<&Device>,
    cfg: &AgentConfig,
    health: &Health,
    line: &str,
) -> serde_json::Value {
    use serde_json::json;
    let cmd = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("cmd").and_then(|c| c.as_str()).map(String::from))
        .unwrap_or_default();
    match (cmd.as_str(), wg) {
        ("status", Some(d)) => json!({
            "interface": d.iface(),
            "listen_port": d.listen_port(),
            "reflexive": d.reflexive(),
            "peers": d.status(),
            "drops": d.drops(),
            "tun_writes": d.tun_io(),
            "map": health.json(),
        }),
        ("status", None) => {
            json!({"interface": cfg.overlay, "wireguard": null, "map": health.json()})
        }
        ("rekey", Some(d)) => {
            d.rekey();
            json!({"ok": true})
        }
        ("rekey", None) => json!({"error": "this agent does not run WireGuard"}),
        (other, _) => json!({"error": format!("unknown command `{other}`")}),
    }
}

async fn serve_control(
    listener: &UnixListener,
    wg: Option<Arc<Device>>,
    cfg: AgentConfig,
    health: Health,
) {
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    tokio::spawn(async move {
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        if let Ok(Some(line)) = lines.next_line().await {
            let reply = control(wg.as_deref(), &cfg, &health, &line);
            let _ = wr.write_all(format!("{reply}\n").as_bytes()).await;
        }
    });
}

/// Interval of conntrack garbage collection.
pub const GC_INTERVAL: Duration = Duration::from_secs(10);

/// Logs what the pressure watcher finds after a garbage-collection pass.
fn warn_pressure(
    watch: &mut dataplane::pressure::Watch,
    state: &dataplane::State,
    tables: dataplane::TableUse,
) {
    use dataplane::pressure::{Refusals, Warning};
    let counters = match state.counters() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading the packet counters");
            return;
        }
    };
    let get = |c: Counter| {
        counters
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, v)| *v)
    };
    let now = Refusals {
        full: get(Counter::DropCtFull),
        share: get(Counter::DropCtShare),
        early_drops: get(Counter::CtEarlyDrop),
    };
    for w in watch.observe(tables, now, || state.sources()) {
        match w {
            Warning::Filling { percent, tables } => tracing::warn!(
                percent = format!("{percent:.1}"),
                flows_v4 = tables.flows4,
                capacity_v4 = tables.capacity4,
                flows_v6 = tables.flows6,
                capacity_v6 = tables.capacity6,
                "conntrack table filling up: new flows will replace unreplied ones, then be refused"
            ),
            Warning::Eased { percent } => {
                tracing::info!(
                    percent = format!("{percent:.1}"),
                    "conntrack table use back to normal"
                )
            }
            Warning::Refused {
                full,
                share,
                early_drops,
                top,
            } => {
                let top: Vec<String> = top
                    .iter()
                    .map(|s| format!("{} ({} flows, {} refused)", s.source, s.flows, s.refused))
                    .collect();
                tracing::warn!(
                    refused_table_full = full,
                    refused_source_share = share,
                    early_drops,
                    top_sources = %top.join(", "),
                    "conntrack under pressure since the last check"
                );
            }
        }
    }
}

/// Sets everything up for `cfg` and returns the loaded data plane.
pub fn bring_up(cfg: &AgentConfig) -> Result<Dataplane> {
    let kcfg = dataplane::kernel_config(cfg)?;
    let compiled = policy::compile(cfg);
    let mut ifaces: Vec<&str> = vec![cfg.overlay.as_str()];
    ifaces.extend(cfg.lan.iter().map(String::as_str));
    dataplane::enable_forwarding(&ifaces)?;
    let mut dp = Dataplane::load(&LoadOptions::from_config(cfg))?;
    // Maps first, then programs: a freshly attached program never sees empty maps.
    dp.set_kernel_config(kcfg)?;
    let st = dp.apply(&compiled)?;
    tracing::info!(
        upserts = st.upserts,
        removals = st.removals,
        rules = cfg.rules.len(),
        "maps applied"
    );
    dp.attach(cfg)?;
    Ok(dp)
}

/// Applies a new configuration to a running data plane; on error nothing changes (the maps
/// keep the previous configuration).
pub fn reload(dp: &mut Dataplane, old: &AgentConfig, new: &AgentConfig) -> Result<()> {
    if new.pin_path != old.pin_path
        || new.conntrack_capacity != old.conntrack_capacity
        || new.conntrack_capacity_v6 != old.conntrack_capacity_v6
    {
        anyhow::bail!(
            "pin_path and conntrack_capacity cannot change while running (restart the agent)"
        );
    }
    let kcfg = dataplane::kernel_config(new)?;
    let compiled = policy::compile(new);
    if let Err(e) = dp.apply(&compiled) {
        // Put the previous tables back so nothing stays half-applied.
        let _ = dp.apply(&policy::compile(old));
        return Err(e);
    }
    dp.set_kernel_config(kcfg)?;
    if new.overlay != old.overlay
        || new.lan != old.lan
        || new.overlay_l2 != old.overlay_l2
        || new.xdp != old.xdp
    {
        dp.attach(new)?;
    }
    Ok(())
}

fn log_event(ev: &FlowEvent) {
    let k = &ev.key;
    let kind = match ev.kind {
        event_kind::START => "start",
        event_kind::END => "end",
        event_kind::DROP => "drop",
        _ => "unknown",
    };
    let reason = Counter::ALL
        .get(ev.reason as usize)
        .map(|c| c.name())
        .unwrap_or("");
    tracing::debug!(
        target: "flow",
        event = kind,
        reason,
        policy_id = ev.policy_id,
        proto = k.proto,
        src = %dataplane::addr(&k.saddr, k.family),
        dst = %dataplane::addr(&k.daddr, k.family),
        sport = k.sport,
        dport = k.dport,
        packets = ev.packets,
        bytes = ev.bytes,
    );
}

/// Where configurations come from.
// One value per run: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// A static file; `SIGHUP` re-reads it.
    File(PathBuf),
    /// A NetBird-compatible management server.
    Management {
        /// Server URL (`http://host:port`).
        url: String,
        /// Setup key for the first login.
        setup_key: Option<String>,
        /// Where the peer key and the last map are kept.
        state_dir: PathBuf,
        /// Local settings (interfaces, ports, paths).
        local: mgmt::Local,
    },
}

/// Waits for the first map from the management server (or a termination signal).
async fn first_map(rx: &mut mpsc::Receiver<mgmt::Update>) -> Result<mgmt::Update> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        u = rx.recv() => u.context("the management sync stopped"),
        _ = term.recv() => anyhow::bail!("terminated before the first network map"),
        _ = int.recv() => anyhow::bail!("interrupted before the first network map"),
    }
}

/// Runs the agent until a termination signal.
pub async fn up(source: Source) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<mgmt::Update>(4);
    let mut signal_url: Option<String> = None;
    // STUN/TURN servers, as the management server announces them (with fresh credentials).
    let (servers_tx, servers_rx) = tokio::sync::watch::channel(crate::connect::Servers::default());
    let mut signal_keys: Option<swiftgate_proto::keys::KeyPair> = None;
    let mut health = Health::default();
    let mut cfg = match &source {
        Source::File(path) => AgentConfig::from_file(path)?,
        Source::Management {
            url,
            setup_key,
            state_dir,
            local,
        } => {
            let keys = mgmt::load_or_create_key(state_dir)?;
            tracing::info!(public_key = %keys.public().to_base64(), "peer key");
            signal_keys = Some(keys.clone());
            // Fail-static: the last map applied is used until the server answers.
            let last = mgmt::load_last(state_dir).and_then(|r| mgmt::update_of(local, &keys, &r));
            tokio::spawn(mgmt::sync(
                url.clone(),
                setup_key.clone(),
                state_dir.clone(),
                local.clone(),
                keys,
                tx,
                servers_tx.clone(),
            ));
            let u = match last {
                Some(Ok(u)) => {
                    tracing::info!(serial = u.serial, "starting from the last network map");
                    u
                }
                _ => {
                    tracing::info!(%url, "waiting for the first network map");
                    first_map(&mut rx).await?
                }
            };
            signal_url = u.signal;
            // Until the server answers, the servers of the last map.
            servers_tx.send_if_modified(|cur| {
                let empty = *cur == crate::connect::Servers::default();
                if empty {
                    *cur = u.servers.clone();
                }
                empty
            });
            log_refusals(&[], &u.converted.refused, u.serial);
            health.refused = u.converted.refused;
            u.converted.config
        }
    };
    // The servers the agent talks to outside the tunnel.
    let underlay_of = |signal: &Option<String>| -> BTreeSet<IpAddr> {
        let mut u = BTreeSet::new();
        if let Source::Management { url, .. } = &source {
            u.extend(routing::underlay_of(url));
        }
        if let Some(s) = signal {
            u.extend(routing::underlay_of(s));
        }
        u
    };
    let mut underlay = underlay_of(&signal_url);
    let mut running = bring_up_all(&cfg, &underlay)?;
    let mut state = running.dp.state()?;
    // Peers' endpoints through Signal (managed mode with WireGuard).
    let peer_keys = |c: &AgentConfig| -> Vec<swiftgate_proto::keys::PublicKey> {
        c.wireguard
            .iter()
            .flat_map(|w| w.peers.iter().map(|p| p.public))
            .collect()
    };
    let (peers_tx, peers_rx) = tokio::sync::watch::channel(peer_keys(&cfg));
    let (trust, relay_key) = match &source {
        Source::Management { local, .. } => (local.trust.clone(), local.server_key.clone()),
        Source::File(_) => Default::default(),
    };
    // Started once: taking the keys marks it started.
    let mut start_signal = |url: &Option<String>, running: &Running, cfg: &AgentConfig| {
        if let (Some(url), Some(dev), Some(w)) = (url, &running.wg, &cfg.wireguard)
            && let Some(keys) = signal_keys.take()
        {
            // Signal <-> the connection driver (discovery, relays, ICE) <-> the device.
            let (events_tx, events_rx) = mpsc::channel(256);
            let (out_tx, out_rx) = mpsc::channel(1024);
            let driver = tokio::spawn(crate::connect::run(
                dev.clone(),
                *keys.public(),
                w.iface.clone(),
                crate::connect::Inputs {
                    peers: peers_rx.clone(),
                    servers: servers_rx.clone(),
                    signal_in: events_rx,
                    signal_out: out_tx,
                },
            ));
            tokio::spawn(signal::run(
                signal::Server {
                    url: url.clone(),
                    trust: trust.clone(),
                    relay_key: relay_key.clone(),
                },
                keys,
                dev.listen_port(),
                events_tx,
                out_rx,
                dev.clone(),
            ));
            return Some(driver);
        }
        None
    };
    let mut driver = start_signal(&signal_url, &running, &cfg);
    if let Some(dir) = cfg.control_socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&cfg.control_socket);
    let listener = UnixListener::bind(&cfg.control_socket).with_context(|| {
        format!(
            "binding the control socket {}",
            cfg.control_socket.display()
        )
    })?;
    let ring = MapData::from_pin(cfg.pin_path.join("maps").join(maps::EVENTS))
        .context("opening the flow event ring buffer")?;
    let mut events = RingBuf::try_from(aya::maps::Map::from_map_data(ring)?)?;
    eprintln!("swiftgate up: ready");
    tracing::info!(overlay = %cfg.overlay, lan = ?cfg.lan, "ready");

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut gc = tokio::time::interval(GC_INTERVAL);
    let mut watch = dataplane::pressure::Watch::new(cfg.ct_warn_percent);
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let Source::File(path) = &source else {
                    tracing::info!("SIGHUP ignored: the configuration comes from the management server");
                    continue;
                };
                match AgentConfig::from_file(path).map_err(anyhow::Error::from).and_then(|new| {
                    reload_all(&mut running, &cfg, &new, &underlay)?;
                    Ok(new)
                }) {
                    Ok(new) => {
                        tracing::info!(rules = new.rules.len(), "configuration reloaded");
                        cfg = new;
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "reload refused; previous configuration stays in force"),
                }
            }
            Some(u) = rx.recv() => {
                let mgmt::Update { serial, converted, signal, servers: _ } = u;
                log_refusals(&health.refused, &converted.refused, serial);
                let new = converted.config;
                if signal.is_some() && signal != signal_url {
                    signal_url = signal;
                    underlay = underlay_of(&signal_url);
                    // Only the underlay may have moved: keep the new Signal server outside the
                    // tunnel even when the map itself is unchanged.
                    if let Some(t) = &mut running.table
                        && let Err(e) = t.apply(&wanted_routes(&cfg, &underlay))
                    {
                        tracing::warn!(error = %format!("{e:#}"), "keeping the Signal server outside the tunnel");
                    }
                }
                if new == cfg {
                    tracing::debug!(serial, "identical map, nothing to apply");
                } else if let Err(e) = reload_all(&mut running, &cfg, &new, &underlay) {
                    let e = format!("{e:#}");
                    tracing::error!(error = %e, serial, "network map refused; previous one stays in force");
                    health.map_error = Some((serial, e));
                    continue;
                } else {
                    tracing::info!(serial, rules = new.rules.len(), refused = converted.refused.len(), "network map applied");
                    cfg = new;
                    let _ = peers_tx.send(peer_keys(&cfg));
                }
                health.refused = converted.refused;
                health.map_error = None;
                // Also when the map is unchanged: an agent that started from its saved map
                // without a Signal server (one named only at login) starts Signal now.
                if let Some(started) = start_signal(&signal_url, &running, &cfg) {
                    driver = Some(started);
                }
            }
            _ = serve_control(&listener, running.wg.clone(), cfg.clone(), health.clone()) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = gc.tick() => {
                match state.gc(dataplane::monotonic_ns(), &cfg.ct_timeouts) {
                    Ok(s) => {
                        if s.expired + s.orphans + s.forgotten > 0 {
                            tracing::debug!(scanned = s.scanned, expired = s.expired, orphans = s.orphans, forgotten_sources = s.forgotten, "conntrack gc");
                        }
                        watch.warn_percent = cfg.ct_warn_percent;
                        warn_pressure(&mut watch, &state, s.tables);
                    }
                    Err(e) => tracing::warn!(error = %e, "conntrack gc"),
                }
            }
            _ = poll.tick() => {
                let mut n = 0;
                while let Some(item) = events.next() {
                    if item.len() >= std::mem::size_of::<FlowEvent>() {
                        // SAFETY: the programs write whole FlowEvent records; the length was
                        // checked and read_unaligned copes with any alignment.
                        let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) };
                        log_event(&ev);
                    }
                    n += 1;
                    if n >= 4096 { break; }
                }
            }
        }
    }
    tracing::info!(
        "stopping; programs stay attached and maps pinned (`swiftgate down` removes them)"
    );
    let _ = std::fs::remove_file(&cfg.control_socket);
    // The connection driver sees the peer list close and gives its TURN allocations back
    // (while WireGuard's port can still send); not waited for long.
    drop(peers_tx);
    if let Some(driver) = driver {
        let _ = tokio::time::timeout(Duration::from_millis(500), driver).await;
    }
    drop(events);
    if let Some(t) = &mut running.table {
        t.clear();
    }
    if let Some(d) = running.wg.take().and_then(|d| Arc::try_unwrap(d).ok()) {
        d.stop();
    }
    Ok(())
}
