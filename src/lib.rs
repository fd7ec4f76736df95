//! caprepo: an APT and RPM package repository manager built on content-addressed
//! storage.
//!
//! The folders follow the data path, lowest layer first; a module imports only from
//! its own layer or the ones below it (`.ci/imports.py --layers`, run by CI):
//! - [`util`]: digests, ids, time, version order, bounded parallelism.
//! - [`store`]: blobs named by their sha256 and compare-and-swap refs, on local disk
//!   or S3; composites, resumable hashes, packs, the upload spool.
//! - [`formats`]: `.deb`, `.dsc` and `.rpm` parsed with bounds, refused where the
//!   reference tools refuse. [`caps`]: capability tokens and their scopes.
//!   [`agent`]: the signing agent, the one process that holds the key.
//! - [`repo`]: repositories, cells, chunks and publications as stored manifests.
//! - [`ingest`]: an upload, checked and placed into its cell. [`publish`]: cells
//!   into signed APT suites and RPM trees.
//! - [`releases`] (promote, remove, roll back, snapshots) and [`maintenance`] (gc,
//!   verify, repair).
//! - [`serve`]: `caprepo serve`, the manager that publishes, the HTTP server apt, dnf
//!   and zypper read from, mirroring.
//! - [`cli`]: the one binary's commands.

pub mod agent;
pub mod caps;
pub mod cli;
pub mod formats;
pub mod ingest;
pub mod maintenance;
pub mod publish;
pub mod releases;
pub mod repo;
pub mod serve;
pub mod store;
pub mod util;

#[cfg(test)]
pub(crate) mod testing;
