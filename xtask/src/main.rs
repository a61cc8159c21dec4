//! Developer tasks: `cargo xtask run | test | bench | setup` (or `./x ...`, which installs the
//! toolchain first).
//!
//! Everything that needs root (loading eBPF programs, creating network namespaces) runs as
//! root: when not already root, the command is re-run through `sudo`.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "swiftgate developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchains, LLVM, bpf-linker and test tools (idempotent).
    Setup,
    /// Build and run the demo network (the seeds' Berlin Office) on embedded defaults.
    Run {
        /// Keep the network up until Ctrl-C.
        #[arg(long)]
        hold: bool,
    },
    /// Formatting, lints, then every unit, kernel and namespace test.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks (not tests): eBPF ns/packet and forwarding pps vs nftables.
    Bench {
        /// Shorter runs.
        #[arg(long)]
        quick: bool,
    },
}

/// The eBPF toolchain (see scripts/bootstrap.sh and agent/build.rs).
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-20";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let st = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and closes with one line totalling every test
/// binary's results (`tests: N passed, N failed, N skipped`).
fn run_tests(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let out = child.stdout.take().context("test output")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (w.next(), w.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let st = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !st.success() || failed > 0 {
        bail!("tests failed ({st})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a built binary as root (through sudo when needed).
fn as_root(bin: &Path, args: &[&str]) -> Result<()> {
    if is_root() {
        run(Command::new(bin).args(args))
    } else {
        run(Command::new("sudo").arg("-E").arg(bin).args(args))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn setup() -> Result<()> {
    run(Command::new("bash").arg(root().join("scripts/bootstrap.sh")))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Task::Setup => setup(),
        Task::Run { hold } => {
            setup()?;
            run(cargo().args([
                "build",
                "-p",
                "swiftgate",
                "--bin",
                "swiftgate",
                "--example",
                "demo",
            ]))?;
            let bin = root().join("target/debug/examples/demo");
            as_root(&bin, if hold { &["--hold"] } else { &[] })
        }
        Task::Test { args } => {
            setup()?;
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "swiftgate-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The programs themselves, for the BPF target with the eBPF toolchain.
            run(Command::new("rustup")
                .env_remove("RUSTC")
                .env_remove("RUSTUP_TOOLCHAIN")
                .args([
                    "run",
                    EBPF_TOOLCHAIN,
                    "cargo",
                    "clippy",
                    "-p",
                    "swiftgate-ebpf",
                    "--release",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--",
                    "-D",
                    "warnings",
                ]))?;
            // The integration tests (crate swiftgate-tests) run the agent binary, which cargo
            // builds only for its own package's tests: build it first, so they run this one
            // (`swiftgate_testkit::swiftgate_bin` finds it next to the test binaries).
            run(cargo().args(["build", "-p", "swiftgate", "--bin", "swiftgate"]))?;
            // Test binaries load eBPF programs and create namespaces: they run as root.
            let mut cmd = cargo();
            cmd.args([
                "test",
                "--workspace",
                "--exclude",
                "swiftgate-ebpf",
                "--all-targets",
            ]);
            if !is_root() {
                cmd.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
            }
            cmd.arg("--").args(&args);
            run_tests(&mut cmd)
        }
        Task::Bench { quick } => {
            setup()?;
            run(cargo().args([
                "build",
                "--release",
                "-p",
                "swiftgate",
                "--bin",
                "swiftgate",
                "--example",
                "bench",
                "--example",
                "wg_bench",
                "--example",
                "mgmt_bench",
            ]))?;
            run(cargo().args([
                "build",
                "--release",
                "-p",
                "swiftgate-management",
                "--example",
                "netmap_bench",
            ]))?;
            let ex = |name: &str| root().join("target/release/examples").join(name);
            // eBPF ns/packet and forwarding pps vs nftables.
            as_root(&ex("bench"), if quick { &["--quick"] } else { &[] })?;
            // WireGuard routing peer vs wireguard-go + nftables.
            as_root(
                &ex("wg_bench"),
                if quick {
                    &["--seconds", "3"]
                } else {
                    &["--seconds", "10", "--rounds", "3"]
                },
            )?;
            // Admin API change -> routing peer's eBPF map.
            as_root(
                &ex("mgmt_bench"),
                if quick {
                    &["--rounds", "5"]
                } else {
                    &["--rounds", "20"]
                },
            )?;
            // Network-map computation (10,000 peers, 1,000 policies, 5,000 resources).
            run(&mut Command::new(ex("netmap_bench")))
        }
    }
}
