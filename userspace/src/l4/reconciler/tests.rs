use super::*;
use crate::config;

fn cfg(services: &str) -> Config {
    let text = format!(
        "[node]\nname = \"t\"\ninterfaces = [\"eth0\"]\n[dataplane]\nmaglev_table_size = 251\nencap_source_v4 = \"10.255.0.0/24\"\n{services}"
    );
    match config::parse(&text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

const TWO: &str = r#"
[[service]]
name = "web"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
  [[service.backend]]
  address = "10.0.0.21"
  [[service.backend]]
  address = "10.0.0.22"

[[service]]
name = "dns"
vip = "203.0.113.10"
protocol = "udp"
  [[service.backend]]
  address = "10.0.0.22"
"#;

fn tables(ops: &[Op]) -> Vec<(u32, Arc<Vec<u32>>)> {
    ops.iter()
        .filter_map(|o| match o {
            Op::SetService { id, table, .. } => Some((*id, table.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn first_apply_sets_backends_before_tables() {
    let mut r = Reconciler::new();
    let ops = r.apply(&cfg(TWO)).unwrap();
    let first_service = ops
        .iter()
        .position(|o| matches!(o, Op::SetService { .. }))
        .unwrap();
    let backends = ops[..first_service]
        .iter()
        .filter(|o| matches!(o, Op::SetBackend { .. }))
        .count();
    assert_eq!(backends, 2, "{ops:?}");
    let t = tables(&ops);
    assert_eq!(t.len(), 2);
    for (_, table) in &t {
        assert_eq!(table.len(), 251);
        assert!(table.iter().all(|&b| b != NO_BACKEND));
    }
    // The UDP service only has 10.0.0.22: one backend id in its whole table.
    let ids: BTreeSet<u32> = t[1].1.iter().copied().collect();
    assert_eq!(ids.len(), 1);
}

#[test]
fn unchanged_config_produces_no_ops() {
    let mut r = Reconciler::new();
    r.apply(&cfg(TWO)).unwrap();
    assert!(r.apply(&cfg(TWO)).unwrap().is_empty());
}

#[test]
fn changing_one_service_leaves_the_other_alone() {
    let mut r = Reconciler::new();
    let first = r.apply(&cfg(TWO)).unwrap();
    let changed = TWO.replace(
        "protocol = \"udp\"\n  [[service.backend]]\n  address = \"10.0.0.22\"",
        "protocol = \"udp\"\n  [[service.backend]]\n  address = \"10.0.0.22\"\n  [[service.backend]]\n  address = \"10.0.0.21\"",
    );
    let ops = r.apply(&cfg(&changed)).unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    let web_id = tables(&first)[0].0;
    assert!(matches!(&ops[0], Op::SetService { id, .. } if *id != web_id));
}

#[test]
fn removed_backend_is_invalidated_after_tables_and_its_slot_gets_a_new_generation() {
    let mut r = Reconciler::new();
    r.apply(&cfg(TWO)).unwrap();
    let gone: IpAddr = "10.0.0.21".parse().unwrap();
    let old = r.backends[&gone].clone();
    let without = TWO.replace("  [[service.backend]]\n  address = \"10.0.0.21\"\n", "");
    let ops = r.apply(&cfg(&without)).unwrap();
    let last = ops.last().unwrap();
    match last {
        Op::SetBackend { id, backend } => {
            assert_eq!(*id, old.id);
            assert_eq!(backend.flags, 0);
            assert!(backend.generation > old.generation);
        }
        other => panic!("expected the invalidation last, got {other:?}"),
    }
    for (_, t) in tables(&ops) {
        assert!(!t.contains(&old.id));
    }
    // The slot is reused with yet another generation.
    let ops = r.apply(&cfg(TWO)).unwrap();
    let reused = ops
        .iter()
        .find_map(|o| match o {
            Op::SetBackend { id, backend } if *id == old.id => Some(*backend),
            _ => None,
        })
        .unwrap();
    assert!(reused.generation > old.generation + 1);
}

#[test]
fn next_hop_marks_backend_valid_once() {
    let mut r = Reconciler::new();
    r.apply(&cfg(TWO)).unwrap();
    let a: IpAddr = "10.0.0.22".parse().unwrap();
    let nh = NextHop {
        ifindex: 2,
        mac: [2, 0, 0, 0, 0, 22],
        src_mac: [2, 0, 0, 0, 0, 11],
    };
    match r.set_next_hop(a, Some(nh)) {
        Some(Op::SetBackend { backend, .. }) => {
            assert_eq!(backend.flags, BACKEND_F_VALID);
            assert_eq!(backend.mac, nh.mac);
            assert_eq!(backend.src_mac, nh.src_mac);
            assert_eq!(backend.ifindex, 2);
            assert_eq!(backend.addr[..4], [10, 0, 0, 22]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.set_next_hop(a, Some(nh)), None);
    assert_eq!(r.set_next_hop("10.9.9.9".parse().unwrap(), Some(nh)), None);
}

#[test]
fn all_drained_service_has_no_backend_slots() {
    let mut r = Reconciler::new();
    let drained = TWO.replace(
        "address = \"10.0.0.22\"\n\n",
        "address = \"10.0.0.22\"\n  weight = 0\n\n",
    );
    let drained = drained.replace(
        "address = \"10.0.0.21\"\n",
        "address = \"10.0.0.21\"\n  weight = 0\n",
    );
    let ops = r.apply(&cfg(&drained)).unwrap();
    let t = tables(&ops);
    assert!(
        t[0].1.iter().all(|&b| b == NO_BACKEND),
        "{:?}",
        &t[0].1[..5]
    );
}

#[test]
fn service_key_is_in_network_order() {
    let c = cfg(TWO);
    let k = service_key(&c.services[0]);
    assert_eq!(k.port, 80u16.to_be());
    assert_eq!(k.proto, PROTO_TCP);
    assert_eq!(k.family, FAMILY_V4);
    assert_eq!(&k.addr[..4], &[203, 0, 113, 10]);
    assert_eq!(service_key(&c.services[1]).port, 0);
}

/// What `apply` wrote, as the maps would hold it.
fn maps_after(ops: &[Op]) -> (Vec<Backend>, Vec<(ServiceKey, ServiceValue)>) {
    let mut backends = vec![Backend::default(); 8];
    let mut services = Vec::new();
    for op in ops {
        match op {
            Op::SetBackend { id, backend } => backends[*id as usize] = *backend,
            Op::SetService { key, id, table, .. } => services.push((
                *key,
                ServiceValue {
                    id: *id,
                    table_size: table.len() as u32,
                    flags: 0,
                    _pad: 0,
                },
            )),
            Op::RemoveService { .. } => {}
        }
    }
    (backends, services)
}

#[test]
fn adopting_the_maps_keeps_ids_generations_and_tables() {
    let mut first = Reconciler::new();
    let mut ops = first.apply(&cfg(TWO)).unwrap();
    let nh = NextHop {
        ifindex: 2,
        mac: [2, 0, 0, 0, 0, 21],
        src_mac: [2, 0, 0, 0, 0, 11],
    };
    ops.extend(first.set_next_hop("10.0.0.21".parse().unwrap(), Some(nh)));
    let (backends, services) = maps_after(&ops);

    let mut second = Reconciler::adopt(&backends, &services);
    assert_eq!(second.backend_ids(), first.backend_ids());
    assert_eq!(second.next_hop(&"10.0.0.21".parse().unwrap()), Some(nh));
    let again = second.apply(&cfg(TWO)).unwrap();
    // No backend is touched; each table is rewritten once, identical.
    assert!(
        again.iter().all(|o| matches!(o, Op::SetService { .. })),
        "{again:?}"
    );
    assert_eq!(tables(&again), tables(&ops));
    assert!(second.apply(&cfg(TWO)).unwrap().is_empty());
}

#[test]
fn adopting_then_removing_a_backend_invalidates_its_flows() {
    let mut first = Reconciler::new();
    let ops = first.apply(&cfg(TWO)).unwrap();
    let (backends, services) = maps_after(&ops);
    let mut second = Reconciler::adopt(&backends, &services);
    let without = TWO.replace("  [[service.backend]]\n  address = \"10.0.0.21\"\n", "");
    let ops = second.apply(&cfg(&without)).unwrap();
    let gone = first.backends[&"10.0.0.21".parse::<IpAddr>().unwrap()].clone();
    assert!(ops.iter().any(|o| matches!(o, Op::SetBackend { id, backend } if *id == gone.id && backend.generation > gone.generation && backend.flags == 0)));
}

#[test]
fn adopting_stale_services_removes_them() {
    let mut first = Reconciler::new();
    let ops = first.apply(&cfg(TWO)).unwrap();
    let (backends, services) = maps_after(&ops);
    let mut second = Reconciler::adopt(&backends, &services);
    let only_web = TWO
        .split("[[service]]\nname = \"dns\"")
        .next()
        .unwrap()
        .to_string();
    let ops = second.apply(&cfg(&only_web)).unwrap();
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, Op::RemoveService { .. }))
            .count(),
        1,
        "{ops:?}"
    );
}

#[test]
fn forwarding_mode_travels_with_the_service_and_a_change_rewrites_it() {
    let mut r = Reconciler::new();
    let ops = r.apply(&cfg(TWO)).unwrap();
    assert!(ops.iter().all(
        |o| !matches!(o, Op::SetService { forwarding, .. } if *forwarding != Forwarding::Dsr)
    ));
    let c = cfg(&TWO.replacen(
        "protocol = \"tcp\"",
        "protocol = \"tcp\"\nforwarding = \"ipip\"",
        1,
    ));
    let ops = r.apply(&c).unwrap();
    // Only the web service changed mode: its table is rewritten with the new mode, the
    // backends stay as they are.
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(matches!(
        &ops[0],
        Op::SetService {
            forwarding: Forwarding::Ipip,
            ..
        }
    ));
    assert!(r.apply(&c).unwrap().is_empty());
    // 10.0.0.21 is used only by the IPIP service, 10.0.0.22 also by the DSR one.
    let routed = Reconciler::routed_ok(&c);
    assert_eq!(
        routed.into_iter().collect::<Vec<_>>(),
        vec!["10.0.0.21".parse::<IpAddr>().unwrap()]
    );
}
