//! Server-reflexive discovery on the WireGuard port: asks the STUN servers the management
//! server announces where they see the port (through [`crate::stun::Reflexive`], sans-IO),
//! sends from the port itself so the NAT maps the requests as it maps WireGuard's packets, and
//! takes the answers the workers hand over. What it finds goes to the device (status) and to
//! Signal (offered to peers as `srflx` candidates).

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::stun::{Reflexive, stun_host_port};
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

/// A number off-path senders cannot guess (seeded from the OS by the standard library).
fn salt() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Runs discovery until `stuns` closes: `stuns` carries the announced STUN URIs, `found`
/// receives the reflexive addresses whenever they change.
pub async fn run(
    device: Arc<Device>,
    mut stuns: watch::Receiver<Vec<String>>,
    found: watch::Sender<Vec<SocketAddr>>,
) {
    let Some(mut inbox) = device.stun_inbox(64) else {
        tracing::warn!("STUN discovery already running");
        return;
    };
    let uris = stuns.borrow_and_update().clone();
    let mut state = Reflexive::new(resolve(&uris).await, salt());
    loop {
        for (to, msg) in state.poll(std::time::Instant::now()) {
            if let Err(e) = device.send_from_port(to, &msg) {
                tracing::debug!(server = %to, error = %e, "STUN request not sent");
            }
        }
        let wait = state
            .next_due()
            .map(|t| t.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            changed = stuns.changed() => {
                if changed.is_err() {
                    return;
                }
                let uris = stuns.borrow_and_update().clone();
                state.set_servers(resolve(&uris).await);
            }
            Some((from, d)) = inbox.recv() => {
                match state.answer(from, &d, std::time::Instant::now()) {
                    Ok(Some(mapped)) => {
                        tracing::info!(server = %from, reflexive = %mapped, "server-reflexive address");
                        let all = state.addresses();
                        device.set_reflexive(all.clone());
                        let _ = found.send(all);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(%from, error = %e, "STUN datagram ignored"),
                }
            }
            _ = tokio::time::sleep_until(Instant::now() + wait) => {}
        }
    }
}
