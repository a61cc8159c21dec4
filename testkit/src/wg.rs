//! WireGuard test lab: namespaces joined by veth underlays, stock wireguard-go peers and
//! swiftgate agents running WireGuard, all removed on drop (also when a test panics).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{Agent, NetNs, require_root, swiftgate_bin, unique_id};

/// Runs a command (in a namespace, or here) and returns its trimmed stdout; panics on failure.
pub fn sh(ns: Option<&NetNs>, args: &[&str]) -> String {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    let out = match ns {
        Some(ns) => ns.output(&mut cmd).expect("command in namespace"),
        None => super::run_timeout(&mut cmd, None, super::CMD_TIMEOUT).expect("command"),
    };
    assert!(out.success(), "{args:?} failed: {}", out.stderr);
    out.stdout.trim().to_string()
}

/// A WireGuard key pair made by `wg` (the stock tools).
pub struct Keys {
    /// Private key (base64).
    pub private: String,
    /// Public key (base64).
    pub public: String,
}

/// The configuration of a swiftgate client 100.64.0.2 of the routing topology's gateway
/// (203.0.113.1:51820), routing the LAN 192.0.2.0/24 through it.
pub fn client_config(me: &Keys, gateway: &Keys, mtu: u16) -> String {
    format!(
        r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.2/16"]
private_key = "{}"
listen_port = 0
mtu = {mtu}
[[peers]]
name = "gateway"
ips = ["100.64.0.1"]
groups = ["gw"]
public_key = "{}"
endpoint = "203.0.113.1:51820"
allowed_ips = ["192.0.2.0/24"]
keepalive = 1
"#,
        me.private, gateway.public
    )
}

/// A fresh WireGuard key pair from `wg genkey` / `wg pubkey`.
pub fn keys() -> Keys {
    let private = sh(None, &["wg", "genkey"]);
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Keys {
        private,
        public: String::from_utf8(out.stdout).unwrap().trim().to_string(),
    }
}

/// Everything a test builds; torn down on drop, also when the test panics.
pub struct Lab {
    /// Unique prefix of everything created.
    pub id: String,
    /// Work directory (configs, logs).
    pub dir: PathBuf,
    namespaces: Vec<NetNs>,
    stock: Vec<Child>,
    /// UAPI sockets of the stock interfaces (wireguard-go leaves them behind when killed).
    stock_sockets: Vec<PathBuf>,
    /// Agents: agent, namespace name, pin path, control socket.
    pub agents: Vec<(Agent, String, PathBuf, PathBuf)>,
}

impl Lab {
    /// An empty lab: bpffs mounted, a unique id and a work directory (removed on drop).
    #[allow(clippy::new_without_default)] // creates things on the host: not a default value
    pub fn new() -> Lab {
        require_root();
        super::ensure_bpffs().expect("bpffs");
        let id = unique_id();
        let dir = std::env::temp_dir().join(format!("swiftgate-wg-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            id,
            dir,
            namespaces: vec![],
            stock: vec![],
            stock_sockets: vec![],
            agents: vec![],
        }
    }

    /// Creates the namespace `<id><suffix>` (deleted with the lab) and returns its index.
    pub fn ns(&mut self, suffix: &str) -> usize {
        let ns = NetNs::create(&format!("{}{suffix}", self.id)).expect("netns");
        self.namespaces.push(ns);
        self.namespaces.len() - 1
    }

    /// The namespace with index `i`.
    pub fn n(&self, i: usize) -> &NetNs {
        &self.namespaces[i]
    }

    /// The routing-peer topology: namespaces client, gateway and LAN (their indices, in that
    /// order), the client's underlay 203.0.113.2/24 (`u0`) to the gateway's 203.0.113.1/24
    /// (`u1`), and the LAN host 192.0.2.10/24 (`eth0`) on the gateway's `lan0`, 192.0.2.1/24.
    pub fn routing_topology(&mut self) -> (usize, usize, usize) {
        let client = self.ns("c");
        let gw = self.ns("g");
        let lan = self.ns("l");
        self.link(client, "u0", "203.0.113.2/24", gw, "u1", "203.0.113.1/24");
        self.link(lan, "eth0", "192.0.2.10/24", gw, "lan0", "192.0.2.1/24");
        (client, gw, lan)
    }

    /// A veth pair between two namespaces with addresses.
    pub fn link(&self, a: usize, a_if: &str, a_addr: &str, b: usize, b_if: &str, b_addr: &str) {
        let (na, nb) = (self.n(a).name().to_string(), self.n(b).name().to_string());
        sh(
            None,
            &[
                "ip", "link", "add", a_if, "netns", &na, "type", "veth", "peer", "name", b_if,
                "netns", &nb,
            ],
        );
        self.n(a)
            .ip(&["addr", "add", a_addr, "dev", a_if])
            .unwrap()
            .check()
            .unwrap();
        self.n(a)
            .ip(&["link", "set", a_if, "up"])
            .unwrap()
            .check()
            .unwrap();
        self.n(b)
            .ip(&["addr", "add", b_addr, "dev", b_if])
            .unwrap()
            .check()
            .unwrap();
        self.n(b)
            .ip(&["link", "set", b_if, "up"])
            .unwrap()
            .check()
            .unwrap();
    }

    /// Starts wireguard-go on `ifname` in namespace `i` and configures it with `wg set`.
    pub fn stock_wg(
        &mut self,
        i: usize,
        ifname: &str,
        key: &Keys,
        addrs: &[&str],
        wg_args: &[&str],
    ) {
        let child = self
            .n(i)
            .spawn(
                Command::new("wireguard-go")
                    .arg("-f")
                    .arg(ifname)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .expect("wireguard-go");
        self.stock.push(child);
        self.stock_sockets
            .push(PathBuf::from(format!("/var/run/wireguard/{ifname}.sock")));
        let keyfile = self.dir.join(format!("{ifname}.key"));
        std::fs::write(&keyfile, &key.private).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&format!("/var/run/wireguard/{ifname}.sock")).exists() {
            assert!(Instant::now() < deadline, "wireguard-go did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut args = vec![
            "wg",
            "set",
            ifname,
            "private-key",
            keyfile.to_str().unwrap(),
        ];
        args.extend_from_slice(wg_args);
        sh(Some(self.n(i)), &args);
        for a in addrs {
            self.n(i)
                .ip(&["addr", "add", a, "dev", ifname])
                .unwrap()
                .check()
                .unwrap();
        }
        self.n(i)
            .ip(&["link", "set", ifname, "mtu", "1280", "up"])
            .unwrap()
            .check()
            .unwrap();
    }

    /// Writes `config` and starts `swiftgate up` in namespace `i`.
    pub fn swiftgate(&mut self, i: usize, config: &str) -> usize {
        let k = self.agents.len();
        let pin = super::pin_path_for(&format!("{}a{k}", self.id));
        let sock = PathBuf::from(format!("/run/swiftgate/{}a{k}.sock", self.id));
        let text = config.replace(
            "[interface]",
            &format!(
                "[interface]\npin_path = {:?}\ncontrol_socket = {:?}",
                pin.display().to_string(),
                sock.display().to_string()
            ),
        );
        let path = self.dir.join(format!("agent{k}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut agent = Agent::spawn(
            self.n(i),
            &path,
            &pin,
            &self.dir.join(format!("agent{k}.log")),
        )
        .expect("spawn agent");
        if let Err(e) = agent.wait_ready(super::agent::READY_TIMEOUT) {
            panic!("agent did not start: {e}\n{}", agent.log_tail(40));
        }
        self.agents
            .push((agent, self.n(i).name().to_string(), pin, sock));
        k
    }

    /// Runs `swiftgate CMD --json` against agent `k`'s control socket and returns its JSON
    /// answer (`Null` for `rekey`); panics on failure.
    pub fn control(&self, k: usize, cmd: &str) -> serde_json::Value {
        let out = super::run_timeout(
            Command::new(swiftgate_bin())
                .args([cmd, "--json", "--socket"])
                .arg(&self.agents[k].3),
            None,
            super::CMD_TIMEOUT,
        )
        .expect("swiftgate control command");
        assert!(out.success(), "swiftgate {cmd}: {}", out.stderr);
        if cmd == "rekey" {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out.stdout).expect("status JSON")
    }

    /// Process id of the `i`-th stock wireguard-go started.
    pub fn stock_pid(&self, i: usize) -> u32 {
        self.stock[i].id()
    }

    /// The last 30 lines of agent `k`'s log.
    pub fn log(&self, k: usize) -> String {
        self.agents[k].0.log_tail(30)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (agent, ns, pin, _) in self.agents.drain(..) {
            drop(agent);
            let path = PathBuf::from("/run/netns").join(&ns);
            let _ = super::netns::run_in(&path, || {
                Command::new(swiftgate_bin())
                    .args(["down", "--interface", "sg0", "--pin-path"])
                    .arg(&pin)
                    .output()
            });
        }
        for mut c in self.stock.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in self.stock_sockets.drain(..) {
            let _ = std::fs::remove_file(p);
        }
        for mut ns in self.namespaces.drain(..) {
            let _ = ns.delete();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` every 200 ms until it is true; panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Decodes a base64 WireGuard key.
pub fn public_key_bytes(b64: &str) -> [u8; 32] {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("base64 key")
        .try_into()
        .expect("32 bytes")
}
