//! The link state database: LSAs keyed by (type, ID, advertising router), aged from the
//! time they were installed (RFC 2328 12.4, 13.2, 14).

use std::collections::BTreeMap;
use std::time::Instant;

use super::lsa::{Lsa, LsaHeader, LsaKey, MAX_AGE};

#[derive(Debug, Clone)]
pub struct Entry {
    /// Header age is the age at `installed`.
    lsa: Lsa,
    installed: Instant,
    /// Set when the instance arrived by flooding (MinLSArrival applies to those).
    pub received: Option<Instant>,
    /// A MaxAge instance has been flooded once; it leaves the database when acknowledged.
    pub maxage_flooded: bool,
}

impl Entry {
    pub fn age(&self, now: Instant) -> u16 {
        let elapsed = now.saturating_duration_since(self.installed).as_secs();
        let age = u64::from(self.lsa.header.age) + elapsed;
        age.min(u64::from(MAX_AGE)) as u16
    }

    pub fn header(&self, now: Instant) -> LsaHeader {
        LsaHeader {
            age: self.age(now),
            ..self.lsa.header
        }
    }

    /// The LSA with its current age.
    pub fn lsa(&self, now: Instant) -> Lsa {
        self.lsa.with_age(self.age(now))
    }

    pub fn body(&self) -> &[u8] {
        self.lsa.body()
    }
}

#[derive(Debug, Default)]
pub struct Lsdb {
    entries: BTreeMap<LsaKey, Entry>,
    /// Entries by LS type (index 0: types outside 1..=5), kept as they come and go.
    by_type: [usize; 6],
}

fn type_index(ls_type: u8) -> usize {
    match ls_type {
        1..=5 => usize::from(ls_type),
        _ => 0,
    }
}

impl Lsdb {
    pub fn get(&self, key: &LsaKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Installs `lsa` replacing any older instance (13.2). Route calculation is out of scope,
    /// so "contents changed" needs no tracking.
    pub fn install(&mut self, lsa: Lsa, now: Instant, received: bool) {
        let maxage_flooded = false;
        let key = lsa.key();
        let old = self.entries.insert(
            key,
            Entry {
                lsa,
                installed: now,
                received: received.then_some(now),
                maxage_flooded,
            },
        );
        if old.is_none() {
            self.by_type[type_index(key.ls_type)] += 1;
        }
    }

    pub fn remove(&mut self, key: &LsaKey) -> Option<Entry> {
        let old = self.entries.remove(key);
        if old.is_some() {
            self.by_type[type_index(key.ls_type)] -= 1;
        }
        old
    }

    /// How many entries have LS type `ls_type`.
    pub fn count_of(&self, ls_type: u8) -> usize {
        self.by_type[type_index(ls_type)]
    }

    pub fn mark_maxage_flooded(&mut self, key: &LsaKey) {
        if let Some(e) = self.entries.get_mut(key) {
            e.maxage_flooded = true;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LsaKey, &Entry)> {
        self.entries.iter()
    }

    /// Current headers of every LSA, for a database description summary list.
    pub fn headers(&self, now: Instant) -> Vec<LsaHeader> {
        self.entries.values().map(|e| e.header(now)).collect()
    }

    /// Keys of LSAs that have reached MaxAge.
    pub fn at_max_age(&self, now: Instant) -> Vec<LsaKey> {
        self.entries
            .iter()
            .filter(|(_, e)| e.age(now) >= MAX_AGE)
            .map(|(k, _)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::ospf::lsa::{INITIAL_SEQ, TYPE_ROUTER};

    fn lsa(age: u16) -> Lsa {
        let id = Ipv4Addr::new(10, 0, 0, 1);
        Lsa::build(TYPE_ROUTER, id, id, 2, INITIAL_SEQ, &[0, 0, 0, 0]).with_age(age)
    }

    #[test]
    fn ages_from_install_time_and_stops_at_max_age() {
        let t0 = Instant::now();
        let mut db = Lsdb::default();
        db.install(lsa(10), t0, true);
        let key = lsa(0).key();
        let e = db.get(&key).unwrap();
        assert_eq!(e.age(t0 + Duration::from_millis(1999)), 11);
        assert_eq!(e.lsa(t0 + Duration::from_secs(100)).header.age, 110);
        assert!(db.at_max_age(t0 + Duration::from_secs(3589)).is_empty());
        assert_eq!(db.at_max_age(t0 + Duration::from_secs(3590)), vec![key]);
        assert_eq!(e.age(t0 + Duration::from_secs(99_999)), MAX_AGE);
        assert_eq!(e.received, Some(t0));
    }

    #[test]
    fn install_replaces_and_remove_forgets() {
        let t0 = Instant::now();
        let mut db = Lsdb::default();
        db.install(lsa(10), t0, false);
        db.install(lsa(0), t0, false);
        assert_eq!(db.len(), 1);
        assert_eq!(db.count_of(TYPE_ROUTER), 1);
        assert_eq!(db.headers(t0)[0].age, 0);
        assert!(db.remove(&lsa(0).key()).is_some());
        assert!(db.remove(&lsa(0).key()).is_none());
        assert!(db.is_empty());
        assert_eq!(db.count_of(TYPE_ROUTER), 0);
    }
}
