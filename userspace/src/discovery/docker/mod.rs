//! `[discovery.docker]`: containers with `portier.*` labels become L7 servers and routes.
//!
//! `container` reads the engine's inspect answer, `labels` the label vocabulary, `events`
//! what each engine event means, `inventory` (the pure core) turns containers into servers
//! and routes, and `source` is the task that talks to the engine.

pub mod container;
pub mod events;
pub mod inventory;
pub mod labels;
pub mod source;
