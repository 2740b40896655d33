//! Docker discovery's decoders of what an engine sends (userspace/src/discovery/docker/):
//! an inspect answer, through the labels, into an inventory and its servers and routes; and
//! an event of the stream. Never panics; whatever a container's labels say, a server's
//! weight stays in range, its pool name is a valid one, and no route has two pools.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portier::discovery::docker::container::Container;
use portier::discovery::docker::events::action_json;
use portier::discovery::docker::inventory::Inventory;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    if which & 1 == 1 {
        let _ = action_json(json);
        return;
    }
    let Ok(Some(c)) = Container::from_inspect_json(json) else {
        return;
    };
    let network = c.networks.keys().next().cloned();
    let mut inv = Inventory::new("portier", network.as_deref(), 4);
    inv.upsert(c.clone());
    // A second container like it (a different id) exercises conflicts.
    inv.upsert(Container {
        id: format!("{}x", c.id),
        created: format!("{}x", c.created),
        ..c
    });
    let d = inv.discovered();
    for s in &d.servers {
        assert!(s.weight <= portier::limits::L7_MAX_WEIGHT, "{s:?}");
        assert!(
            (1..=64).contains(&s.pool.len())
                && s.pool
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
            "{s:?}"
        );
    }
    let mut routes: HashMap<(&str, &str), &str> = HashMap::new();
    for r in &d.routes {
        let pool = routes.entry((&r.host, &r.path_prefix)).or_insert(&r.pool);
        assert_eq!(*pool, r.pool, "{r:?}");
    }
});
