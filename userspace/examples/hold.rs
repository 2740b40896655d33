//! Manual check of the attached path: `hold NODE SECONDS IFACE...` loads, pins and attaches the
//! balancer, waits, and tears down on exit (inspect with bpftool meanwhile).
use portier::dataplane::{Dataplane, DataplaneOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let node = args.next().unwrap_or_else(|| "test".into());
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dp = Dataplane::load(&DataplaneOptions::new(node, args.collect()))?;
    println!("{:?}", dp.interfaces());
    std::thread::sleep(std::time::Duration::from_secs(secs));
    Ok(())
}
