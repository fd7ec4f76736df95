//! caprepo: an APT repository manager built on content-addressed storage.
//!
//! Packages and indices are blobs named by their sha256 ([`store`]); repository
//! state is immutable manifests ([`model`]) reached through compare-and-swap
//! refs; build workers upload with capability tokens ([`caps`]) scoped to one
//! cell; the [`manager`] publishes suites signed by a separate [`agent`]
//! process; [`server`] serves them to apt.

pub mod agent;
pub mod apt;
pub mod caps;
pub mod cells;
pub mod claims;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deb;
pub mod digest;
pub mod discovery;
pub mod fragment_memory;
pub mod ingest;
pub mod layout;
pub mod maintenance;
pub mod manager;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod pack_sweep;
pub mod package_source;
pub mod parallel;
pub mod prefix_hash;
pub mod publication;
pub mod publish_check;
pub mod releases;
pub mod repair;
pub mod repos;
pub mod rpmrepo;
pub mod server;
pub mod spool;
pub mod store;
pub mod time;
pub mod versions;
pub mod views;

#[cfg(test)]
pub(crate) mod testing;
