//! `cargo xtask package [--debug]`: the Debian package of the daemon, built with dpkg-deb.
//!
//! xtask never links the daemon (its build compiles the eBPF programs): it runs `cargo build`
//! and then the built binary, whose hidden `completions` and `manpage` subcommands print what
//! clap knows about the command line. The files that are not generated (unit, maintainer
//! scripts, control template, copyright, changelog) live in `packaging/`.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The workspace version: xtask takes it from `[workspace.package]` like every member.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Depends when dpkg-shlibdeps cannot say (glibc of Debian 12, where the package is built).
const FALLBACK_DEPENDS: &str = "libc6 (>= 2.36)";

/// Where the package for `arch` lands.
pub fn deb_path(root: &Path, arch: &str) -> PathBuf {
    root.join("target/debian")
        .join(format!("portier_{VERSION}_{arch}.deb"))
}

pub fn architecture() -> Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("cannot run dpkg --print-architecture")?;
    if !out.status.success() {
        bail!("dpkg --print-architecture failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds the daemon (release, or the debug profile with `debug`) and packages it; returns the
/// .deb's path.
pub fn run(root: &Path, debug: bool) -> Result<PathBuf> {
    let started = Instant::now();
    let mut args = vec!["build", "-p", "portier", "--bin", "portier"];
    if !debug {
        args.push("--release");
    }
    crate::cargo(&args)?;
    let built = started.elapsed();
    let profile = if debug { "debug" } else { "release" };
    let binary = root.join("target").join(profile).join("portier");

    let packaged = Instant::now();
    let arch = architecture()?;
    check_changelog(root)?;
    // dpkg-shlibdeps wants debian/control in its working directory and the binaries under
    // debian/<package>/: the staging tree is laid out as a source package's would be.
    let stage = root.join("target/debian/stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let pkg = stage.join("debian/portier");
    let packaging = root.join("packaging");

    mkdirs(&pkg, Path::new("usr/sbin"))?;
    let sbin = pkg.join("usr/sbin/portier");
    // Symbols and debug info are no use to an operator (Debian policy strips them too); the
    // embedded eBPF object is data in .rodata and stays as it is.
    let status = Command::new("strip")
        .args(["--strip-unneeded", "-o"])
        .arg(&sbin)
        .arg(&binary)
        .status()
        .context("cannot run strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed", binary.display());
    }
    set_mode(&sbin, 0o755)?;

    install(
        &pkg,
        "lib/systemd/system/portier@.service",
        &read(&packaging.join("portier@.service"))?,
        0o644,
    )?;
    install(
        &pkg,
        "usr/share/doc/portier/examples/portier.toml",
        &read(&root.join("userspace/src/config/example.toml"))?,
        0o644,
    )?;
    install(
        &pkg,
        "usr/share/doc/portier/copyright",
        &read(&packaging.join("copyright"))?,
        0o644,
    )?;
    install(
        &pkg,
        "usr/share/doc/portier/changelog.Debian.gz",
        &gzip(&read(&packaging.join("changelog"))?)?,
        0o644,
    )?;
    install(
        &pkg,
        "usr/share/man/man8/portier.8.gz",
        &gzip(&output(&binary, &["manpage"])?)?,
        0o644,
    )?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/portier"),
        ("zsh", "usr/share/zsh/vendor-completions/_portier"),
        ("fish", "usr/share/fish/vendor_completions.d/portier.fish"),
    ] {
        install(
            &pkg,
            path,
            &output(&binary, &["completions", shell])?,
            0o644,
        )?;
    }

    let md5sums = md5sums(&pkg)?;
    let installed_kib = installed_size(&pkg)?;
    let depends = shlib_depends(&stage).unwrap_or_else(|e| {
        eprintln!("package: dpkg-shlibdeps: {e:#}; Depends: {FALLBACK_DEPENDS}");
        FALLBACK_DEPENDS.to_string()
    });
    let control = String::from_utf8(read(&packaging.join("control"))?)?
        .replace("@VERSION@", VERSION)
        .replace("@ARCH@", &arch)
        .replace("@INSTALLED_SIZE@", &installed_kib.to_string())
        .replace("@DEPENDS@", &depends);
    install(&pkg, "DEBIAN/control", control.as_bytes(), 0o644)?;
    install(&pkg, "DEBIAN/md5sums", md5sums.as_bytes(), 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &pkg,
            &format!("DEBIAN/{script}"),
            &read(&packaging.join(script))?,
            0o755,
        )?;
    }

    let deb = deb_path(root, &arch);
    let mut dpkg_deb = Command::new("dpkg-deb");
    if debug {
        // The debug binary is large even stripped; xz takes half a minute on it, gzip -1 two
        // seconds, and this package is only for tests.
        dpkg_deb.args(["-Zgzip", "-z1"]);
    }
    let status = dpkg_deb
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .context("cannot run dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb --build failed");
    }
    println!(
        "package: {} ({profile} build {:.0?}, packaging {:.1?})",
        deb.display(),
        built,
        packaged.elapsed()
    );
    Ok(deb)
}

/// The changelog's latest entry must be this version, as Debian tools read it from there.
fn check_changelog(root: &Path) -> Result<()> {
    let changelog = String::from_utf8(read(&root.join("packaging/changelog"))?)?;
    let first = changelog.lines().next().unwrap_or_default();
    if !first.starts_with(&format!("portier ({VERSION}) ")) {
        bail!(
            "packaging/changelog starts with {first:?}: add an entry for version {VERSION} \
             (the workspace version) on top"
        );
    }
    Ok(())
}

/// `Depends` from the shared libraries the binary links (e.g. libc6, libgcc-s1).
fn shlib_depends(stage: &Path) -> Result<String> {
    // It finds the package's root by its DEBIAN folder.
    mkdirs(&stage.join("debian/portier"), Path::new("DEBIAN"))?;
    fs::write(
        stage.join("debian/control"),
        "Source: portier\n\nPackage: portier\nArchitecture: any\n",
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .args(["-O", "-edebian/portier/usr/sbin/portier"])
        .current_dir(stage)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run dpkg-shlibdeps (dpkg-dev)")?;
    if !out.status.success() {
        bail!("failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .context("no shlibs:Depends in its output")
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A binary's stdout (`portier manpage`, `portier completions bash`).
fn output(binary: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(binary)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("portier {} failed ({})", args.join(" "), out.status);
    }
    Ok(out.stdout)
}

/// `gzip -9n`: best compression, no name or time stamp (Debian policy, reproducible).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .arg("-9nc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("gzip writer")?;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// `root/rel` with its folders, all 0755 whatever the umask (dpkg-deb packs the modes it
/// finds).
fn mkdirs(root: &Path, rel: &Path) -> Result<()> {
    let dir = root.join(rel);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for p in dir.ancestors().take_while(|p| p.starts_with(root)) {
        set_mode(p, 0o755)?;
    }
    Ok(())
}

/// Writes the file `rel` of the package tree `root`.
fn install(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = root.join(rel);
    mkdirs(root, Path::new(rel).parent().expect("a file in a folder"))?;
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    set_mode(&path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {} {}", mode, path.display()))
}

/// Every file of the package but DEBIAN/, sorted, relative to its root.
fn files(pkg: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(pkg, &mut out)?;
    let mut rel: Vec<PathBuf> = out
        .into_iter()
        .filter_map(|p| p.strip_prefix(pkg).ok().map(Path::to_path_buf))
        .filter(|p| !p.starts_with("DEBIAN"))
        .collect();
    rel.sort();
    Ok(rel)
}

/// DEBIAN/md5sums, as dpkg --verify and debsums read it.
fn md5sums(pkg: &Path) -> Result<String> {
    let files = files(pkg)?;
    let out = Command::new("md5sum")
        .args(&files)
        .current_dir(pkg)
        .output()
        .context("cannot run md5sum")?;
    if !out.status.success() {
        bail!("md5sum failed");
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Installed-Size in KiB, as dpkg-gencontrol counts it: each file rounded up, plus folders.
fn installed_size(pkg: &Path) -> Result<u64> {
    let mut kib = 0;
    let mut dirs = std::collections::BTreeSet::new();
    for f in files(pkg)? {
        kib += fs::metadata(pkg.join(&f))?.len().div_ceil(1024);
        let mut d = f.parent();
        while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_path_buf());
            d = p.parent();
        }
    }
    Ok(kib + dirs.len() as u64)
}
