//! Empty library target: lets `userspace` name this crate as a build dependency, so cargo
//! rebuilds the daemon when the XDP programs change.
#![no_std]
