//! Server-reflexive discovery on the WireGuard port: asks the STUN servers the management
//! server announces where they see the port (through [`crate::stun::Reflexive`], sans-IO),
//! sends from the port itself so the NAT maps the requests as it maps WireGuard's packets, and
//! takes the answers the workers hand over. What it finds goes to the device (status) and to
//! Signal (offered to peers as `srflx` candidates).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::stun::{REFRESH, Reflexive, stun_host_port};
use crate::wg::Device;

/// Resolves `stun:` URIs to addresses (others are skipped; a name that does not resolve is
/// logged and skipped).
async fn resolve(uris: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for uri in uris {
        let Some((host, port)) = stun_host_port(uri) else {
            continue;
        };
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                out.extend(addrs.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())))
            }
            Err(e) => tracing::warn!(%uri, error = %e, "STUN server does not resolve"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// 96 random bits from the operating system (a transaction id).
fn random_id() -> crate::stun::TransactionId {
    let mut id = [0u8; 12];
    if getrandom::fill(&mut id).is_err() {
        // No OS randomness: still unique per request, though guessable; logged.
        tracing::warn!("no OS randomness for STUN transaction ids");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id.copy_from_slice(&t.to_le_bytes()[..12]);
    }
    id
}

/// Runs discovery until `stuns` closes: `stuns` carries the announced STUN URIs, `found`
/// receives the reflexive addresses whenever they change. Names are resolved again every
/// [`REFRESH`] (sooner while none resolved), so a server that moves, or a resolver that was
/// not up at start, is followed.
pub async fn run(
    device: Arc<Device>,
    mut stuns: watch::Receiver<Vec<String>>,
    found: watch::Sender<Vec<SocketAddr>>,
) {
    let Some(mut inbox) = device.stun_inbox(64) else {
        tracing::warn!("STUN discovery already running");
        return;
    };
    let mut uris = stuns.borrow_and_update().clone();
    let mut state = Reflexive::new(resolve(&uris).await, random_id);
    let mut published: Vec<SocketAddr> = Vec::new();
    let mut resolve_every = Duration::from_secs(2);
    let mut next_resolve = Instant::now() + resolve_every;
    loop {
        for (to, msg) in state.poll(std::time::Instant::now()) {
            if let Err(e) = device.send_from_port(to, &msg) {
                tracing::debug!(server = %to, error = %e, "STUN request not sent");
            }
        }
        // What is offered and shown follows what the servers say (also when a server is
        // forgotten or withdrawn).
        let now_seen = state.addresses();
        if now_seen != published {
            tracing::info!(reflexive = ?now_seen, "server-reflexive addresses");
            device.set_reflexive(now_seen.clone());
            let _ = found.send(now_seen.clone());
            published = now_seen;
        }
        let due = state
            .next_due()
            .map(Instant::from_std)
            .unwrap_or(next_resolve)
            .min(next_resolve);
        tokio::select! {
            changed = stuns.changed() => {
                if changed.is_err() {
                    return;
                }
                uris = stuns.borrow_and_update().clone();
                state.set_servers(resolve(&uris).await);
            }
            Some((from, d)) = inbox.recv() => {
                match state.answer(from, &d, std::time::Instant::now()) {
                    Ok(Some(mapped)) => tracing::debug!(server = %from, reflexive = %mapped, "mapping seen"),
                    Ok(None) => {}
                    Err(e) => {
                        device.count_stun_ignored();
                        tracing::debug!(%from, error = %e, "STUN datagram ignored");
                    }
                }
            }
            _ = tokio::time::sleep_until(due) => {
                if Instant::now() >= next_resolve {
                    let servers = resolve(&uris).await;
                    // Backing off while nothing resolves; every REFRESH once something did.
                    resolve_every = if servers.is_empty() && !uris.is_empty() {
                        (resolve_every * 2).min(REFRESH)
                    } else {
                        REFRESH
                    };
                    next_resolve = Instant::now() + resolve_every;
                    state.set_servers(servers);
                }
            }
        }
    }
}
