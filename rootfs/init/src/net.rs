//! Networking for the main stage: loopback up, and a minimal DHCPv4 client (RFC 2131:
//! DISCOVER, OFFER, REQUEST, ACK) on the first ethernet NIC, over a plain UDP socket bound to
//! the NIC. Bounded: about 10 s in all, then the boot goes on without a network.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::{fail, sys, Ctx, Result};

const DHCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Per message: QEMU's built-in DHCP answers in milliseconds, real networks within a second.
const REPLY_WAIT: Duration = Duration::from_secs(2);
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

fn ifreq(name: &str) -> sys::Ifreq {
    let mut r = [0u8; 40];
    let n = name.len().min(15);
    r[..n].copy_from_slice(&name.as_bytes()[..n]);
    r
}

fn set_up(name: &str) -> Result<()> {
    let mut r = ifreq(name);
    sys::net_ioctl(libc::SIOCGIFFLAGS, &mut r).ctx(|| format!("SIOCGIFFLAGS {name}"))?;
    let flags = i16::from_ne_bytes([r[16], r[17]]) | libc::IFF_UP as i16;
    r[16..18].copy_from_slice(&flags.to_ne_bytes());
    sys::net_ioctl(libc::SIOCSIFFLAGS, &mut r).ctx(|| format!("SIOCSIFFLAGS {name} up"))
}

fn set_addr(name: &str, req: libc::c_ulong, what: &str, a: Ipv4Addr) -> Result<()> {
    let mut r = ifreq(name);
    r[16..18].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    r[20..24].copy_from_slice(&a.octets());
    sys::net_ioctl(req, &mut r).ctx(|| format!("{what} {name} {a}"))
}

pub fn loopback_up() -> Result<()> {
    set_up("lo")
}

/// The first ethernet NIC by name (a `device` link: a real or virtio device, not a bridge).
pub fn first_ethernet() -> Option<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            let t = fs::read_to_string(format!("/sys/class/net/{n}/type")).unwrap_or_default();
            t.trim() == "1" && fs::metadata(format!("/sys/class/net/{n}/device")).is_ok()
        })
        .collect();
    v.sort();
    v.into_iter().next()
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub addr: Option<Ipv4Addr>,
    pub kind: u8,
    pub netmask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
}

/// A BOOTREQUEST: broadcast flag set (we cannot receive unicast before we have an address).
pub fn packet(kind: u8, xid: u32, mac: [u8; 6], want: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0..4].copy_from_slice(&[1, 1, 6, 0]); // BOOTREQUEST, ethernet, 6-byte address, 0 hops
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&MAGIC);
    p.extend([53, 1, kind]);
    if let Some((addr, server)) = want {
        p.extend([50, 4]);
        p.extend(addr.octets());
        p.extend([54, 4]);
        p.extend(server.octets());
    }
    p.extend([55, 3, 1, 3, 6, 255]); // ask for netmask, router, DNS; end
    p.resize(300, 0); // BOOTP's minimum size; some servers insist
    p
}

fn ip(v: &[u8]) -> Option<Ipv4Addr> {
    (v.len() >= 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
}

/// Parses a BOOTREPLY for transaction `xid`; `None` if it is not one.
pub fn parse(p: &[u8], xid: u32) -> Option<Lease> {
    if p.len() < 240 || p[0] != 2 || p[4..8] != xid.to_be_bytes() || p[236..240] != MAGIC {
        return None;
    }
    let mut l = Lease {
        addr: ip(&p[16..20]),
        ..Lease::default()
    };
    let mut o = &p[240..];
    while let [code, rest @ ..] = o {
        match code {
            0 => o = rest,
            255 => break,
            _ => {
                let (&len, rest) = rest.split_first()?;
                let v = rest.get(..len as usize)?;
                match code {
                    53 => l.kind = *v.first()?,
                    1 => l.netmask = ip(v),
                    3 => l.router = ip(v),
                    6 => l.dns = v.chunks_exact(4).filter_map(ip).collect(),
                    54 => l.server = ip(v),
                    _ => {}
                }
                o = &rest[len as usize..];
            }
        }
    }
    (l.kind != 0).then_some(l)
}

fn mac_of(name: &str) -> Result<[u8; 6]> {
    let s = crate::read_trim(&format!("/sys/class/net/{name}/address"))?;
    let v: Vec<u8> = s
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    v.try_into()
        .map_err(|_| crate::Error(format!("parsing the MAC address {s:?} of {name}")))
}

/// Sends `pkt` and waits for a reply of one of `kinds` until `deadline`.
fn exchange(
    sock: &UdpSocket,
    pkt: &[u8],
    xid: u32,
    kinds: &[u8],
    deadline: Instant,
) -> Option<Lease> {
    sock.send_to(pkt, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
        .ok()?;
    let until = deadline.min(Instant::now() + REPLY_WAIT);
    let mut buf = [0u8; 1500];
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        sock.set_read_timeout(Some(left)).ok()?;
        let n = sock.recv(&mut buf).ok()?;
        if let Some(l) = parse(&buf[..n], xid).filter(|l| kinds.contains(&l.kind)) {
            return Some(l);
        }
    }
    None
}

/// Gets a lease on `name` and configures it (address, netmask, default route); writes the
/// DNS servers to /run/resolv.conf. Returns the address.
pub fn dhcp(name: &str) -> Result<Lease> {
    set_up(name)?;
    let mac = mac_of(name)?;
    let uuid = crate::read_trim("/proc/sys/kernel/random/uuid")?;
    let xid = u32::from_str_radix(&uuid[..8.min(uuid.len())], 16).unwrap_or(0x6265_7274);
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))
        .ctx(|| "binding a UDP socket to 0.0.0.0:68")?;
    sock.set_broadcast(true)
        .ctx(|| "setting SO_BROADCAST on the DHCP socket")?;
    sys::bind_to_device(sock.as_raw_fd(), name).ctx(|| format!("SO_BINDTODEVICE {name}"))?;
    let deadline = Instant::now() + DHCP_TIMEOUT;
    let lease = loop {
        if Instant::now() >= deadline {
            fail!(
                "DHCP on {name}: no lease within {}s",
                DHCP_TIMEOUT.as_secs()
            );
        }
        let Some(offer) = exchange(
            &sock,
            &packet(DISCOVER, xid, mac, None),
            xid,
            &[OFFER],
            deadline,
        ) else {
            continue;
        };
        let (Some(addr), Some(server)) = (offer.addr, offer.server) else {
            continue;
        };
        let req = packet(REQUEST, xid, mac, Some((addr, server)));
        match exchange(&sock, &req, xid, &[ACK, NAK], deadline) {
            Some(ack) if ack.kind == ACK => break ack,
            _ => continue,
        }
    };
    apply(
        name,
        lease.addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
        lease.netmask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0)),
        lease.router,
        &lease.dns,
    )?;
    Ok(lease)
}

/// Gives `name` an address, netmask and default route, and writes /run/resolv.conf.
fn apply(
    name: &str,
    addr: Ipv4Addr,
    netmask: Ipv4Addr,
    router: Option<Ipv4Addr>,
    dns: &[Ipv4Addr],
) -> Result<()> {
    set_addr(name, libc::SIOCSIFADDR, "SIOCSIFADDR", addr)?;
    set_addr(name, libc::SIOCSIFNETMASK, "SIOCSIFNETMASK", netmask)?;
    set_up(name)?;
    if let Some(gw) = router {
        sys::add_default_route(gw.octets(), name)
            .ctx(|| format!("SIOCADDRT default via {gw} dev {name}"))?;
    }
    let resolv: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    fs::write("/run/resolv.conf", resolv).ctx(|| "writing /run/resolv.conf")
}

/// A static address from the machine config.
pub fn static_address(
    name: &str,
    addr: [u8; 4],
    prefix: u8,
    router: Option<[u8; 4]>,
    dns: &[[u8; 4]],
) -> Result<()> {
    set_up(name)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let dns: Vec<Ipv4Addr> = dns.iter().map(|d| Ipv4Addr::from(*d)).collect();
    apply(
        name,
        Ipv4Addr::from(addr),
        Ipv4Addr::from(mask),
        router.map(Ipv4Addr::from),
        &dns,
    )
}

/// Whether a network interface of that name exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{name}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_round_trip() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let p = packet(
            REQUEST,
            0xdead_beef,
            mac,
            Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))),
        );
        assert_eq!(p.len(), 300);
        assert_eq!(&p[28..34], &mac);
        assert_eq!(&p[240..243], &[53, 1, REQUEST]);
        assert_eq!(&p[243..249], &[50, 4, 10, 0, 2, 15]);
        assert!(parse(&p, 0xdead_beef).is_none(), "a request is not a reply");

        // Turn it into the server's ACK: op 2, yiaddr, options.
        let mut r = p[..240].to_vec();
        r[0] = 2;
        r[16..20].copy_from_slice(&[10, 0, 2, 15]);
        r.extend([0, 53, 1, ACK, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2]);
        r.extend([
            6, 8, 10, 0, 2, 3, 1, 1, 1, 1, 54, 4, 10, 0, 2, 2, 51, 4, 0, 0, 0, 60, 255, 0, 0,
        ]);
        let l = parse(&r, 0xdead_beef).unwrap();
        assert_eq!(l.kind, ACK);
        assert_eq!(l.addr, Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(l.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            l.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(l.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert!(parse(&r, 1).is_none(), "other transaction");
        r.truncate(247); // option 1 cut short
        assert!(parse(&r, 0xdead_beef).is_none());
    }
}
