//! The agent's local API for lash-cni (api/proto/lash/v1/cni.proto) over its
//! unix socket, with the generated client: addresses for 50 attachments asked
//! at once are all different, asking again gives the same one, the range runs
//! out with a clear error, GC (retain) and DEL (release) free them, and the
//! socket is root's only. Needs root; `cargo xtask test` runs it.

use std::{collections::BTreeSet, net::Ipv4Addr, os::unix::fs::PermissionsExt};

use lash_api::{
    v1::{AllocateAddressRequest, ReleaseAddressRequest, RetainAddressesRequest, StatusRequest},
    Attachment,
};
use lash_tests::sandbox::Sandbox;
use serde_json::Value;

/// 64 addresses: network, gateway and broadcast leave 61 for pods.
const CIDR: &str = "10.244.9.0/26";

fn attachment(i: usize) -> Attachment {
    Attachment::new(&format!("{i:064x}"), "eth0")
}

fn allocate(i: usize) -> AllocateAddressRequest {
    AllocateAddressRequest {
        attachment: Some(attachment(i)),
    }
}

#[test]
fn addresses_are_unique_under_parallel_adds_and_freed_by_del_and_gc() {
    let mut sb = Sandbox::new("cniapi", 0).expect("sandbox");
    sb.start_agent(&["--pod-cidr", CIDR]).expect("agent");
    let socket = lash_api::socket_path(&sb.state_dir());
    let mode = std::fs::metadata(&socket)
        .expect("the agent's socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only root may ask for addresses");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = lash_api::connect(&socket).await.expect("connecting");

        // 50 ADDs at once.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let mut c = client.clone();
                tokio::spawn(async move { c.allocate_address(allocate(i)).await })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            let reply = t.await.unwrap().expect("allocate").into_inner();
            assert_eq!(
                (reply.prefix_len, reply.gateway.as_str()),
                (26, "10.244.9.1")
            );
            got.push(reply.address.parse::<Ipv4Addr>().unwrap());
        }
        let unique: BTreeSet<_> = got.iter().copied().collect();
        assert_eq!(
            unique.len(),
            50,
            "two attachments shared an address: {got:?}"
        );
        for ip in &unique {
            let last = ip.octets()[3];
            assert!(
                (2..=62).contains(&last) && ip.octets()[..3] == [10, 244, 9],
                "{ip}"
            );
        }
        // The same attachment again: the same address (a retried ADD).
        let mut c = client.clone();
        let again = c.allocate_address(allocate(7)).await.unwrap().into_inner();
        assert_eq!(again.address.parse::<Ipv4Addr>().unwrap(), got[7]);

        let status = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!((status.addresses_used, status.addresses_total), (50, 61));

        // The rest of the range, then a clear error naming it.
        for i in 50..61 {
            c.allocate_address(allocate(i)).await.expect("room for 61");
        }
        let full = c.allocate_address(allocate(61)).await.unwrap_err();
        assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");
        assert!(full.message().contains(CIDR), "{}", full.message());

        // GC: everything but the first ten goes.
        let keep: Vec<_> = (0..10).map(attachment).collect();
        let retained = c
            .retain_addresses(RetainAddressesRequest { keep })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(retained.released.len(), 51);
        assert!(retained
            .released
            .iter()
            .all(|r| r.attachment.as_ref().unwrap().ifname == "eth0"));

        // DEL, twice: the second finds nothing to free and is no error.
        let del = || ReleaseAddressRequest {
            attachment: Some(attachment(3)),
        };
        let first = c.release_address(del()).await.unwrap().into_inner();
        assert_eq!(first.released.parse::<Ipv4Addr>().unwrap(), got[3]);
        let second = c.release_address(del()).await.unwrap().into_inner();
        assert_eq!(second.released, "");

        // A request without an interface name says what is missing.
        let bad = c
            .allocate_address(AllocateAddressRequest {
                attachment: Some(Attachment::new("abc", "")),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(
            bad.message().contains("interface name"),
            "{}",
            bad.message()
        );
    });

    // The status the agent publishes follows the API's changes.
    let status: Value = sb.status_json();
    assert_eq!(status["ipam"]["used"], 9, "{status}");

    // Addresses survive a restart; a stopped agent leaves no socket behind,
    // even with a client still connected and idle (the agent must not wait
    // for it to hang up).
    let idle = rt.block_on(async {
        let mut c = lash_api::connect(&socket).await.unwrap();
        c.status(StatusRequest {}).await.unwrap();
        c
    });
    let stopping = std::time::Instant::now();
    sb.stop_agent(false).unwrap();
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(10),
        "SIGTERM took {:?} with an idle client connected",
        stopping.elapsed()
    );
    drop(idle);
    assert!(!socket.exists(), "socket left after the agent stopped");
    rt.block_on(async {
        assert!(
            lash_api::connect(&socket).await.is_err(),
            "nothing listens: the plugin must see the agent as unreachable"
        );
    });
    sb.start_agent(&["--pod-cidr", CIDR]).expect("agent again");
    rt.block_on(async {
        let mut c = lash_api::connect(&socket).await.unwrap();
        let again = c.allocate_address(allocate(5)).await.unwrap().into_inner();
        assert_eq!(again.address.parse::<Ipv4Addr>().unwrap(), got_fifth(&sb));
    });
    sb.stop_agent(false).unwrap();
}

/// What ipam.json holds for attachment 5 (the API must agree with it after a
/// restart).
fn got_fifth(sb: &Sandbox) -> Ipv4Addr {
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state_dir().join("ipam.json")).unwrap())
            .unwrap();
    file["allocations"][attachment(5).owner()]
        .as_str()
        .unwrap_or_else(|| panic!("no allocation for attachment 5 in {file}"))
        .parse()
        .unwrap()
}
