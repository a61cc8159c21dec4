//! ICE connectivity checks against an implementation we did not write: aioice (PyPI, pinned
//! and installed by scripts/bootstrap.sh) on one side of a link between two namespaces,
//! swiftgate's [`swiftgate::ice::Ice`] (the `is` agent, driven as the agent drives it) on the
//! other, over real UDP sockets. Credentials and candidates cross as Signal carries them
//! (`ufrag:pwd`, `candidate:` lines). Both roles: swiftgate controlling (it nominates with
//! USE-CANDIDATE), and aioice controlling. Each side then sends a datagram on the selected
//! pair and the other receives it. The test fails, not skips, when aioice is missing.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swiftgate::ice::{Ice, Message};
use swiftgate_proto::keys::PublicKey;
use swiftgate_testkit::wg::Lab;

/// Reads one JSON line from the child, within `timeout`.
fn read_line(r: &mut BufReader<std::process::ChildStdout>, timeout: Duration) -> Value {
    // Bounded by the script's own timeouts (every wait in it is); the time is checked after.
    let start = Instant::now();
    let mut line = String::new();
    let n = r.read_line(&mut line).expect("reading aioice's output");
    assert!(n > 0, "aioice exited without answering");
    assert!(start.elapsed() < timeout, "aioice answered too late");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("aioice said {line:?}: {e}"))
}

/// One run, swiftgate controlling or not.
fn run(swiftgate_controls: bool) {
    let mut lab = Lab::new();
    let (ours, theirs) = (lab.ns("sg"), lab.ns("aio"));
    lab.link(ours, "eth0", "192.0.2.1/24", theirs, "eth0", "192.0.2.2/24");

    // NetBird's rule: the higher base64 key controls ("AAAA..." sorts above "////...").
    let (me, peer) = if swiftgate_controls {
        (
            PublicKey::from_bytes([0; 32]),
            PublicKey::from_bytes([0xff; 32]),
        )
    } else {
        (
            PublicKey::from_bytes([0xff; 32]),
            PublicKey::from_bytes([0; 32]),
        )
    };
    let mut child = lab
        .n(theirs)
        .spawn(
            Command::new(swiftgate_testkit::pyenv_python())
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ice/aioice_peer.py"))
                .args(if swiftgate_controls {
                    vec![]
                } else {
                    vec!["--controlling"]
                })
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .expect("python with aioice: run scripts/bootstrap.sh");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let hello = read_line(&mut out, Duration::from_secs(20));

    let result = lab.n(ours).run(move || {
        let sock = UdpSocket::bind("192.0.2.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let local = sock.local_addr().unwrap();
        let mut ice = Ice::new(&me);
        assert_eq!(ice.controls(&peer), swiftgate_controls);
        ice.add_local(is::Candidate::host(local, "udp").unwrap());
        let start = std::time::Instant::now();
        ice.set_peers(&[peer], start);
        // What we would send through Signal: our offer and candidates, to aioice's stdin.
        let mut creds = None;
        let mut lines = Vec::new();
        while let Some((_, m)) = ice.poll_signal() {
            match m {
                Message::Offer(c) => creds = Some(c),
                Message::Candidate(l) => lines.push(l),
                Message::Answer(_) => {}
            }
        }
        let creds = creds.expect("an offer");
        writeln!(
            stdin,
            "{}",
            json!({"ufrag": creds.ufrag, "pwd": creds.pass, "candidates": lines})
        )
        .unwrap();
        // What aioice would send through Signal.
        let theirs = is::IceCreds {
            ufrag: hello["ufrag"].as_str().unwrap().into(),
            pass: hello["pwd"].as_str().unwrap().into(),
        };
        ice.on_signal(peer, Message::Answer(theirs), start);
        for c in hello["candidates"].as_array().unwrap() {
            ice.on_signal(peer, Message::Candidate(c.as_str().unwrap().into()), start);
        }
        // Drive it as the agent does, until nominated and aioice's datagram is in.
        let deadline = start + Duration::from_secs(25);
        let mut got_hello = false;
        let mut buf = [0u8; 1500];
        let mut nominated = None;
        while std::time::Instant::now() < deadline && !(got_hello && nominated.is_some()) {
            let now = std::time::Instant::now();
            ice.handle_timeout(now);
            while let Some(d) = ice.poll_transmit() {
                sock.send_to(&d.contents, d.destination).unwrap();
            }
            while let Some((_, n)) = ice.poll_nominated() {
                nominated = n;
            }
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let d = &buf[..n];
                if d == b"hello from aioice" {
                    got_hello = true;
                } else {
                    assert!(
                        ice.handle_stun(from, local, d, std::time::Instant::now()),
                        "a datagram from aioice that ICE did not take: {d:?}"
                    );
                }
            }
        }
        let state = ice.peer(&peer).unwrap();
        assert!(
            got_hello,
            "aioice's datagram on the selected pair: {state:?}"
        );
        let n = nominated.unwrap_or_else(|| panic!("no nomination: {state:?}"));
        assert!(state.state.is_connected(), "{state:?}");
        assert_eq!(n.local, local);
        sock.send_to(b"hello from swiftgate", n.remote).unwrap();
        // Keep answering aioice's checks while it finishes.
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            let now = std::time::Instant::now();
            ice.handle_timeout(now);
            while let Some(d) = ice.poll_transmit() {
                let _ = sock.send_to(&d.contents, d.destination);
            }
            if let Ok((k, from)) = sock.recv_from(&mut buf) {
                ice.handle_stun(from, local, &buf[..k], now);
            }
        }
        (n, stdin)
    });
    let (n, _stdin) = result.expect("running in the namespace");
    let report = read_line(&mut out, Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(report["connected"], true, "aioice: {report}");
    assert_eq!(report["received"], "hello from swiftgate", "{report}");
    let selected: Vec<String> = report["selected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    // Both sides agree on the pair.
    assert_eq!(selected[0].parse::<SocketAddr>().unwrap(), n.remote);
    assert_eq!(selected[1].parse::<SocketAddr>().unwrap(), n.local);
}

#[test]
fn swiftgate_controlling_nominates_a_pair_aioice_takes() {
    run(true);
}

#[test]
fn aioice_controlling_nominates_a_pair_swiftgate_takes() {
    run(false);
}
