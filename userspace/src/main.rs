use anyhow::Result;

use clap::{Parser, Subcommand};
use portier::admin::client::request;
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
    /// State of a running node (services, backends, counters) from its admin API.
    Status {
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: SocketAddr,
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config file of a running node (as SIGHUP); reports whether it was applied.
    Reload {
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: SocketAddr,
    },
    /// Stop sending new flows to a backend; established flows continue.
    Drain(BackendArgs),
    /// Undo drain or weight: the configured weight applies again.
    Undrain(BackendArgs),
    /// Set a backend's weight at runtime (0..=65535).
    Weight {
        #[command(flatten)]
        backend: BackendArgs,
        weight: u32,
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
}

#[derive(clap::Args)]
struct BackendArgs {
    #[arg(long)]
    service: String,
    #[arg(long)]
    backend: std::net::IpAddr,
    #[arg(long, default_value = "127.0.0.1:9900")]
    admin: SocketAddr,
}

impl BackendArgs {
    fn path(&self, verb: &str) -> String {
        format!(
            "/command/l4/{verb}?service={}&backend={}",
            self.service, self.backend
        )
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // netlink-packet-route warns about attributes newer kernels add; not ours to fix.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error")
                }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
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
        } => tokio::runtime::Builder::new_multi_thread()
            // One worker per CPU this process may use (affinity and cpusets count), so a
            // node pinned to one core does not switch between two busy workers.
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .enable_all()
            .build()?
            .block_on(portier::daemon::run(
                &config,
                portier::daemon::RunOptions { teardown_on_exit },
            )),
        Command::Check { config } => {
            let c = portier::config::load(&config)?;
            println!(
                "{}: ok ({} services, {} backends)",
                config.display(),
                c.services.len(),
                c.services.iter().map(|s| s.backends.len()).sum::<usize>()
            );
            Ok(())
        }
        Command::Stats { node, json } => portier::stats::print(
            &PathBuf::from(portier::dataplane::DEFAULT_PIN_ROOT).join(node),
            json,
        ),
        Command::Status { admin, json } => {
            let body = request(admin, "GET", "/status")?;
            if json {
                print!("{body}");
            } else {
                portier::admin::table::print(&serde_json::from_str(&body)?);
            }
            Ok(())
        }
        Command::Reload { admin } => {
            print!("{}", request(admin, "POST", "/reload")?);
            Ok(())
        }
        Command::Drain(b) => {
            print!("{}", request(b.admin, "POST", &b.path("drain"))?);
            Ok(())
        }
        Command::Undrain(b) => {
            print!("{}", request(b.admin, "POST", &b.path("undrain"))?);
            Ok(())
        }
        Command::Weight { backend, weight } => {
            let path = format!("{}&weight={weight}", backend.path("weight"));
            print!("{}", request(backend.admin, "POST", &path)?);
            Ok(())
        }
        Command::XdpPass { interface, pin } => {
            portier::dataplane::attach_pass(&interface, &pin)?;
            Ok(())
        }
    }
}
