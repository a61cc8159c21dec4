//! Store tests: persistence across reopen, atomic saves, migrations.

use super::*;
use crate::model::*;

fn populated() -> Account {
    let mut a = Account::new("default");
    a.create_group(&GroupInput {
        name: "Development".into(),
        ..Default::default()
    })
    .unwrap();
    a.create_group(&GroupInput {
        name: "Internal Apps".into(),
        ..Default::default()
    })
    .unwrap();
    let (_, key) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "dev".into(),
                auto_groups: vec!["Development".into()],
                ..Default::default()
            },
            10,
        )
        .unwrap();
    a.register_peer(
        &RegisterPeer {
            setup_key: key,
            wg_pubkey: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
            name: Some("alice".into()),
            meta: PeerMeta {
                client_version: "0.45.0".into(),
                network_addresses: vec!["192.168.1.2/24".parse().unwrap()],
                ..Default::default()
            },
            ssh_pubkey: String::new(),
        },
        20,
    )
    .unwrap();
    a.create_network(&NetworkInput {
        name: "Berlin Office".into(),
        description: "office LAN".into(),
    })
    .unwrap();
    a.create_resource(
        "Berlin Office",
        &ResourceInput {
            name: "Internal Wiki".into(),
            address: "10.10.0.5".into(),
            groups: vec!["Internal Apps".into()],
            ..Default::default()
        },
    )
    .unwrap();
    a.create_resource(
        "Berlin Office",
        &ResourceInput {
            name: "Apps".into(),
            address: "*.berlin.internal".into(),
            groups: vec!["Internal Apps".into()],
            ..Default::default()
        },
    )
    .unwrap();
    a.create_router(
        "Berlin Office",
        &RouterInput {
            peer: Some("alice".into()),
            metric: Some(100),
            ..Default::default()
        },
    )
    .unwrap();
    a.create_posture_check(&PostureCheckInput {
        name: "min".into(),
        checks: PostureChecksInput {
            client_version: Some(MinVersionCheck {
                min_version: "0.40".into(),
            }),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    a.create_policy(&PolicyInput {
        name: "dev-to-apps".into(),
        description: "owned by IT".into(),
        source_posture_checks: vec!["min".into()],
        sources: Some(vec!["Development".into()]),
        destinations: Some(vec!["Internal Apps".into()]),
        protocol: Some("tcp".into()),
        ports: Some(vec![
            PortSpec::Text("443".into()),
            PortSpec::Text("8000-8080".into()),
        ]),
        ..Default::default()
    })
    .unwrap();
    a.serial = 42;
    a
}

#[test]
fn restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let a = populated();
    {
        let mut s = Store::open(&path).unwrap();
        assert!(s.load_account().unwrap().is_none());
        s.save(None, &a).unwrap();
        s.init_server_key("c2VydmVyLWtleQ==", 1).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.load_account().unwrap().as_ref(), Some(&a));
    assert_eq!(s.server_key().unwrap().as_deref(), Some("c2VydmVyLWtleQ=="));

    // Incremental saves: a change, then a deletion, each survive a reopen.
    let mut b = a.clone();
    b.set_policy_enabled("dev-to-apps", false).unwrap();
    b.delete_policy("Default").unwrap();
    b.delete_resource("Apps").unwrap();
    b.serial += 1;
    {
        let mut s = Store::open(&path).unwrap();
        s.save(Some(&a), &b).unwrap();
        // A second key never replaces the first.
        assert_eq!(
            s.init_server_key("b3RoZXI=", 2).unwrap(),
            "c2VydmVyLWtleQ=="
        );
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.load_account().unwrap(), Some(b));
}

#[test]
fn a_failed_save_writes_nothing() {
    let mut s = Store::open_in_memory().unwrap();
    let a = populated();
    s.save(None, &a).unwrap();
    // Two peers with one overlay address violate a UNIQUE constraint half-way through.
    let mut bad = a.clone();
    bad.serial += 1;
    bad.delete_policy("dev-to-apps").unwrap();
    let mut twin = bad.peers.values().next().unwrap().clone();
    twin.id = "peer-twin".into();
    twin.name = "twin".into();
    twin.wg_pubkey = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=".into();
    bad.peers.insert(twin.id.clone(), twin);
    assert!(s.save(Some(&a), &bad).is_err());
    assert_eq!(s.load_account().unwrap(), Some(a));
}

#[test]
fn migrations_run_once_and_newer_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), migrations::latest());
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), migrations::latest());
    s.conn
        .execute("UPDATE schema_version SET version = 999", [])
        .unwrap();
    drop(s);
    let err = Store::open(&path).err().expect("newer schema refused");
    assert!(err.to_string().contains("newer than this server"));
}

/// Issue 12, defect 8: a missing file is created (first start), but an existing zero-length
/// file, a non-database file, or a database without an account never silently becomes a new
/// account (with a new server key); only `init` allows that, and never for a non-database.
#[test]
fn empty_or_foreign_files_are_refused_unless_initialised() {
    use crate::service::{Service, ServiceError};
    let dir = tempfile::tempdir().unwrap();

    // Missing: created, with a new account.
    let fresh = dir.path().join("fresh.db");
    let svc = Service::open(&fresh).unwrap();
    assert!(svc.account().policies.values().any(|p| p.name == "Default"));
    drop(svc);
    assert!(Service::open(&fresh).is_ok(), "an existing account opens");

    // Zero bytes: refused, the error names the file, nothing is written.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let err = Service::open(&empty)
        .err()
        .expect("an empty file is refused");
    assert!(
        matches!(err, ServiceError::Store(StoreError::EmptyFile { ref path }) if path == &empty),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&empty.display().to_string()), "{msg}");
    assert!(msg.contains("--init"), "{msg}");
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "nothing written"
    );
    assert!(!dir.path().join("empty.db-wal").exists(), "no WAL created");
    // With init: a new account in it, which later opens without init.
    let svc = Service::open_with(&empty, true).unwrap();
    let id = svc.account().id.clone();
    drop(svc);
    assert_eq!(Service::open(&empty).unwrap().account().id, id);

    // Schema but no account (say, a first start that died half-way): refused unless init.
    let bare = dir.path().join("bare.db");
    drop(Store::open(&bare).unwrap());
    let err = Service::open(&bare).err().expect("no account is refused");
    assert!(
        matches!(err, ServiceError::Store(StoreError::NoAccount { ref path }) if path == &bare),
        "{err}"
    );
    assert!(Service::open_with(&bare, true).is_ok());

    // Not a database: refused even with init, the file untouched.
    let text = dir.path().join("notes.db");
    let junk = "these are not the tables you are looking for\n".repeat(20);
    std::fs::write(&text, &junk).unwrap();
    for init in [false, true] {
        let err = Service::open_with(&text, init).err().expect("refused");
        assert!(
            matches!(err, ServiceError::Store(StoreError::NotADatabase { ref path, .. }) if path == &text),
            "{err}"
        );
        assert!(err.to_string().contains("notes.db"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&text).unwrap(), junk);
}
