//! Servers and routes found at runtime rather than written in the config: today the
//! containers of a Docker (or Podman) engine, by their labels, as Traefik's Docker provider.
//! The L7 part runs a source and merges what it reports into its pools ([`crate::l7::merge`]).

pub mod docker;
