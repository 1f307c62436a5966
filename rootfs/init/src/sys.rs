//! The syscalls std does not wrap. This is the only module with `unsafe`: each function is a
//! thin wrapper around one call, takes Rust types, checks buffer sizes itself and returns
//! `io::Error` (errno). Callers add what they were trying to do (see `Ctx` in main.rs).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub use libc::{
    MNT_DETACH, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT, RB_AUTOBOOT,
    RB_POWER_OFF, SIGCHLD, SIGINT, SIGKILL, SIGTERM, SIGUSR2,
};

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// mount(2). `src`/`fstype` may be empty (for MS_MOVE, MS_REMOUNT).
pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let opt = |c: &CString, empty: bool| if empty { std::ptr::null() } else { c.as_ptr() };
    // SAFETY: all pointers are NUL-terminated strings that outlive the call, or null.
    let r = unsafe {
        libc::mount(
            opt(&s, src.is_empty()),
            t.as_ptr(),
            opt(&f, fstype.is_empty()),
            flags,
            opt(&d, data.is_empty()).cast(),
        )
    };
    check(r).map(drop)
}

pub fn umount(target: &str, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is a valid C string for the duration of the call.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(drop)
}

/// finit_module(2) with no parameters.
pub fn finit_module(fd: RawFd) -> io::Result<()> {
    // SAFETY: the parameter string is a static empty C string; fd is just a number to the kernel.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An ioctl whose argument is a buffer the kernel reads and writes. The request encodes the
/// size the kernel touches (or, for device-mapper, `data_size` inside the buffer does, which
/// dm.rs keeps equal to the buffer length); both are checked here against `buf`.
pub fn ioctl_buf(fd: RawFd, req: libc::c_ulong, buf: &mut [u8]) -> io::Result<()> {
    let size = ((req >> 16) & 0x3fff) as usize;
    if buf.len() < size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ioctl buffer too small",
        ));
    }
    // SAFETY: `buf` is valid for reads and writes of at least the size the request encodes.
    check(unsafe { libc::ioctl(fd, req, buf.as_mut_ptr()) }).map(drop)
}

/// An ioctl that reads one u64 (EXT4_IOC_RESIZE_FS).
pub fn ioctl_u64(fd: RawFd, req: libc::c_ulong, val: u64) -> io::Result<()> {
    // SAFETY: the kernel reads 8 bytes from a valid, live u64.
    check(unsafe { libc::ioctl(fd, req, &val as *const u64) }).map(drop)
}

/// WDIOC_SETTIMEOUT (`_IOWR('W', 6, int)`): sets a watchdog's timeout in seconds; returns the
/// timeout the driver chose.
pub fn watchdog_set_timeout(fd: RawFd, seconds: i32) -> io::Result<i32> {
    const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
    let mut t: libc::c_int = seconds;
    // SAFETY: the kernel reads and writes one int in a valid, live c_int.
    check(unsafe { libc::ioctl(fd, WDIOC_SETTIMEOUT, &mut t as *mut libc::c_int) })?;
    Ok(t)
}

/// write(2) of a few bytes to a raw descriptor (the watchdog, which std does not own).
pub fn write_fd(fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads bytes.len() bytes from a valid, live slice.
    check(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) as libc::c_int }).map(drop)
}

/// close(2) of a raw descriptor.
pub fn close_fd(fd: RawFd) {
    // SAFETY: plain integer argument; the caller gives up the descriptor.
    unsafe { libc::close(fd) };
}

/// CLOCK_BOOTTIME: time since the kernel started, suspend included.
pub fn uptime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes one timespec into a valid, live struct.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Sets or clears FD_CLOEXEC on `fd`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: plain integer arguments.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(drop)
}

/// BLKFLSBUF: drop the kernel's buffers of a block device (so a read-back reads the device).
pub fn flush_buffers(fd: RawFd) -> io::Result<()> {
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    // SAFETY: no argument is read or written.
    check(unsafe { libc::ioctl(fd, BLKFLSBUF, 0) }).map(drop)
}

/// BLKGETSIZE64: a block device's size in bytes.
pub fn blk_size(fd: RawFd) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: the kernel writes 8 bytes into a valid, live u64.
    check(unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// fstatvfs(2): the bytes of the filesystem holding `fd` that a process without
/// CAP_SYS_RESOURCE may still use (ext4 keeps its reserved blocks for the others).
pub fn available_bytes(fd: RawFd) -> io::Result<u64> {
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one struct statvfs into a valid, live, exclusive one.
    check(unsafe { libc::fstatvfs(fd, &mut st) })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// syncfs(2): commits the filesystem holding `fd`.
pub fn syncfs(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain integer argument.
    check(unsafe { libc::syncfs(fd) }).map(drop)
}

/// flock(2) with LOCK_EX: held until the descriptor is closed.
pub fn lock_exclusive(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::flock(fd, libc::LOCK_EX) }).map(drop)
}

/// `struct blkpg_partition` (linux/blkpg.h): offsets and lengths in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut BlkpgPartition,
}

const BLKPG: libc::c_ulong = 0x1269; // _IO(0x12, 105)
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

/// Tells the kernel partition `pno` of the disk open as `fd` now spans `start..start+len` bytes.
pub fn blkpg_resize(fd: RawFd, pno: u32, start: u64, len: u64) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "partition out of range");
    let mut part = BlkpgPartition {
        start: start.try_into().map_err(|_| too_big())?,
        length: len.try_into().map_err(|_| too_big())?,
        pno: pno.try_into().map_err(|_| too_big())?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: &mut part,
    };
    // SAFETY: `arg` and the partition it points to are live, correctly laid out (repr(C)).
    check(unsafe { libc::ioctl(fd, BLKPG, &mut arg as *mut BlkpgIoctlArg) }).map(drop)
}

/// reboot(2) with RB_POWER_OFF or RB_AUTOBOOT; returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: no pointers involved.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// Ctrl-Alt-Del then sends SIGINT to PID 1 (an orderly reboot) instead of an instant reset.
pub fn disable_cad() -> io::Result<()> {
    // SAFETY: no pointers involved.
    check(unsafe { libc::reboot(libc::RB_DISABLE_CAD) }).map(drop)
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Moves this thread into the namespace `fd` refers to (`nstype` e.g. `libc::CLONE_NEWUTS`).
pub fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments; the kernel checks the descriptor.
    check(unsafe { libc::setns(fd, nstype) }).map(drop)
}

pub fn chroot(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::chroot(p.as_ptr()) }).map(drop)
}

/// Creates a block device node (mode 0600).
pub fn mknod_block(path: &str, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid C string.
    let r = unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    check(r).map(drop)
}

pub fn kill(pid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: no pointers involved.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Reaps one exited child of any kind without blocking: `Ok(Some((pid, raw wait status)))`,
/// `Ok(None)` if children remain but none has exited, ECHILD if there are none.
pub fn reap_any() -> io::Result<Option<(i32, i32)>> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
    Ok((pid > 0).then_some((pid, status)))
}

fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only fails for invalid numbers,
    // and ours are libc constants.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `sigs` so they queue for [`wait_signal`]. (std::process::Command empties the mask
/// again in children, so services start with default signal handling.)
pub fn block_signals(sigs: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(sigs);
    // SAFETY: `set` is initialised; the old mask is not wanted (null).
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) }).map(drop)
}

/// Waits up to `timeout` for one of the (blocked) `sigs`.
pub fn wait_signal(sigs: &[libc::c_int], timeout: Duration) -> Option<libc::c_int> {
    let set = sigset(sigs);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `set` and `ts` are initialised; siginfo is not wanted (null).
    let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

pub fn dup2(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: no pointers involved; replacing fds 0-2 is the point.
    check(unsafe { libc::dup2(old, new) }).map(drop)
}

pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() }
}

/// `struct ifreq`: 16 bytes of name, then a 24-byte union (sockaddr, flags, index ...).
pub type Ifreq = [u8; 40];

/// A network ioctl (SIOC*) on a throw-away AF_INET datagram socket.
pub fn net_ioctl(req: libc::c_ulong, ifr: &mut Ifreq) -> io::Result<()> {
    // SAFETY: plain socket(2) call.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `ifr` is a live 40-byte buffer, the size of struct ifreq on Linux/x86-64.
    let r = check(unsafe { libc::ioctl(fd, req, ifr.as_mut_ptr()) });
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
    r.map(drop)
}

/// SIOCADDRT: default route via `gw` on `dev`.
pub fn add_default_route(gw: [u8; 4], dev: &str) -> io::Result<()> {
    let d = cstr(dev)?;
    let sin = |a: [u8; 4]| {
        let mut s = [0u8; 16];
        s[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        s[4..8].copy_from_slice(&a);
        s
    };
    // SAFETY: rtentry is plain data (zero = no route fields set); sockaddr_in and sockaddr are
    // both 16 bytes, so the copies fill exactly the sockaddr fields.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    // SAFETY: see above: 16-byte copies into 16-byte sockaddr fields.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sin(gw).as_ptr(),
            (&mut rt.rt_gateway as *mut libc::sockaddr).cast(),
            16,
        );
        std::ptr::copy_nonoverlapping(
            sin([0; 4]).as_ptr(),
            (&mut rt.rt_dst as *mut libc::sockaddr).cast(),
            16,
        );
        std::ptr::copy_nonoverlapping(
            sin([0; 4]).as_ptr(),
            (&mut rt.rt_genmask as *mut libc::sockaddr).cast(),
            16,
        );
    }
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = d.as_ptr() as *mut libc::c_char;
    // SAFETY: plain socket(2) call.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `rt` is a valid rtentry whose rt_dev points at `d`, alive until after the call.
    let r = check(unsafe { libc::ioctl(fd, libc::SIOCADDRT, &mut rt as *mut libc::rtentry) });
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
    r.map(drop)
}

/// SO_BINDTODEVICE: the DHCP socket must use this NIC, which has no address yet.
pub fn bind_to_device(fd: RawFd, dev: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `dev`'s bytes.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    };
    check(r).map(drop)
}
