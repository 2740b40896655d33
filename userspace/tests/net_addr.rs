//! VIP addresses added and removed through one rtnetlink socket by several VRRP instances at
//! once. The kernel answers EBUSY to a dump started while another dump runs on the same
//! socket; two instances releasing their VIPs in the same instant once left a VIP behind on
//! the backup (lab_vrrp in CI: "cannot remove the VIP: ... Device or resource busy").
//!
//! Runs as root in a network namespace of its own (this test thread's only).

use portier::net::addr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn own_netns() {
    // SAFETY: unshare affects only the calling thread, which is this test's own; the
    // runtime's worker threads it starts afterwards inherit the namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn concurrent_adds_and_removes_on_one_socket_all_take_effect() {
    own_netns();
    // Two workers, as the daemon has: instances run on both at once.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().expect("rtnetlink socket");
        tokio::spawn(connection);
        let lo = addr::link_by_name(&handle, "lo").await.expect("lo");
        addr::set_up(&handle, lo.index).await.expect("lo up");
        // Enough addresses that a dump spans several messages, as on a busy LB.
        let vips: Vec<IpAddr> = (1..=200u8)
            .flat_map(|i| {
                [
                    IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)),
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, u16::from(i))),
                ]
            })
            .collect();
        for round in 0..3 {
            let adds = vips.iter().map(|v| {
                let (h, v, i) = (handle.clone(), *v, lo.index);
                tokio::spawn(async move { addr::add_host(&h, i, v).await })
            });
            for (v, r) in vips.iter().zip(futures::future::join_all(adds).await) {
                let r = r.expect("task");
                assert!(r.is_ok(), "round {round}: add {v}: {r:?}");
            }
            let present = addr::addresses(&handle, lo.index).await.expect("dump");
            for v in &vips {
                assert!(
                    present.iter().any(|(a, _)| a == v),
                    "round {round}: {v} missing"
                );
            }
            let removes = vips.iter().map(|v| {
                let (h, v, i) = (handle.clone(), *v, lo.index);
                tokio::spawn(async move { addr::remove(&h, i, v).await })
            });
            for (v, r) in vips.iter().zip(futures::future::join_all(removes).await) {
                let r = r.expect("task");
                assert!(r.is_ok(), "round {round}: remove {v}: {r:?}");
            }
            let present = addr::addresses(&handle, lo.index).await.expect("dump");
            for v in &vips {
                assert!(
                    !present.iter().any(|(a, _)| a == v),
                    "round {round}: {v} left"
                );
            }
        }
    });
}
