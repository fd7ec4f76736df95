//! `caprepo serve`: the daemon ([`daemon`]) with its configuration ([`config`]), the
//! manager that publishes what changed ([`manager`]), finding other processes'
//! changes through the change log ([`discovery`]); what is published, held for
//! serving ([`views`]); the HTTP server apt, dnf, zypper and build workers talk to
//! ([`http`]); mirroring out ([`mirror`]); and the counters `/metrics` shows
//! ([`metrics`]).

pub mod config;
pub mod daemon;
pub mod discovery;
pub mod http;
pub mod manager;
pub mod metrics;
pub mod mirror;
pub mod views;
