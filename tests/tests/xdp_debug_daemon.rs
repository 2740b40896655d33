//! `portier debug xdp on|off` on a running daemon: its balancer, attached to a veth, logs a
//! dropped SYN and a new flow with their reasons into the daemon's own output, and nothing
//! once debug is off again. Namespaces `xdg-r` (the client) and `xdg-p` (portier).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use portier_tests::lab::Daemon;
use portier_tests::netns::{in_netns, ip_in};
use portier_tests::pair::Pair;

const VIP: &str = "10.77.91.10";

fn config(pair: &Pair, debug: bool) -> String {
    format!(
        "[node]\nname = \"xdg-p\"\ninterfaces = [\"eth0\"]\n\
         [dataplane]\ndebug = {debug}\n\
         [[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\n\
           [[service.backend]]\n  address = \"{client}\"\n\
         [[service]]\nname = \"nowhere\"\nvip = \"{VIP}\"\nport = 81\nprotocol = \"tcp\"\n\
           [[service.backend]]\n  address = \"10.77.90.99\"\n",
        client = pair.addr(1),
    )
}

/// One SYN (and its retransmissions) from the client to VIP:`port`; nobody answers.
fn knock(pair: &Pair, port: u16) -> Result<()> {
    let to: SocketAddr = format!("{VIP}:{port}").parse()?;
    in_netns(&pair.ns("r"), move || {
        let _ = TcpStream::connect_timeout(&to, Duration::from_millis(300));
    })
}

/// Lines of the daemon's log from `from` on holding every one of `parts`.
fn lines_with(log: &str, from: usize, parts: &[&str]) -> usize {
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

#[test]
fn debug_xdp_on_logs_drops_and_new_flows_and_off_logs_nothing() -> Result<()> {
    let pair = Pair::new("xdg", 90)?;
    ip_in(
        &pair.ns("r"),
        &[
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            &pair.addr(2).to_string(),
        ],
    )?;
    let dir = std::env::temp_dir().join("portier-xdg");
    let d = Daemon::spawn(&pair.ns("p"), "xdg-p", &config(&pair, false), &dir)?;

    // Off (the config's default): the plain program, no records.
    let start = d.log_text().len();
    knock(&pair, 80)?;
    knock(&pair, 81)?;
    let reply = d.cli(&pair.ns("p"), &["debug", "xdp", "on"])?;
    ensure!(
        reply.contains("portier_lb_debug"),
        "debug on answered {reply}"
    );
    let table = d.cli(&pair.ns("p"), &["status"])?;
    ensure!(
        table.contains("XDP debug on"),
        "portier status while debug is on:\n{table}"
    );
    ensure!(
        lines_with(&d.log_text(), start, &["portier::xdp: xdp "]) == 0,
        "records while debug was off:\n{}",
        d.log_text()
    );

    let on = d.log_text().len();
    knock(&pair, 81)?;
    knock(&pair, 80)?;
    let client = pair.addr(1).to_string();
    portier_tests::wait::until(
        "the drop and the new flow logged",
        Duration::from_secs(10),
        || {
            let log = d.log_text();
            Ok(lines_with(
                &log,
                on,
                &["xdp drop drop_", &client, &format!("-> {VIP}:81 tcp")],
            ) >= 1
                && lines_with(
                    &log,
                    on,
                    &[
                        "xdp new_flow conntrack_new",
                        &client,
                        &format!("-> {VIP}:80 tcp via"),
                    ],
                ) >= 1)
        },
    )
    .with_context(|| format!("daemon log:\n{}", d.log_text()))?;

    let reply = d.cli(&pair.ns("p"), &["debug", "xdp", "off"])?;
    ensure!(
        reply.contains("\"portier_lb\""),
        "debug off answered {reply}"
    );
    let off = d.log_text().len();
    knock(&pair, 81)?;
    knock(&pair, 80)?;
    // The SYNs went through the plain program (its counters moved) and left no record.
    let status = d.cli(&pair.ns("p"), &["status", "--json"])?;
    ensure!(status.contains("\"xdp_debug\": false"), "status: {status}");
    ensure!(
        lines_with(&d.log_text(), off, &["portier::xdp: xdp "]) == 0,
        "records after debug off:\n{}",
        d.log_text()
    );

    // `[dataplane] debug = true` by reload turns it on as the command did.
    let reloaded = d.log_text().len();
    d.reload(&config(&pair, true))?;
    knock(&pair, 81)?;
    portier_tests::wait::until(
        "a drop logged after the reload",
        Duration::from_secs(10),
        || {
            Ok(lines_with(
                &d.log_text(),
                reloaded,
                &["xdp drop drop_", &format!("-> {VIP}:81")],
            ) >= 1)
        },
    )
    .with_context(|| format!("daemon log:\n{}", d.log_text()))?;
    Ok(())
}
