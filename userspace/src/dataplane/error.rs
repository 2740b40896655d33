use std::{io, path::PathBuf};

use aya::{
    EbpfError,
    maps::{MapError, xdp::XdpMapError},
    pin::PinError,
    programs::ProgramError,
};

/// Everything that can go wrong loading, attaching or programming the XDP balancer.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("the XDP dataplane needs root (CAP_BPF, CAP_NET_ADMIN); running as uid {0}")]
    NotRoot(u32),
    #[error("loading the XDP object: {0}")]
    Load(#[source] Box<EbpfError>),
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name}: {source}")]
    DevMap {
        name: &'static str,
        #[source]
        source: XdpMapError,
    },
    #[error("program {0} is missing from the XDP object")]
    MissingProgram(String),
    #[error("program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: ProgramError,
    },
    #[error("interface {name}: {reason}")]
    Interface { name: String, reason: String },
    #[error("attaching XDP to {interface}: native: {native}; generic: {generic}")]
    Attach {
        interface: String,
        native: String,
        generic: String,
    },
    #[error(
        "pin directory {path} is in use by a live instance (program id {prog_id} is attached); \
         stop it or pick another node name"
    )]
    PinDirInUse { path: PathBuf, prog_id: u32 },
    #[error(
        "node {node} is already run by another portier process (lock {path} is held); \
         stop it or pick another node name"
    )]
    NodeLocked { node: String, path: PathBuf },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("drawing the connection table's seed: {0}")]
    Random(getrandom::Error),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The debug programs' log (aya-log's ring buffer) could not be opened.
    #[error("XDP debug log: {0}")]
    Log(String),
}

impl DataplaneError {
    pub(crate) fn map(name: &'static str) -> impl FnOnce(MapError) -> Self {
        move |source| Self::Map { name, source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn program(name: &str) -> impl FnOnce(ProgramError) -> Self + '_ {
        move |source| Self::Program {
            name: name.to_string(),
            source,
        }
    }
}

impl From<EbpfError> for DataplaneError {
    fn from(e: EbpfError) -> Self {
        Self::Load(Box::new(e))
    }
}
