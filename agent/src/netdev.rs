//! Network devices and routing, asked of and told to the kernel in the caller's network
//! namespace: what kind of device an interface is (ethtool's driver information; sysfs would
//! show the namespace it was mounted in), and the one place that runs `ip` (iproute2).

use std::{io, process::Command};

use anyhow::{Context as _, bail};

/// Runs `ip ARGS…` (iproute2); an error carries the command and what `ip` said.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `SIOCETHTOOL` (linux/sockios.h).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GDRVINFO` (linux/ethtool.h).
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut DrvInfo,
    /// The union is as large as `struct ifmap` (24 bytes on 64-bit).
    _pad: [u8; 16],
}

/// The name of the driver behind interface `name` (`"tun"` for TUN and TAP devices, `"veth"`,
/// `"mlx5_core"`, ...).
pub fn driver(name: &str) -> io::Result<String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not an interface name"),
        ));
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut req = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: `req` is a valid ifreq whose `ifr_data` points at `info`, a drvinfo the kernel
    // fills; both outlive the call, and the socket is open.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            SIOCETHTOOL as _,
            &mut req,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Whether interface `name` is a TUN or TAP device (which never hands a packet over with a
/// receive checksum, `CHECKSUM_COMPLETE`). `false` when that cannot be told.
pub fn is_tun(name: &str) -> bool {
    driver(name).is_ok_and(|d| d == "tun")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_not_a_tun_and_bad_names_are_refused() {
        // Loopback has no ethtool driver information on every kernel; either way it is no TUN.
        assert!(!is_tun("lo"));
        let e = driver("").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(driver("a-name-much-too-long-for-linux").is_err());
        assert!(driver("no-such-if0").is_err());
    }
}
