//! `accept = false` (RFC 5798 Accept_Mode off, keepalived's `no_accept`): a master that is not
//! the address owner owns the VIPs on the link (they are on the interface, so ARP and ND are
//! answered) but its IP stack drops packets addressed to them.
//!
//! The drop is an nftables table of the node's own, `inet portier_<node>`: an input-hook chain
//! that drops packets to the addresses in two sets (one per family), counting them in a named
//! counter. Instances add their VIPs to the sets on becoming master and take them out again
//! on leaving it; the part creates the table when an instance needs it, and deletes it on exit
//! and on startup (a table left by a killed process must not keep dropping).
//!
//! XDP runs before nftables: an L4 balancer on the node keeps forwarding VIP traffic.
//!
//! The batches are built here as data (testable as JSON) and applied through `nft -j`.

use std::borrow::Cow;
use std::net::IpAddr;

use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, SetItem};
use nftables::helper::{self, NftablesError};
use nftables::schema::{
    Chain, Counter, Element, NfListObject, Nftables, Rule, Set, SetType, SetTypeValue, Table,
};
use nftables::stmt::{self, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

pub const SET_V4: &str = "no_accept_v4";
pub const SET_V6: &str = "no_accept_v6";
pub const COUNTER: &str = "no_accept_drops";
const CHAIN: &str = "input";

/// `portier_<node>`: node names are `[a-z0-9-]`, `-` is not an nft identifier character.
pub fn table_name(node: &str) -> String {
    let node: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("portier_{node}")
}

fn table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: Cow::Owned(name.to_owned()),
        handle: None,
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn matches(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn daddr_in(family: &'static str, set: &str) -> Statement<'static> {
    matches(
        payload(family, "daddr"),
        Expression::String(Cow::Owned(format!("@{set}"))),
    )
}

fn rule(table: &str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_owned()),
        chain: Cow::Borrowed(CHAIN),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: None,
    })
}

/// Deletes the table: on exit, and on startup for one a killed process left behind.
pub fn teardown(name: &str) -> Nftables<'static> {
    let mut batch = Batch::new();
    batch.delete(NfListObject::Table(table(name)));
    batch.to_nftables()
}

/// The whole table, empty sets: applied once, when the first `accept = false` instance starts.
pub fn setup(name: &str) -> Nftables<'static> {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table(name)));
    for (set, kind) in [(SET_V4, SetType::Ipv4Addr), (SET_V6, SetType::Ipv6Addr)] {
        batch.add(NfListObject::Set(Box::new(Set {
            family: NfFamily::INet,
            table: Cow::Owned(name.to_owned()),
            name: Cow::Borrowed(set),
            set_type: SetTypeValue::Single(kind),
            ..Set::default()
        })));
    }
    batch.add(NfListObject::Counter(Counter {
        family: NfFamily::INet,
        table: Cow::Owned(name.to_owned()),
        name: Cow::Borrowed(COUNTER),
        ..Counter::default()
    }));
    batch.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Owned(name.to_owned()),
        name: Cow::Borrowed(CHAIN),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Input),
        prio: Some(0),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    let drop = || {
        [
            Statement::Counter(stmt::Counter::Named(Cow::Borrowed(COUNTER))),
            Statement::Drop(None),
        ]
    };
    let mut v4 = vec![daddr_in("ip", SET_V4)];
    v4.extend(drop());
    batch.add(rule(name, v4));
    // Neighbour solicitations to a VIP (reachability probes) must still be answered, or the
    // LAN would forget the master's MAC for it: owning the VIP on L2 is what no-accept keeps.
    let nd = Expression::Named(NamedExpression::Set(vec![
        SetItem::Element(Expression::String(Cow::Borrowed("nd-neighbor-solicit"))),
        SetItem::Element(Expression::String(Cow::Borrowed("nd-neighbor-advert"))),
    ]));
    batch.add(rule(
        name,
        vec![
            daddr_in("ip6", SET_V6),
            matches(payload("icmpv6", "type"), nd),
            Statement::Accept(None),
        ],
    ));
    let mut v6 = vec![daddr_in("ip6", SET_V6)];
    v6.extend(drop());
    batch.add(rule(name, v6));
    batch.to_nftables()
}

/// Adds (`add`) or removes the VIPs from the drop sets.
pub fn elements(name: &str, vips: &[IpAddr], add: bool) -> Nftables<'static> {
    let mut batch = Batch::new();
    for (set, v4) in [(SET_V4, true), (SET_V6, false)] {
        let elem: Vec<Expression<'static>> = vips
            .iter()
            .filter(|v| v.is_ipv4() == v4)
            .map(|v| Expression::String(Cow::Owned(v.to_string())))
            .collect();
        if elem.is_empty() {
            continue;
        }
        let element = NfListObject::Element(Element {
            family: NfFamily::INet,
            table: Cow::Owned(name.to_owned()),
            name: Cow::Borrowed(set),
            elem: Cow::Owned(elem),
        });
        if add {
            batch.add(element);
        } else {
            batch.delete(element);
        }
    }
    batch.to_nftables()
}

/// Runs `nft -j -f -` with the batch: one transaction, all or nothing.
pub fn apply(batch: &Nftables<'_>) -> Result<(), NftablesError> {
    helper::apply_ruleset(batch)
}

/// Whether the table exists (`nft -j list tables`): a stale one is deleted only if there,
/// so a clean start does not make nft complain.
pub fn exists(name: &str) -> Result<bool, NftablesError> {
    let raw = helper::get_current_ruleset_raw(helper::DEFAULT_NFT, ["list", "tables", "inet"])?;
    Ok(has_table(&raw, name))
}

/// Whether `nft -j list tables` output lists the inet table `name`.
pub fn has_table(json: &str, name: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return false;
    };
    value["nftables"].as_array().is_some_and(|objects| {
        objects
            .iter()
            .any(|o| o["table"]["family"] == "inet" && o["table"]["name"] == name)
    })
}

/// Packets dropped so far, from `nft -j list counter`.
pub fn dropped(name: &str) -> Result<u64, NftablesError> {
    let raw = helper::get_current_ruleset_raw(
        helper::DEFAULT_NFT,
        ["list", "counter", "inet", name, COUNTER],
    )?;
    Ok(counter_packets(&raw).unwrap_or(0))
}

/// The packet count in `nft -j list counter` output. Read as plain JSON: the count is a u64,
/// wider than the schema's field.
pub fn counter_packets(json: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o["counter"]["packets"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_names_are_nft_identifiers() {
        assert_eq!(table_name("lb1"), "portier_lb1");
        assert_eq!(table_name("vk1-a"), "portier_vk1_a");
    }

    #[test]
    fn setup_drops_vip_traffic_but_keeps_neighbour_discovery() {
        let json = serde_json::to_value(setup("portier_t")).unwrap();
        let objects = json["nftables"].as_array().unwrap();
        let added: Vec<&serde_json::Value> = objects.iter().map(|o| &o["add"]).collect();
        assert_eq!(
            added[0],
            &json!({"table": {"family": "inet", "name": "portier_t"}})
        );
        assert_eq!(added[1]["set"]["type"], "ipv4_addr");
        assert_eq!(added[2]["set"]["type"], "ipv6_addr");
        assert_eq!(added[3]["counter"]["name"], COUNTER);
        let chain = &added[4]["chain"];
        assert_eq!(
            (&chain["hook"], &chain["type"], &chain["policy"]),
            (&json!("input"), &json!("filter"), &json!("accept"))
        );
        let rules: Vec<&serde_json::Value> =
            added[5..].iter().map(|a| &a["rule"]["expr"]).collect();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0],
            &json!([
                {"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": "@no_accept_v4", "op": "=="}},
                {"counter": COUNTER},
                {"drop": null}
            ])
        );
        // The ND exception comes before the IPv6 drop.
        assert_eq!(rules[1][2], json!({"accept": null}));
        assert_eq!(
            rules[1][1]["match"]["right"],
            json!({"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]})
        );
        assert_eq!(rules[2][0]["match"]["right"], "@no_accept_v6");
        assert_eq!(rules[2][2], json!({"drop": null}));
    }

    #[test]
    fn elements_go_to_their_family_set() {
        let vips: Vec<IpAddr> = vec![
            "203.0.113.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        let json = serde_json::to_value(elements("portier_t", &vips, true)).unwrap();
        assert_eq!(
            json["nftables"],
            json!([
                {"add": {"element": {"family": "inet", "table": "portier_t",
                                     "name": SET_V4, "elem": ["203.0.113.10"]}}},
                {"add": {"element": {"family": "inet", "table": "portier_t",
                                     "name": SET_V6, "elem": ["2001:db8::10"]}}}
            ])
        );
        let json = serde_json::to_value(elements("portier_t", &vips[..1], false)).unwrap();
        let objects = json["nftables"].as_array().unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(
            objects[0]["delete"]["element"]["elem"],
            json!(["203.0.113.10"])
        );
    }

    #[test]
    fn teardown_deletes_the_table() {
        let json = serde_json::to_value(teardown("portier_t")).unwrap();
        assert_eq!(
            json["nftables"],
            json!([{"delete": {"table": {"family": "inet", "name": "portier_t"}}}])
        );
    }

    #[test]
    fn tables_found_by_family_and_name() {
        let out = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "portier_t", "handle": 1}}, {"table": {"family": "inet", "name": "portier_t", "handle": 2}}]}"#;
        assert!(has_table(out, "portier_t"));
        assert!(!has_table(out, "portier_u"));
        let ip_only =
            r#"{"nftables": [{"table": {"family": "ip", "name": "portier_t", "handle": 1}}]}"#;
        assert!(!has_table(ip_only, "portier_t"));
        assert!(!has_table("", "portier_t"));
    }

    #[test]
    fn counter_packets_read_from_nft_json() {
        // As nft 1.0.6 prints `nft -j list counter inet portier_t no_accept_drops`.
        let out = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"counter": {"family": "inet", "name": "no_accept_drops", "table": "portier_t", "handle": 3, "packets": 5000000000, "bytes": 420}}]}"#;
        assert_eq!(counter_packets(out), Some(5_000_000_000));
        assert_eq!(counter_packets(r#"{"nftables": []}"#), None);
        assert_eq!(counter_packets("not json"), None);
    }
}
