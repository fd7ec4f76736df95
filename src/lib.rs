//! caprepo: an APT and RPM package repository manager built on content-addressed
//! storage.
//!
//! The data path, and the modules along it:
//! - **upload**: a build worker sends a `.deb`, `.dsc` or `.rpm` with a capability
//!   token ([`caps`]) for one cell; [`server`] checks it, and [`ingest`] (with
//!   [`deb`] and [`rpmrepo::inspect`]) refuses what the reference tools refuse.
//! - **store**: packages and indices are blobs named by their sha256 ([`store`], on
//!   local disk or S3); repository state is immutable manifests ([`model`]) reached
//!   through compare-and-swap refs: repository definitions ([`repos`]) and cells
//!   ([`cells`]).
//! - **publish**: the [`manager`] notices changed cells (its own uploads, and other
//!   processes' through [`discovery`]) and rebuilds suites ([`apt::publish`]) and RPM
//!   trees ([`rpmrepo::publish`]) from per-chunk fragments ([`publish`]), signed by
//!   a separate [`agent`] process that alone holds the key, then flips one
//!   publication ref.
//! - **serve**: [`views`] holds what is published; [`server`] answers apt, dnf and
//!   zypper from it, and [`mirror`] copies it out.
//! - **release management and upkeep**: [`releases`] (promote, remove, roll back,
//!   snapshots), [`maintenance`] (gc, verify) and [`repair`].
//! - [`cli`] is the one binary's commands; [`daemon`] runs `caprepo serve`.
//! - Small utilities everything may use: [`digest`], [`ids`], [`time`], [`versions`],
//!   [`parallel`], [`metrics`].
//!
//! Imports run one way: no file or folder imports one that imports it back
//! (`.ci/imports.py --cycles [--folders]`, run by CI).

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
pub mod ids;
pub mod ingest;
pub mod maintenance;
pub mod manager;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod pack_sweep;
pub mod package_source;
pub mod parallel;
pub mod publish;
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
