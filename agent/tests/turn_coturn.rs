//! `swiftgate::turn` against a real TURN server: coturn (Debian's `turnserver`, installed by
//! scripts/bootstrap.sh) on loopback with the TURN REST-API shared secret. One allocation
//! relays between its own socket and a plain UDP socket standing for the remote peer, in
//! Send/Data indications before the channel is bound and in ChannelData after; wrong
//! credentials fail the allocation; release is accepted.
//!
//! The test fails, not skips, when `turnserver` is missing.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use swiftgate::turn::{Allocation, AllocationState, TurnError};

const SECRET: &str = "turn-client-test-secret";
/// The longest any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// coturn on 127.0.0.1, killed (and its scratch directory removed) when dropped, also when
/// the test fails.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Coturn {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("coturn.log")).unwrap_or_default()
    }
}

fn start_coturn() -> Coturn {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    start_coturn_on(port)
}

/// coturn on 127.0.0.1:`port` (again, after a restart).
fn start_coturn_on(port: u16) -> Coturn {
    let relay = 40_000 + (port % 20_000);
    let dir = std::env::temp_dir().join(format!("swiftgate-turn-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    let child = Command::new("turnserver")
        .args([
            "-n".to_string(),
            "--listening-ip=127.0.0.1".into(),
            "--relay-ip=127.0.0.1".into(),
            format!("--listening-port={port}"),
            format!("--min-port={relay}"),
            format!("--max-port={}", relay + 50),
            "--use-auth-secret".into(),
            format!("--static-auth-secret={SECRET}"),
            "--realm=swiftgate.test".into(),
            "--allow-loopback-peers".into(),
            "--no-cli".into(),
            "--no-tls".into(),
            "--no-dtls".into(),
            "--no-stdout-log".into(),
            "--simple-log".into(),
            format!("--log-file={}", path("coturn.log")),
            format!("--pidfile={}", path("coturn.pid")),
            format!("--userdb={}", path("coturn.db")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("turnserver (coturn) is missing ({e}): run scripts/bootstrap.sh (./x test does)")
        });
    let c = Coturn {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    };
    // Up when it answers a STUN Binding request with a Binding success; bounded.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"swiftgate-up");
    let t0 = Instant::now();
    loop {
        sock.send_to(&req, c.addr).unwrap();
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && n >= 20
            && buf[..2] == [0x01, 0x01]
            && buf[8..20] == req[8..20]
        {
            return c;
        }
        assert!(t0.elapsed() < STEP, "coturn did not answer:\n{}", c.log());
    }
}

/// TURN REST-API credentials: `<expiry>:<id>`, base64(HMAC-SHA1(secret, username)).
fn credentials(secret: &str, id: &str) -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let username = format!("{expiry}:{id}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

fn random_id() -> [u8; 12] {
    let mut id = [0u8; 12];
    getrandom::fill(&mut id).unwrap();
    id
}

/// The client side: an allocation and its socket.
struct Client {
    a: Allocation,
    sock: UdpSocket,
    /// ChannelBind requests kept back (while the test wants indications).
    held: Vec<Vec<u8>>,
    hold_channel_binds: bool,
}

/// What one datagram from the server gave: its first two bytes and `handle`'s answer.
type Handled = ([u8; 2], Result<Option<(SocketAddr, Vec<u8>)>, TurnError>);

impl Client {
    fn new(server: SocketAddr, username: String, password: String) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let a = Allocation::new(server, username, password, Instant::now(), random_id);
        Client {
            a,
            sock,
            held: Vec::new(),
            hold_channel_binds: false,
        }
    }

    /// One round: sends what is queued, takes one datagram (if one comes within 20 ms),
    /// runs the timers.
    fn turn(&mut self) -> Option<Handled> {
        while let Some((to, b)) = self.a.poll_transmit() {
            assert_eq!(to, self.a.server());
            if self.hold_channel_binds && b[..2] == [0x00, 0x09] {
                self.held.push(b);
            } else {
                self.sock.send_to(&b, to).unwrap();
            }
        }
        let mut buf = [0u8; 2048];
        let got = match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((
                [buf[0], buf[1]],
                self.a.handle(from, &buf[..n], Instant::now()),
            )),
            Err(_) => None,
        };
        self.a.handle_timeout(Instant::now());
        got
    }

    /// Rounds until `done` (bounded by [`STEP`]); errors from `handle` fail the test.
    fn until(&mut self, c: &Coturn, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let t0 = Instant::now();
        while !done(self) {
            if let Some((_, Err(e))) = self.turn() {
                panic!("{what}: {e}\n{}", c.log());
            }
            assert!(
                t0.elapsed() < STEP,
                "{what}: not within {STEP:?} ({:?})\n{}",
                self.a.state(),
                c.log()
            );
        }
    }
}

/// Sends `payload` to `peer` through the relay until the peer gets it (the permission may
/// not be installed yet); returns the framing used and where it came from.
fn to_peer(
    c: &Coturn,
    client: &mut Client,
    peer: &UdpSocket,
    payload: &[u8],
) -> ([u8; 2], SocketAddr) {
    let to = peer.local_addr().unwrap();
    let t0 = Instant::now();
    loop {
        let mut out = Vec::new();
        assert!(client.a.encode_to(to, payload, &mut out));
        client.sock.send_to(&out, c.addr).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = peer.recv_from(&mut buf) {
            assert_eq!(&buf[..n], payload);
            return ([out[0], out[1]], from);
        }
        if let Some((_, Err(e))) = client.turn() {
            panic!("to the peer: {e}\n{}", c.log());
        }
        assert!(t0.elapsed() < STEP, "the peer got nothing\n{}", c.log());
    }
}

/// Sends `payload` from the peer to the relayed address until `handle` gives it back;
/// returns the framing it came in.
fn from_peer(c: &Coturn, client: &mut Client, peer: &UdpSocket, payload: &[u8]) -> [u8; 2] {
    let relayed = client.a.relayed().unwrap();
    let t0 = Instant::now();
    loop {
        peer.send_to(payload, relayed).unwrap();
        match client.turn() {
            Some((head, Ok(Some((from, got))))) => {
                assert_eq!(from, peer.local_addr().unwrap());
                assert_eq!(got, payload);
                return head;
            }
            Some((_, Err(e))) => panic!("from the peer: {e}\n{}", c.log()),
            _ => {}
        }
        assert!(
            t0.elapsed() < STEP,
            "nothing relayed from the peer\n{}",
            c.log()
        );
    }
}

#[test]
fn relays_through_coturn_in_indications_then_channel_data() {
    let c = start_coturn();
    let (user, password) = credentials(SECRET, "alice");
    let mut client = Client::new(c.addr, user, password);
    client.until(&c, "allocate", |cl| cl.a.relayed().is_some());
    let relayed = client.a.relayed().unwrap();
    assert_eq!(relayed.ip(), c.addr.ip(), "coturn's relay address");
    assert_eq!(client.a.mapped(), Some(client.sock.local_addr().unwrap()));
    let AllocationState::Allocated { lifetime, .. } = client.a.state() else {
        unreachable!()
    };
    eprintln!("relayed {relayed}, lifetime {lifetime:?}");

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    // Before the ChannelBind: Send indication out, Data indication in.
    client.hold_channel_binds = true;
    client.a.bind(peer_addr, Instant::now());
    let (framing, from) = to_peer(&c, &mut client, &peer, b"wireguard datagram 1");
    assert_eq!(framing, [0x00, 0x16], "a Send indication");
    assert_eq!(from, relayed);
    let framing = from_peer(&c, &mut client, &peer, b"answer 1");
    assert_eq!(framing, [0x00, 0x17], "a Data indication");
    assert_eq!(client.a.channel_of(peer_addr), None);

    // After: ChannelData both ways.
    client.hold_channel_binds = false;
    for b in std::mem::take(&mut client.held) {
        client.sock.send_to(&b, c.addr).unwrap();
    }
    client.until(&c, "channel bind", |cl| {
        cl.a.channel_of(peer_addr).is_some()
    });
    assert_eq!(client.a.channel_of(peer_addr), Some(0x4000));
    let (framing, from) = to_peer(&c, &mut client, &peer, b"wireguard datagram 2");
    assert_eq!(framing, [0x40, 0x00], "ChannelData");
    assert_eq!(from, relayed);
    let framing = from_peer(&c, &mut client, &peer, b"answer 2");
    assert_eq!(framing, [0x40, 0x00], "ChannelData");

    // Release: a Refresh with LIFETIME 0, whose success is taken quietly.
    client.a.release();
    assert_eq!(
        client.a.state(),
        &AllocationState::Failed(TurnError::Released)
    );
    let t0 = Instant::now();
    loop {
        match client.turn() {
            // Late copies of the peer's datagrams: no longer taken.
            Some(([0x40, _] | [0x00, 0x17], r)) => assert!(r.is_err()),
            Some((head, r)) => {
                assert_eq!(head, [0x01, 0x04], "a Refresh success");
                assert_eq!(r, Ok(None));
                break;
            }
            None => assert!(t0.elapsed() < STEP, "release unanswered\n{}", c.log()),
        }
    }
}

#[test]
fn wrong_credentials_fail_the_allocation() {
    let c = start_coturn();
    let (user, _) = credentials(SECRET, "mallory");
    let (_, other) = credentials("not-the-secret", "mallory");
    let mut client = Client::new(c.addr, user, other);
    client.until(&c, "refusal", |cl| {
        matches!(cl.a.state(), AllocationState::Failed(_))
    });
    assert_eq!(
        client.a.state(),
        &AllocationState::Failed(TurnError::Unauthorized)
    );
}

#[test]
fn an_early_refresh_keeps_the_allocation_and_a_lost_one_fails() {
    let c = start_coturn();
    let (user, pass) = credentials(SECRET, "carol");
    let mut client = Client::new(c.addr, user, pass);
    client.until(&c, "allocation", |cl| cl.a.relayed().is_some());
    let relayed = client.a.relayed();
    // Asked again at once and a little later: the server still has it.
    for _ in 0..2 {
        client.a.refresh_now(Instant::now());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(300) {
            if let Some((_, Err(e))) = client.turn() {
                panic!("refresh: {e}\n{}", c.log());
            }
        }
        assert!(
            matches!(client.a.state(), AllocationState::Allocated { .. }),
            "{:?}\n{}",
            client.a.state(),
            c.log()
        );
        assert_eq!(client.a.relayed(), relayed);
    }
}

#[test]
fn after_a_server_restart_the_lost_allocation_fails_and_a_new_one_lasts() {
    let c = start_coturn();
    let (user, pass) = credentials(SECRET, "dave");
    let mut client = Client::new(c.addr, user.clone(), pass.clone());
    client.until(&c, "allocation", |cl| cl.a.relayed().is_some());
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    client.a.bind(peer.local_addr().unwrap(), Instant::now());
    client.until(&c, "channel", |cl| {
        cl.a.channel_of(peer.local_addr().unwrap()).is_some()
    });
    let _ = to_peer(&c, &mut client, &peer, b"before");
    let port = c.addr.port();
    drop(c);
    let c = start_coturn_on(port);
    // The restarted server first hears ChannelData on a channel it never bound (the
    // agent's traffic goes on), then the check.
    for _ in 0..5 {
        let mut out = Vec::new();
        assert!(
            client
                .a
                .encode_to(peer.local_addr().unwrap(), b"lost", &mut out)
        );
        client.sock.send_to(&out, c.addr).unwrap();
    }
    client.a.refresh_now(Instant::now());
    client.until(&c, "the lost allocation noticed", |cl| {
        matches!(cl.a.state(), AllocationState::Failed(_))
    });
    // Allocating again from the same socket (the same 5-tuple, as the agent must).
    client.a = Allocation::new(c.addr, user, pass, Instant::now(), random_id);
    client.until(&c, "a new allocation", |cl| cl.a.relayed().is_some());
    client.a.bind(peer.local_addr().unwrap(), Instant::now());
    client.until(&c, "channel again", |cl| {
        cl.a.channel_of(peer.local_addr().unwrap()).is_some()
    });
    let _ = to_peer(&c, &mut client, &peer, b"after");
    let _ = from_peer(&c, &mut client, &peer, b"after, back");
    // ChannelData on a channel this allocation never bound (the agent's WireGuard still
    // going to the lost allocation's channel until ICE moves it).
    for _ in 0..3 {
        client
            .sock
            .send_to(&[0x4f, 0xff, 0x00, 0x04, 1, 2, 3, 4], c.addr)
            .unwrap();
    }
    for _ in 0..2 {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            let _ = client.turn();
        }
        client.a.refresh_now(Instant::now());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(300) {
            let _ = client.turn();
        }
        assert!(
            matches!(client.a.state(), AllocationState::Allocated { .. }),
            "{:?}\n{}",
            client.a.state(),
            c.log()
        );
    }
}
