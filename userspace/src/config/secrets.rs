//! Config files that hold secrets (OSPF passwords and MD5 keys, BFD keys, BGP TCP-MD5
//! passwords) should be readable by their owner only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::model::Config;
use super::ospf::OspfAuth;

/// Where `config` holds secrets, as config keys (empty when it holds none).
fn secret_keys(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ospf) = &config.ospf {
        for (i, iface) in ospf.interfaces.iter().enumerate() {
            match iface.auth {
                OspfAuth::None => {}
                OspfAuth::Simple(_) => out.push(format!("ospf.interface[{i}].password")),
                OspfAuth::Md5(_) => out.push(format!("ospf.interface[{i}].md5_keys")),
            }
        }
    }
    if let Some(bfd) = &config.bfd {
        for (i, peer) in bfd.peers.iter().enumerate() {
            if peer.auth.is_some() {
                out.push(format!("bfd.peer[{i}].key"));
            }
        }
    }
    if let Some(bgp) = &config.bgp {
        for (i, peer) in bgp.peers.iter().enumerate() {
            if peer.password.is_some() {
                out.push(format!("bgp.peer[{i}].password"));
            }
        }
    }
    out
}

/// A warning when the file at `path`, which `config` was read from, holds secrets and is
/// readable by its group or others (mode & 0o077 != 0). For `portier check`, like
/// `warnings`; the secrets themselves are never named.
pub fn secret_warnings(path: &Path, config: &Config) -> Vec<String> {
    let keys = secret_keys(config);
    if keys.is_empty() {
        return Vec::new();
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Vec::new();
    }
    vec![format!(
        "holds secrets ({}) but its mode is {mode:03o}: group or others may read it (chmod 600)",
        keys.join(", ")
    )]
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::parse;
    use super::*;

    const BASE: &str = "[node]\nname = \"lb1\"\n";

    fn with_file(mode: u32, text: &str, name: &str) -> Vec<String> {
        let config = parse(text, "p.toml").unwrap();
        let dir = std::env::temp_dir().join(format!(
            "portier-secrets-{}-{name}-{mode:o}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("portier.toml");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let warnings = secret_warnings(&path, &config);
        fs::remove_dir_all(&dir).unwrap();
        warnings
    }

    #[test]
    fn readable_files_with_keys_are_warned_about_and_the_keys_never_shown() {
        let ospf = format!(
            "{BASE}[ospf]\nrouter_id = \"10.0.0.11\"\n[[ospf.interface]]\nname = \"eth0\"\n\
             auth = \"md5\"\nmd5_keys = [{{ id = 1, key = \"s3cret\" }}]\n\
             [[ospf.interface]]\nname = \"eth1\"\nauth = \"simple\"\npassword = \"pw\"\n"
        );
        let w = with_file(0o644, &ospf, "ospf");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("ospf.interface[0].md5_keys"), "{w:?}");
        assert!(w[0].contains("ospf.interface[1].password"), "{w:?}");
        assert!(w[0].contains("644"), "{w:?}");
        assert!(
            !w[0].contains("s3cret") && !w[0].contains("\"pw\""),
            "{w:?}"
        );
        // Group-readable counts too; owner-only does not warn.
        assert_eq!(with_file(0o640, &ospf, "ospf").len(), 1);
        assert!(with_file(0o600, &ospf, "ospf").is_empty());
        assert!(with_file(0o400, &ospf, "ospf").is_empty());

        let bgp = format!(
            "{BASE}[bgp]\nasn = 64513\nrouter_id = \"10.0.0.11\"\n[[bgp.peer]]\n\
             address = \"10.0.0.1\"\nremote_as = 64512\npassword = \"portier-lab\"\n"
        );
        let w = with_file(0o604, &bgp, "bgp");
        assert!(
            w.len() == 1 && w[0].contains("bgp.peer[0].password"),
            "{w:?}"
        );
        let bfd = format!(
            "{BASE}[bfd]\n[[bfd.peer]]\naddress = \"10.0.0.1\"\ninterface = \"eth0\"\n\
             auth = \"simple\"\nkey = \"k\"\n"
        );
        let w = with_file(0o660, &bfd, "bfd");
        assert!(w.len() == 1 && w[0].contains("bfd.peer[0].key"), "{w:?}");
    }

    #[test]
    fn files_without_keys_may_be_world_readable() {
        let plain = format!(
            "{BASE}[ospf]\nrouter_id = \"10.0.0.11\"\n[[ospf.interface]]\nname = \"eth0\"\n"
        );
        assert!(with_file(0o644, &plain, "plain").is_empty());
    }
}
