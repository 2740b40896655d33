//! The docker lab (`cargo xtask lab up --docker`, [`crate::lab::Variant::docker`]): each
//! host runs a Docker engine of its own (Debian's `docker.io`, [`Engine::start_in`]) in its
//! namespace, with its files under the lab's run directory (`docker-hostN/`: data root, exec
//! root, pid file, socket), and the host's containers `hostN-todo1`, `-todo2`, `-shop1` are
//! containers of that engine on its bridge network `lab` (br0, 172.17.0.0/16, not routed).
//! The host's portier (examples/lab-host-docker.toml) finds them by `[discovery.docker]`
//! labels: no container address is written anywhere.
//!
//! No registry is reachable: the image is the lab app built as a static binary by `rustc`
//! alone (it depends on std only) and `docker import`ed `FROM scratch`; it names itself
//! after the container's hostname and drains on `docker stop`.

use crate::dockerd::{self, Engine};
use crate::lab::{HOSTS, Lab, examples_dir};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The engines' bridge network, its Linux bridge and subnet (the gateway, .1, is the host).
pub const NETWORK: &str = "lab";
const BRIDGE: &str = "br0";
const SUBNET: &str = "172.17.0.0/16";
/// The image of every lab container.
pub const IMAGE: &str = "portier-lab/app:1";

/// Where `host`'s engine keeps its files in lab `prefix`.
pub fn engine_dir(prefix: &str, host: &str) -> PathBuf {
    PathBuf::from(format!("/run/portier-lab/{prefix}/docker-{host}"))
}

/// The labels of lab container `container` (`todo1`, `todo2`, `todo3`... serve
/// todo.example, `shop1`... shop.example), in the pools of examples/lab-host-docker.toml.
pub fn labels(container: &str) -> [(&'static str, &'static str); 2] {
    if container.starts_with("shop") {
        [("portier.host", "shop.example"), ("portier.pool", "shop")]
    } else {
        [("portier.host", "todo.example"), ("portier.pool", "todo")]
    }
}

/// The `docker run` arguments that start lab container `container` on `host`: its name and
/// hostname `host-container` (what the app answers with), the network, the labels. Nothing
/// else: the port is the image's `EXPOSE`.
pub fn run_args(host: &str, container: &str) -> Vec<String> {
    let name = format!("{host}-{container}");
    let mut args: Vec<String> = ["run", "-d", "--name", &name, "--hostname", &name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--network".into(), NETWORK.into()]);
    for (k, v) in labels(container) {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args.push(IMAGE.into());
    args
}

/// Starts `host`'s engine in lab `prefix` with the lab image (`app`, the static lab app)
/// and network.
pub fn start_engine(prefix: &str, host: &str, app: &Path) -> Result<Engine> {
    let e = Engine::start_in(&format!("{prefix}-{host}"), &engine_dir(prefix, host))
        .with_context(|| format!("{host}: starting its Docker engine"))?;
    let root = e.dir.join("image");
    std::fs::create_dir_all(&root)?;
    std::fs::copy(app, root.join("portier-lab-app"))?;
    e.import(
        IMAGE,
        &root,
        &[
            "EXPOSE 8080",
            r#"ENTRYPOINT ["/portier-lab-app"]"#,
            r#"CMD ["--http", "0.0.0.0:8080"]"#,
        ],
    )?;
    e.network(NETWORK, BRIDGE, SUBNET)?;
    Ok(e)
}

/// `docker ARGS` against `host`'s engine in lab `prefix`; stdout, trimmed.
pub fn docker(prefix: &str, host: &str, args: &[&str]) -> Result<String> {
    dockerd::docker_at(&engine_dir(prefix, host), args)
}

/// examples/lab-host-docker.toml for `host` of lab `l`: its node name and engine.
pub fn host_config(l: &Lab, host: &str) -> Result<String> {
    let path = examples_dir().join("lab-host-docker.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let endpoint = format!(
        "unix://{}",
        engine_dir(&l.prefix, host).join("docker.sock").display()
    );
    Ok(text
        .replace("name = \"pt-host1\"", &format!("name = \"{}\"", l.ns(host)))
        .replace(
            "unix:///run/portier-lab/pt/docker-host1/docker.sock",
            &endpoint,
        ))
}

/// Removes every engine of lab `prefix` (for `lab down`, also of a lab left up).
pub fn remove_engines(prefix: &str) {
    for (host, _) in HOSTS {
        let dir = engine_dir(prefix, host);
        if dir.exists() {
            dockerd::remove(&format!("{prefix}-{host}"), &dir);
        }
    }
}

/// The lab app as a static binary (glibc's static PIE), for an image `FROM scratch`: built
/// next to the other binaries by `rustc` when missing or older than its source.
pub fn static_app() -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/portier-lab-app.rs");
    let out = crate::lab::bin_dir().join("portier-lab-app-static");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(written)) = (modified(&out), modified(&src))
        && built >= written
    {
        return Ok(out);
    }
    // Built aside and renamed: labs brought up side by side may build it at once.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let result = Command::new("rustc")
        .args(["--edition", "2024", "-C", "opt-level=2"])
        .args(["-C", "target-feature=+crt-static", "-C", "strip=symbols"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .context("cannot run rustc")?;
    if !result.status.success() {
        bail!(
            "rustc {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The servers of `pool` on `host`'s portier now, as `portier status --json` lists them
/// (`address`, `source`: `config` or `container NAME (ID)`, `outstanding`...).
pub fn pool_servers(l: &Lab, host: &str, pool: &str) -> Result<Vec<serde_json::Value>> {
    let portier = crate::lab::bin_dir().join("portier");
    let text = crate::netns::exec_in(
        &l.ns(host),
        &portier.to_string_lossy(),
        &["status", "--json", "--node", &l.ns(host)],
    )?;
    let mut status: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{host}: status {text:?}"))?;
    Ok(match status["l7"]["pools"][pool]["servers"].take() {
        serde_json::Value::Array(servers) => servers,
        _ => Vec::new(),
    })
}

/// The server of `host`'s pool `pool` that container `name` is, if it is one now.
pub fn server_of(l: &Lab, host: &str, pool: &str, name: &str) -> Result<Option<serde_json::Value>> {
    let want = format!("container {name} (");
    Ok(pool_servers(l, host, pool)?
        .into_iter()
        .find(|s| s["source"].as_str().is_some_and(|s| s.starts_with(&want))))
}
