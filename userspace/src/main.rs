use anyhow::Result;

use clap::{Parser, Subcommand};
use portier::admin::client::{Target, request};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The proxy allocates per request (headers, bodies); mimalloc's thread-local free lists beat
/// glibc malloc there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portier",
    version,
    about = "High-availability front door: XDP L4 balancing, L7 proxying, VRRP, OSPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Detach the XDP programs and remove their pins on exit. Without it they keep
        /// forwarding, and the next `portier run` of this node adopts them without loss.
        #[arg(long)]
        teardown_on_exit: bool,
        /// Take the node over from the process running it, without losing a connection: bind
        /// the L7 listeners beside its own (SO_REUSEPORT), stop it (SIGTERM: it stops
        /// accepting and drains), then start the other parts once it has exited. SIGUSR2 to a
        /// running daemon starts such a process from the same binary path.
        #[arg(long)]
        take_over: bool,
    },
    /// Validate a config file; every problem is reported with file, line and key.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Counters of a running node, read from its pinned maps.
    Stats {
        /// The node name of the config ([node] name).
        #[arg(long)]
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// State of a running node (services, backends, pools, servers, counters) from its admin API.
    Status {
        #[command(flatten)]
        socket: SocketArgs,
        /// Read from the TCP listener ([admin] listen) instead of the socket.
        #[arg(long, conflicts_with_all = ["node", "socket"])]
        admin: Option<SocketAddr>,
        #[arg(long)]
        json: bool,
        /// Redraw the tables every second, in place, until interrupted (as `watch`).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Re-read the config file of a running node (as SIGHUP); reports whether it was applied.
    Reload {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop new flows (L4 backend) or requests (L7 pool server); in-flight ones finish.
    ///
    /// L4: `--service web --backend 10.0.0.21`; established flows keep their backend.
    /// L7: `--pool todo --server 172.17.0.2:8080`; in-flight requests finish, idle upstream
    /// connections close, and hashed keys move to the other servers.
    Drain(BackendArgs),
    /// Undo drain or weight: the configured weight applies again.
    Undrain(BackendArgs),
    /// Set an L4 backend's (0..=65535) or an L7 pool server's (0..=256) weight at runtime.
    Weight {
        #[command(flatten)]
        backend: BackendArgs,
        weight: u32,
    },
    /// Opt-in diagnostics of a running node.
    Debug {
        #[command(subcommand)]
        what: DebugCommand,
    },
    /// Attach a plain XDP_PASS program to an interface and pin the link (lab helper: the veth
    /// peer of an interface that sends with XDP_TX needs an XDP program to receive).
    #[command(hide = true)]
    XdpPass {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        pin: PathBuf,
    },
    /// Print a shell completion script to stdout (the Debian package ships them).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout (the Debian package ships it as portier(8)).
    #[command(hide = true)]
    Manpage,
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Log each packet the XDP balancer or decapsulator drops, and each new flow, with its
    /// reason (rate-limited; target portier::xdp), or stop. Until the next reload that changes
    /// `[dataplane] debug`.
    Xdp {
        state: OnOff,
        #[command(flatten)]
        socket: SocketArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Either an L4 backend (`--service`, `--backend`) or an L7 pool server (`--pool`,
/// `--server`); the changes survive reloads that keep the backend or server.
#[derive(clap::Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["service", "pool", "vip"])))]
struct BackendArgs {
    /// L4 service name.
    #[arg(long, requires = "backend", conflicts_with_all = ["pool", "server"])]
    service: Option<String>,
    /// L4 backend address.
    #[arg(long, requires = "service")]
    backend: Option<std::net::IpAddr>,
    /// L7 pool name.
    #[arg(long, requires = "server")]
    pool: Option<String>,
    /// L7 server address with port, as in the pool's `servers`.
    #[arg(long, requires = "pool", conflicts_with_all = ["service", "backend"])]
    server: Option<SocketAddr>,
    /// BGP: a VIP's route, drained with the GRACEFUL_SHUTDOWN community (RFC 8326) so the
    /// routers move traffic away, or back to normal (drain/undrain only).
    #[arg(long, conflicts_with_all = ["service", "backend", "pool", "server"])]
    vip: Option<std::net::IpAddr>,
    #[command(flatten)]
    socket: SocketArgs,
}

/// Which node's admin socket: commands go only through it (root, or the `[admin] group`).
/// Without either option, the only socket in /run/portier.
#[derive(clap::Args)]
struct SocketArgs {
    /// The node's name ([node] name): its socket is /run/portier/NAME.sock.
    #[arg(long)]
    node: Option<String>,
    /// The admin socket's path, when [admin] socket moved it.
    #[arg(long, conflicts_with = "node")]
    socket: Option<PathBuf>,
}

impl SocketArgs {
    fn target(&self) -> Result<Target> {
        Target::choose(self.socket.clone(), self.node.as_deref(), None)
    }
}

impl BackendArgs {
    fn path(&self, verb: &str) -> Result<String> {
        if let Some(vip) = self.vip {
            if verb == "weight" {
                anyhow::bail!("a VIP has no weight: drain or undrain it");
            }
            return Ok(format!(
                "/command/bgp/{verb}?vip={}",
                vip.to_string().replace(':', "%3A")
            ));
        }
        match (&self.service, &self.backend, &self.pool, &self.server) {
            (Some(service), Some(backend), None, None) => Ok(format!(
                "/command/l4/{verb}?service={service}&backend={backend}"
            )),
            (None, None, Some(pool), Some(server)) => {
                // Brackets and colons of [v6]:port, escaped for the query string.
                let server = server
                    .to_string()
                    .replace(':', "%3A")
                    .replace('[', "%5B")
                    .replace(']', "%5D");
                Ok(format!("/command/l7/{verb}?pool={pool}&server={server}"))
            }
            _ => anyhow::bail!("give --service and --backend (L4) or --pool and --server (L7)"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `[log] format` of the config `run` is given: read here, before the first event. A config
    // that does not load logs as text; `run` then reports its problems.
    let json = match &cli.command {
        Command::Run { config, .. } => portier::config::load(config)
            .is_ok_and(|c| c.log.format == portier::config::LogFormat::Json),
        _ => false,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // netlink-packet-route warns about attributes newer kernels add; not ours to fix.
        // rustls warns once per peer misstep (an IP address as SNI, which wrk and curl send,
        // every fatal alert): a line per connection that any client can make us write. Failed
        // handshakes are counted in the metrics instead.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error,rustls=error")
        });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // One object per line, the event's fields as fields: journald and log shippers keep
        // them structured.
        fmt.json().flatten_event(true).init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portier: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config,
            teardown_on_exit,
            take_over,
        } => tokio::runtime::Builder::new_multi_thread()
            // One worker per CPU this process may use (affinity and cpusets count), so a
            // node pinned to one core does not switch between two busy workers.
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .enable_all()
            .build()?
            .block_on(portier::daemon::run(
                &config,
                portier::daemon::RunOptions {
                    teardown_on_exit,
                    take_over,
                },
            )),
        Command::Check { config } => {
            let c = portier::config::load(&config)?;
            for w in portier::config::warnings(&c) {
                eprintln!("{}: warning: {w}", config.display());
            }
            for w in portier::config::secret_warnings(&config, &c) {
                eprintln!("{}: warning: {w}", config.display());
            }
            println!(
                "{}: ok ({} services, {} backends)",
                config.display(),
                c.services.len(),
                c.services.iter().map(|s| s.backends.len()).sum::<usize>()
            );
            Ok(())
        }
        Command::Stats { node, json } => portier::dataplane::stats::print(
            &PathBuf::from(portier::dataplane::DEFAULT_PIN_ROOT).join(node),
            json,
        ),
        Command::Status {
            socket,
            admin,
            json,
            watch,
        } => {
            let target = match admin {
                Some(a) => Target::Tcp(a),
                None => socket.target()?,
            };
            if watch {
                loop {
                    // Home and clear, then the whole frame in one write: no flicker.
                    let frame = match request(&target, "GET", "/status") {
                        Ok(body) => portier::admin::table::render(&serde_json::from_str(&body)?),
                        Err(e) => format!("portier: {e:#}\n(retrying every second)\n"),
                    };
                    print!("\x1b[H\x1b[2J{frame}");
                    std::io::Write::flush(&mut std::io::stdout())?;
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            let body = request(&target, "GET", "/status")?;
            if json {
                print!("{body}");
            } else {
                portier::admin::table::print(&serde_json::from_str(&body)?);
            }
            Ok(())
        }
        Command::Reload { socket } => {
            print!("{}", request(&socket.target()?, "POST", "/reload")?);
            Ok(())
        }
        Command::Drain(b) => {
            print!(
                "{}",
                request(&b.socket.target()?, "POST", &b.path("drain")?)?
            );
            Ok(())
        }
        Command::Undrain(b) => {
            print!(
                "{}",
                request(&b.socket.target()?, "POST", &b.path("undrain")?)?
            );
            Ok(())
        }
        Command::Weight { backend, weight } => {
            let path = format!("{}&weight={weight}", backend.path("weight")?);
            print!("{}", request(&backend.socket.target()?, "POST", &path)?);
            Ok(())
        }
        Command::Debug {
            what: DebugCommand::Xdp { state, socket },
        } => {
            let state = match state {
                OnOff::On => "on",
                OnOff::Off => "off",
            };
            let path = format!("/command/xdp/debug?state={state}");
            print!("{}", request(&socket.target()?, "POST", &path)?);
            Ok(())
        }
        Command::XdpPass { interface, pin } => {
            portier::dataplane::attach_pass(&interface, &pin)?;
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = public_command();
            clap_complete::generate(shell, &mut cmd, "portier", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpage => {
            let mut out = std::io::stdout().lock();
            manpage(&mut out)?;
            Ok(())
        }
    }
}

/// The command line without its hidden subcommands, for completions and the man page (the
/// bash completion generator offers hidden ones too, and clap cannot remove a subcommand).
fn public_command() -> clap::Command {
    let full = <Cli as clap::CommandFactory>::command();
    let mut cmd = clap::Command::new("portier")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .subcommand_required(true);
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

/// portier(8): clap_mangen's page for the top level, then each visible subcommand's synopsis
/// and options (clap_mangen renders one command per page; an operator wants them in one), then
/// the files and signals a packaged daemon has.
fn manpage(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut cmd = public_command();
    cmd.build(); // gives subcommands their "portier NAME" for the synopses
    // Section 8: a daemon and its administration commands, run by root.
    let man = |c: clap::Command| {
        clap_mangen::Man::new(c)
            .section("8")
            .manual("System Manager's Manual")
            .source(format!("portier {}", env!("CARGO_PKG_VERSION")))
    };
    let top = man(cmd.clone());
    top.render_title(out)?;
    top.render_name_section(out)?;
    top.render_synopsis_section(out)?;
    top.render_description_section(out)?;
    top.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        let sub = man(sub.clone());
        let mut body = Vec::new();
        sub.render_synopsis_section(&mut body)?;
        sub.render_description_section(&mut body)?;
        sub.render_options_section(&mut body)?;
        writeln!(out, ".SS \"portier {name}\"")?;
        // The sections come with their own .SH headings; within COMMANDS they are paragraphs.
        for line in String::from_utf8_lossy(&body).lines() {
            if line.starts_with(".SH ") {
                writeln!(out, ".PP")?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
    }
    out.write_all(MANPAGE_TAIL.as_bytes())?;
    top.render_version_section(out)
}

const MANPAGE_TAIL: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Re-read the config file and apply only the difference, as \fBportier reload\fR does; an
invalid config is refused and the running one keeps serving.
.TP
.BR SIGTERM ", " SIGINT
Stop: every part exits gracefully. The XDP programs, maps and links stay pinned and keep
forwarding (unless \fB\-\-teardown\-on\-exit\fR); the next \fBportier run\fR of the node
adopts them. L7 listeners stop accepting at once; connections already accepted are served
within \fB[l7] drain_timeout_ms\fR.
.TP
.B SIGUSR2
Hand the node over to a new process without losing a connection: start \fBportier run
\-c FILE \-\-take\-over\fR from the same binary path (after an upgrade, the new binary),
which binds its L7 listeners beside this process's (SO_REUSEPORT), stops this one with
SIGTERM, and starts the other parts once it has exited.
.SH SYSTEMD
The unit \fBportier@NODE.service\fR runs \fBportier run \-c /etc/portier/NODE.toml\fR
(\fBType=notify\fR: it is started once every part has applied the config).
\fBsystemctl reload portier@NODE\fR sends SIGHUP; \fBsystemctl kill \-s USR2
\-\-kill\-who=main portier@NODE\fR hands the node over to a new process (the unit's
\fBNotifyAccess=all\fR lets it become the main process); \fBjournalctl \-u portier@NODE\fR
shows the log.
.SH FILES
.TP
.I /etc/portier/NODE.toml
The config of node NODE for the systemd unit. A commented example:
\fI/usr/share/doc/portier/examples/portier.toml\fR.
.TP
.I /run/portier/NODE.sock
The node's admin socket: mode 0600 owned by root (0660 and a group with \fB[admin] group\fR).
The node's lock, its pid file (\fINODE.pid\fR, locked while the daemon runs) and its map
ids are kept beside it.
.TP
.I /sys/fs/bpf/portier/NODE/
The node's pinned XDP programs, maps and links.
.SH "SEE ALSO"
.BR systemctl (1),
.BR journalctl (1),
.BR bpftool (8)
"#;
