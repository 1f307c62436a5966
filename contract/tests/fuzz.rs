//! Mutation fuzzing of every parser of the contract: the bytes berth-init reads from disks,
//! the ESP, the kernel command line, fw_cfg, metadata services, update bundles and channels.
//! (cargo-fuzz needs a nightly compiler, which this project does not use; this runs on
//! stable.) Each target starts from valid seeds made by the contract's own encoders and
//! mutates them (bit flips, interesting bytes, truncation, growth, splices, duplicated and
//! deleted ranges). A parser may refuse anything, but must not panic, and what it accepts must
//! survive its own writer (parse ∘ write ∘ parse = parse) where there is one.
//!
//! `BERTH_FUZZ_SECONDS` (default 1) is the time per target; `benches/fuzz.sh` runs 600. A
//! panic writes the input to `target/fuzz-crashes/<target>-<n>.bin` and fails the test.
//! Each target prints its executions.

use berth_contract::bundle::{Chunk, Header, Kind, Origin, Payload, Piece, Source};
use berth_contract::channel::{self, Index};
use berth_contract::config::MachineConfig;
use berth_contract::entry::{BootEntry, EntryName};
use berth_contract::verity::Superblock;
use berth_contract::{health, plan, service, BootArgs, Bytes, Cmdline, DiskSpec, Guid, Slot};

mod harness;
use harness::fuzz;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CONFIG: &str = r#"{"version": 1, "hostname": "node-1.example",
 "network": [{"interface": "first", "address": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": ["10.0.2.3"]},
             {"interface": "eth1", "dhcp": true}],
 "ssh-authorized-keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA me@laptop"],
 "files": [{"path": "/etc/motd", "content": "hello\n"},
           {"path": "/var/lib/app/conf", "content": "x=1", "mode": "0600", "uid": 1000, "gid": 1000}],
 "services": [{"name": "web", "image": "docker.io/library/nginx:1", "command": ["nginx", "-g", "daemon off;"],
   "env": {"A": "b c"}, "mounts": [{"source": "/var/lib/web", "target": "/www", "read-only": true}],
   "ready": {"http": "http://127.0.0.1:80/"}, "ready-timeout": 30, "restart": "on-failure", "depends-on": []}],
 "update": {"channel": "http://10.0.2.100:8080/", "check-interval": 600, "reboot": "02:00-04:00"}}"#;

#[test]
fn machine_configs_and_json() {
    fuzz(
        "machine-config",
        vec![CONFIG.as_bytes().to_vec(), b"{\"version\": 1}".to_vec()],
        |b| {
            let t = text(b);
            let _ = berth_contract::json::parse(&t);
            if let Ok(c) = MachineConfig::parse(&t) {
                let again =
                    MachineConfig::parse(&c.to_json()).expect("a config berth wrote must parse");
                assert_eq!(again, c, "to_json does not round-trip");
            }
        },
    );
}

#[test]
fn services_files() {
    let mut s = service::Service::new("web", "localhost/berth/web:1");
    s.command = vec!["/bin/busybox".into(), "httpd".into(), "-f".into()];
    let seed = service::file_text(&[s, service::Service::new("admin", "localhost/berth/admin:1")]);
    fuzz("services", vec![seed.into_bytes()], |b| {
        if let Ok(list) = service::parse_file(&text(b)) {
            let again = service::parse_file(&service::file_text(&list))
                .expect("a services file berth wrote must parse");
            assert_eq!(again, list);
        }
    });
}

#[test]
fn channels_and_policies() {
    let h = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let e = |n: &str| channel::Entry {
        bundle: n.into(),
        size: 10,
        sha256: h('c'),
    };
    let idx = Index {
        image: "berth".into(),
        arch: "x86_64".into(),
        version: "0.2.0".into(),
        roothash: h('a'),
        full: e("berth-0.2.0.bundle"),
        deltas: vec![(h('b'), e("berth-0.2.0-from-bbbb.bundle"))],
    };
    fuzz("channel-index", vec![idx.text().into_bytes()], |b| {
        if let Ok(i) = Index::parse(&text(b)) {
            assert_eq!(Index::parse(&i.text()).expect("an index berth wrote"), i);
        }
    });
    let p = channel::Policy::parse("channel=http://x:1/\ncheck-interval=60\nreboot=23:00-01:00\n")
        .unwrap();
    fuzz("update-policy", vec![p.text().into_bytes()], |b| {
        if let Ok(p) = channel::Policy::parse(&text(b)) {
            assert_eq!(
                channel::Policy::parse(&p.text()).expect("a policy berth wrote"),
                p
            );
        }
    });
    fuzz(
        "health-policy",
        vec![health::DEFAULT.text().into_bytes()],
        |b| {
            if let Ok(p) = health::Policy::parse(&text(b)) {
                assert_eq!(
                    health::Policy::parse(&p.text()).expect("a policy berth wrote"),
                    p
                );
            }
        },
    );
}

fn args() -> BootArgs {
    let g = |n: u8| Guid::from_bytes([n; 16]);
    BootArgs {
        slot: Slot::B,
        version: "0.2.0".into(),
        root: g(1),
        verity: g(2),
        roothash: "ab".repeat(32),
        state: g(3),
        after_ready: None,
        extra: vec!["console=ttyS0".into(), "panic=10".into()],
    }
}

#[test]
fn command_lines_and_boot_entries() {
    let line = args().to_string();
    fuzz("cmdline", vec![line.clone().into_bytes()], |b| {
        let t = text(b);
        let _ = Cmdline::parse(&t);
        if let Ok(a) = BootArgs::parse(&t) {
            assert_eq!(
                BootArgs::parse(&a.to_string()).expect("a line berth wrote"),
                a
            );
        }
    });
    let entry = BootEntry { args: args() }.text();
    fuzz("boot-entry", vec![entry.into_bytes()], |b| {
        if let Ok(e) = BootEntry::parse(&text(b)) {
            assert_eq!(
                BootEntry::parse(&e.text()).expect("an entry berth wrote"),
                e
            );
        }
    });
    let names: Vec<Vec<u8>> = [
        "berth-a.conf",
        "berth-b+3.conf",
        "berth-a+2-1.conf",
        "berth-b+0-3.conf",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("entry-name", names, |b| {
        if let Some(n) = EntryName::parse(&text(b)) {
            assert_eq!(EntryName::parse(&n.file_name()), Some(n));
        }
    });
}

#[test]
fn gpt_tables() {
    let g = |n: u8| Guid::from_bytes([n; 16]);
    let layout = plan(&DiskSpec {
        esp: Bytes::mib(64),
        root_slot: Bytes::mib(256),
        verity_slot: Bytes::mib(8),
        state: Bytes::mib(64),
        disk_guid: g(0xd0),
        part_guids: [g(1), g(2), g(3), g(4), g(5), g(6)],
        active: Slot::A,
    })
    .unwrap();
    let enc = layout.table().encode();
    // One input: the primary header's sector, then the entry array.
    let mut seed = enc.primary.to_vec();
    seed.extend_from_slice(&enc.entries);
    fuzz("gpt", vec![seed], |b| {
        let (h, a) = b.split_at(b.len().min(512));
        let _ = berth_contract::gpt::Table::decode_header(h, 1);
        let _ = berth_contract::gpt::Table::decode(h, 1, a);
    });
}

#[test]
fn verity_superblocks() {
    let sb = Superblock {
        uuid: [7; 16],
        data_block_size: 4096,
        hash_block_size: 4096,
        data_blocks: 65536,
        salt: vec![0xab; 32],
    };
    fuzz("verity-superblock", vec![sb.encode().unwrap()], |b| {
        if let Ok(s) = Superblock::decode(b) {
            let again =
                Superblock::decode(&s.encode().expect("a decoded superblock encodes")).unwrap();
            assert_eq!(again, s);
            let _ = s.table_params("/dev/a", "/dev/b", &"00".repeat(32));
        }
    });
}

#[test]
fn update_bundle_headers() {
    let p = |kind, size: u64, source: Source| Payload {
        kind,
        size,
        chunks: (0..size.div_ceil(4096))
            .map(|i| Chunk {
                source: source.clone(),
                sha256: [i as u8; 32],
            })
            .collect(),
    };
    let h = Header {
        image: "berth-qemu".into(),
        version: "0.2.0".into(),
        arch: "x86_64".into(),
        cmdline: "console=ttyS0 panic=10".into(),
        tries: 3,
        roothash: [7; 32],
        base: Some([9; 32]),
        chunk_size: 4096,
        payloads: vec![
            p(Kind::Root, 10000, Source::Running),
            p(Kind::Verity, 4096, Source::Data),
            p(Kind::Kernel, 5, Source::Data),
            p(Kind::Initrd, 9000, Source::Data),
        ],
    };
    // A delta of format 2: root chunks of pieces (data, running blocks anywhere, zeros).
    let mut pieces = h.clone();
    pieces.payloads[0] = p(
        Kind::Root,
        12288,
        Source::Pieces(vec![Piece {
            blocks: 1,
            origin: Origin::Running(3),
        }]),
    );
    pieces.payloads[0].chunks[1].source = Source::Pieces(vec![Piece {
        blocks: 1,
        origin: Origin::Zeros,
    }]);
    pieces.payloads[0].chunks[2].source = Source::Pieces(vec![Piece {
        blocks: 1,
        origin: Origin::Data,
    }]);
    fuzz("bundle-header", vec![h.encode(), pieces.encode()], |b| {
        if let Ok(h) = Header::decode(b) {
            assert_eq!(
                Header::decode(&h.encode()).expect("a header berth wrote"),
                h
            );
            let _ = berth_contract::bundle::signed_prefix(b);
            for k in Kind::ALL {
                let p = h.payload(k);
                for i in 0..p.chunks.len() {
                    let len = p.chunk_len(i, h.chunk_size);
                    assert!(p.data_len(i, h.chunk_size) <= len);
                    if let Source::Pieces(ps) = &p.chunks[i].source {
                        let ranges: Vec<_> = Piece::ranges(ps, len).collect();
                        assert_eq!(ranges.last().map(|r| r.1), Some(len));
                    }
                }
            }
        }
    });
}

/// What the local etcd member's JSON gateway answers to the reboot lock's requests (the
/// shapes etcd 3.4 sends), and base64, which carries every key and value.
#[test]
fn etcd_lock_answers() {
    use berth_contract::lock;
    let header = r#""header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"7","raft_term":"2"}"#;
    let seeds = [
        format!(r#"{{{header},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"7"}}}}}}]}}"#),
        format!(r#"{{{header},"responses":[{{"response_range":{{"header":{{"revision":"7"}},"kvs":[{{"key":"YmVydGgvcmVib290LWxvY2s=","create_revision":"6","mod_revision":"6","version":"1","value":"dC0x"}}],"count":"1"}}}}]}}"#),
        format!(r#"{{{header},"kvs":[{{"key":"YmVydGgvcmVib290LWxvY2s=","create_revision":"6","mod_revision":"6","version":"1","value":"dC0y"}}],"count":"1"}}"#),
        format!(r#"{{{header}}}"#),
        r#"{"error":"etcdserver: request timed out","code":14,"message":"etcdserver: request timed out"}"#.to_string(),
    ];
    fuzz(
        "etcd-lock-answers",
        seeds.iter().map(|s| s.clone().into_bytes()).collect(),
        |b| {
            let t = text(b);
            let ok = lock::put_ok(&t).is_ok();
            assert_eq!(
                lock::txn_succeeded(&t).is_ok(),
                ok,
                "one check of the answer"
            );
            if let Ok(Some(h)) = lock::holder_of(&t) {
                assert!(ok, "a holder read from an answer that is not one: {h:?}");
            }
            assert_eq!(lock::unbase64(&lock::base64(b)).as_deref(), Some(b));
            if let Some(raw) = lock::unbase64(&t) {
                assert_eq!(
                    lock::unbase64(&lock::base64(&raw)).as_deref(),
                    Some(&raw[..])
                );
            }
        },
    );
}
