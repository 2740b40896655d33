//! Kernel networking state through rtnetlink.

pub mod neigh;
