//! `BPF_PROG_TEST_RUN` on crafted frames: how the tests and the benchmark drive the
//! programs without a network.

use aya::{TestRun as _, TestRunOptions, programs::Xdp};

use super::{Dataplane, DataplaneError};

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, ...).
    pub action: u32,
    pub frame: Vec<u8>,
    /// Mean time per repetition, as measured by the kernel.
    pub duration_ns: u64,
}

impl Dataplane {
    /// Runs `program` on `frame` through `BPF_PROG_TEST_RUN`, `repeat` times.
    pub fn test_run(
        &self,
        program: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutput, DataplaneError> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .ok_or_else(|| DataplaneError::MissingProgram(program.into()))?
            .try_into()
            .map_err(DataplaneError::program(program))?;
        // Room for programs that grow the frame; ours only rewrite it.
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        };
        let r = prog
            .test_run(opts)
            .map_err(DataplaneError::program(program))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutput {
            action: r.return_value,
            frame: out,
            duration_ns: r.duration.as_nanos() as u64,
        })
    }
}
