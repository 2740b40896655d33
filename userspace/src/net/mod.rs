//! Kernel networking state through rtnetlink.

pub mod addr;
