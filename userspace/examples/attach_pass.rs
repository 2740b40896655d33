//! `attach_pass IFACE PIN`: the lab helper, by hand.
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let iface = args.next().unwrap_or_else(|| "pt-dpt1".into());
    let pin = args
        .next()
        .unwrap_or_else(|| "/sys/fs/bpf/portier/lab/pass-pt-dpt1".into());
    portier::dataplane::attach_pass(&iface, std::path::Path::new(&pin))?;
    Ok(())
}
