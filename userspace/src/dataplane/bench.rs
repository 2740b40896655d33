//! Benchmark-only kernel interface (`--features bench`, which `portier-bench` needs): the
//! live-frames generator and the programs a benchmark attaches beside or instead of the
//! balancer. Not in the daemon.

use aya::{Ebpf, TestRun as _, TestRunOptions, programs::Xdp};
use dataplane_common::programs;

use super::{Dataplane, DataplaneError, OBJECT, XdpAttachMode, attach, require_root, xdp_mut};

/// The programs built without the diagnostics feature: no debug entry points, no log calls.
static OBJECT_NO_DIAG: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portier-xdp-nodiag"));

impl Dataplane {
    /// [`Dataplane::load_for_test`] of the build without diagnostics: what `portier_lb` costs
    /// with no log call compiled anywhere, next to the real build's with debug off.
    pub fn load_for_test_without_diagnostics(conntrack_size: u32) -> Result<Self, DataplaneError> {
        require_root()?;
        let mut dp = Self::load_for_test(conntrack_size)?;
        dp.ebpf = super::load_object_from(
            OBJECT_NO_DIAG,
            conntrack_size,
            &dp.flow_seed,
            None,
            &super::TEST_PROGRAMS,
        )?;
        Ok(dp)
    }

    /// Sets the mixed generator's period of new flows (one frame in `period` is the SYN of a
    /// new flow; 0: none) on every CPU, and restarts its count.
    pub fn set_bench_gen_period(&mut self, period: u64) -> Result<(), DataplaneError> {
        use aya::maps::{PerCpuArray, PerCpuValues};
        use dataplane_common::bench::GEN_STATE;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::io(GEN_STATE)(e))?;
        let mut state: PerCpuArray<&mut aya::maps::MapData, u64> = self.typed_mut(GEN_STATE)?;
        for (slot, v) in [(0, 0), (1, period)] {
            let values =
                PerCpuValues::try_from(vec![v; cpus]).map_err(DataplaneError::io(GEN_STATE))?;
            state
                .set(slot, values, 0)
                .map_err(DataplaneError::map(GEN_STATE))?;
        }
        Ok(())
    }

    /// Runs `program` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): `repeat` copies of
    /// `frame`, in batches of `batch`, with `ingress_ifindex` as the receiving interface, so
    /// `XDP_TX` really transmits out of it. The interface is looked up in the calling
    /// thread's network namespace. Returns the wall time of the whole run.
    pub fn test_run_live(
        &self,
        program: &str,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
        batch: u32,
    ) -> Result<std::time::Duration, DataplaneError> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .ok_or_else(|| DataplaneError::MissingProgram(program.into()))?
            .try_into()
            .map_err(DataplaneError::program(program))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. Live mode takes only the interface (and queue 0).
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: repeat.max(1),
            attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(batch),
            ..TestRunOptions::new()
        };
        let start = std::time::Instant::now();
        prog.test_run(opts)
            .map_err(DataplaneError::program(program))?;
        Ok(start.elapsed())
    }
}

/// A benchmark program attached to an interface (native mode); detached on drop.
pub struct BenchAttachment {
    _ebpf: Ebpf,
}

/// Attaches one of the programs that only benchmarks use (`portier_bench_sink`, or
/// `portier_floor` in place of the balancer) to `interface` in the calling thread's network
/// namespace, natively: a veth only transmits `XDP_TX` frames to a peer that runs XDP.
pub fn attach_bench_program(
    program: &str,
    interface: &str,
) -> Result<BenchAttachment, DataplaneError> {
    require_root()?;
    if ![programs::BENCH_SINK, programs::FLOOR].contains(&program) {
        return Err(DataplaneError::MissingProgram(program.into()));
    }
    let mut ebpf = Ebpf::load(OBJECT)?;
    let prog = xdp_mut(&mut ebpf, program)?;
    prog.load().map_err(DataplaneError::program(program))?;
    attach(prog, interface, XdpAttachMode::Native)?;
    Ok(BenchAttachment { _ebpf: ebpf })
}
