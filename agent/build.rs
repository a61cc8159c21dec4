//! Builds the eBPF object (ebpf/) with the pinned nightly and bpf-linker; the agent embeds it.
use anyhow::Context as _;

/// Must match scripts/bootstrap.sh.
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-20";

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    let pkg = aya_build::Package {
        name: "swiftgate-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([pkg], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN)).context(
        "building the eBPF programs failed (scripts/bootstrap.sh installs the toolchain and bpf-linker)",
    )
}
