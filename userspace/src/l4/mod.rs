//! The L4 control plane: what the XDP maps should hold for a given configuration.
//!
//! [`Reconciler`] is pure: it turns a configuration and neighbour resolutions into map
//! operations ([`Op`]), keeping ids stable across reloads so that anything a change does not
//! touch stays byte-identical in the kernel (a flow whose backend is unchanged never moves).

pub mod maglev;
pub mod neigh;
mod overrides;
pub mod part;
mod reconciler;

pub use overrides::Overrides;
pub use reconciler::{NextHop, Op, Reconciler, service_key};
