//! Mutation fuzzing of what berth-init reads from the network and from volumes a user attaches:
//! DHCP replies, HTTP responses (update channels, bundles and the etcd gateway of the reboot
//! lock), the metadata service's replies, and the superblock of a config drive. The parsers
//! berth-init shares with the builder (machine config, bundles, GPT, verity, boot entries, etcd
//! answers) are fuzzed in contract/tests/fuzz.rs; the harness is the same
//! (contract/tests/harness: `BERTH_FUZZ_SECONDS` per target, `BERTH_FUZZ_TARGETS` to pick).

#[path = "../../../contract/tests/harness/mod.rs"]
mod harness;

use std::io::{Cursor, Read};

use harness::fuzz;

use crate::{http, imds, net, provision};

const XID: u32 = 0x6265_7274;

#[test]
fn dhcp_replies() {
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let reply = |kind: u8, options: &[u8]| {
        let mut p = net::packet(kind, XID, mac, None);
        p.truncate(240);
        p[0] = 2;
        p[16..20].copy_from_slice(&[10, 0, 2, 15]);
        p.extend([53, 1, kind]);
        p.extend(options);
        p
    };
    let seeds = vec![
        reply(
            2,
            &[
                1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 6, 8, 10, 0, 2, 3, 1, 1, 1, 1, 54, 4,
                10, 0, 2, 2, 51, 4, 0, 0, 0, 60, 255,
            ],
        ),
        reply(5, &[0, 0, 1, 4, 255, 255, 0, 0, 255, 0, 0, 0]),
        reply(6, &[255]),
    ];
    fuzz("dhcp-reply", seeds, |b| {
        if let Some(l) = net::parse(b, XID) {
            assert_ne!(l.kind, 0, "a reply without a message type was taken");
            assert!(
                l.dns.len() <= 255 / 4,
                "more DNS servers than an option holds"
            );
        }
    });
}

#[test]
fn http_responses() {
    let seeds: Vec<Vec<u8>> = [
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"header\":{}}",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"heade\r\n6;x=y\r\nr\":{}}\r\n0\r\n\r\n",
        "HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("http-response", seeds, |b| {
        let mut r = Cursor::new(b);
        if let Ok((length, chunked)) = http::read_head(&mut r, "GET http://fuzz/") {
            if chunked {
                if let Ok(body) = http::read_chunked(&mut r, 64, "POST http://fuzz/") {
                    assert!(body.len() <= 64, "a chunked answer beyond its bound");
                }
            } else {
                let mut body = Vec::new();
                r.take(length.unwrap_or(u64::MAX))
                    .read_to_end(&mut body)
                    .expect("reading from memory");
                assert!(body.len() <= b.len());
            }
        }
    });
}

#[test]
fn metadata_service_replies() {
    let seeds: Vec<Vec<u8>> = [
        "HTTP/1.1 200 OK\r\nContent-Length: 56\r\nContent-Type: text/plain\r\n\r\nAQAEAHzS9Bq6NQ8RXXWbKp9hGx6b0-mFzpq3l0jWyVqmUxEeYhZcTg==",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.0 200 OK\r\n\r\n{\"version\": 1, \"hostname\": \"n1\"}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("imds-reply", seeds, |b| {
        if let Some(r) = imds::parse_reply(b) {
            assert!(r.body.len() <= b.len());
        }
    });
}

#[test]
fn config_drive_superblocks() {
    // The first 40 KiB of a FAT32, a FAT16 and an ISO 9660 volume labelled CIDATA, as
    // mkfs.vfat and genisoimage lay them out (only the fields the label reader looks at).
    let mut fat32 = vec![0u8; 512];
    fat32[510..512].copy_from_slice(&[0x55, 0xAA]);
    fat32[0x42] = 0x29;
    fat32[0x47..0x52].copy_from_slice(b"CIDATA     ");
    fat32[0x52..0x5A].copy_from_slice(b"FAT32   ");
    let mut fat16 = vec![0u8; 512];
    fat16[510..512].copy_from_slice(&[0x55, 0xAA]);
    fat16[0x26] = 0x29;
    fat16[0x2B..0x36].copy_from_slice(b"cidata     ");
    fat16[0x36..0x3E].copy_from_slice(b"FAT16   ");
    let mut iso = vec![0u8; 40 * 1024];
    iso[32768] = 1;
    iso[32769..32774].copy_from_slice(b"CD001");
    iso[32768 + 40..32768 + 72].copy_from_slice(b"cidata                          ");
    for (seed, want) in [(&fat32, "vfat"), (&fat16, "vfat"), (&iso, "iso9660")] {
        let (fs, label) = provision::volume_label(seed).expect("a seed the reader knows");
        assert_eq!(fs, want);
        assert!(label.eq_ignore_ascii_case("cidata"), "{label:?}");
    }
    fuzz("config-drive-label", vec![fat32, fat16, iso], |b| {
        if let Some((fs, label)) = provision::volume_label(b) {
            assert!(fs == "vfat" || fs == "iso9660");
            assert!(label.len() <= 32 * 3, "a label longer than its field");
        }
    });
}
