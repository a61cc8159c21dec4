//! The overlay TUN device: multi-queue (one queue per worker), `IFF_VNET_HDR` with TCP and
//! UDP segmentation offloads, persistent so that a restarting agent keeps the interface (and
//! the eBPF programs attached to it).

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd},
        unix::fs::OpenOptionsExt,
    },
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;

use super::offload::VNET_HDR_LEN;
use crate::netdev::ip;

const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_VNET_HDR: i16 = 0x4000;
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;
const TUN_F_USO4: u32 = 0x20;
const TUN_F_USO6: u32 = 0x40;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

mod ioctls {
    #![allow(missing_docs)]
    use super::IfReq;
    // TUNSETIFF, TUNSETOFFLOAD, TUNSETPERSIST: _IOW('T', 202 / 208 / 203, int).
    nix::ioctl_write_ptr_bad!(tun_set_iff, 0x4004_54ca, IfReq);
    nix::ioctl_write_int_bad!(tun_set_offload, 0x4004_54d0);
    nix::ioctl_write_int_bad!(tun_set_persist, 0x4004_54cb);
}
use ioctls::{tun_set_iff, tun_set_offload, tun_set_persist};

/// One queue of the TUN device.
pub struct TunQueue {
    file: File,
    uso: bool,
}

fn open_queue(name: &str) -> Result<File> {
    if name.is_empty() || name.len() > 15 {
        bail!("interface name `{name}` must be 1 to 15 bytes");
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a struct ifreq; IfReq has its layout (16-byte name, flags,
    // padding to 40 bytes) and lives for the call.
    unsafe { tun_set_iff(file.as_raw_fd(), &req) }.with_context(|| format!("TUNSETIFF {name}"))?;
    Ok(file)
}

/// Creates (or re-opens, when it persists from an earlier run) the TUN `name` with `queues`
/// queues and offloads on, sets its MTU and addresses and brings it up.
pub fn create(name: &str, queues: usize, mtu: u16, addresses: &[IpNet]) -> Result<Vec<TunQueue>> {
    let mut out = Vec::new();
    for _ in 0..queues.max(1) {
        out.push(TunQueue {
            file: open_queue(name)?,
            uso: false,
        });
    }
    let fd = out[0].file.as_raw_fd();
    let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes an integer argument by value.
    let uso = unsafe { tun_set_offload(fd, (offloads | TUN_F_USO4 | TUN_F_USO6) as i32) }.is_ok();
    if !uso {
        // Kernels before 6.2 have no UDP segmentation offload.
        // SAFETY: as above.
        unsafe { tun_set_offload(fd, offloads as i32) }.context("TUNSETOFFLOAD")?;
    }
    for q in &mut out {
        q.uso = uso;
    }
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    unsafe { tun_set_persist(fd, 1) }.context("TUNSETPERSIST")?;
    ip(&["link", "set", "dev", name, "mtu", &mtu.to_string(), "up"])?;
    for a in addresses {
        // `replace` is idempotent for a re-opened interface.
        ip(&["addr", "replace", &a.to_string(), "dev", name])?;
    }
    Ok(out)
}

/// Removes a persistent TUN (used by `swiftgate down`).
pub fn remove(name: &str) -> Result<()> {
    let f = open_queue(name)?;
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    unsafe { tun_set_persist(f.as_raw_fd(), 0) }.context("TUNSETPERSIST 0")?;
    Ok(())
}

impl TunQueue {
    /// Whether the device takes UDP segmentation offload (kernel 6.2 and later): UDP
    /// super-packets may be written to it.
    pub fn uso(&self) -> bool {
        self.uso
    }

    /// Reads one frame (virtio header + packet) into `buf`; `Ok(None)` when none is waiting.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid writable memory of the length passed.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(n as usize))
    }

    /// Writes a virtio header and a packet, given as consecutive pieces, as one frame (one
    /// `writev`; the kernel gathers the pieces).
    pub fn write(&self, hdr: &[u8; VNET_HDR_LEN], parts: &[&[u8]]) -> io::Result<()> {
        let mut iov = Vec::with_capacity(1 + parts.len());
        iov.push(libc::iovec {
            iov_base: hdr.as_ptr() as *mut _,
            iov_len: hdr.len(),
        });
        iov.extend(parts.iter().map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        }));
        loop {
            // SAFETY: every iovec points to a live buffer of the length given.
            let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
    }
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
