//! End-to-end tests: real caprepo processes on 127.0.0.1, real apt-get, gpgv,
//! sqv and dpkg, real .deb fixtures. One test binary, several modules.

mod harness;

mod apt_client;
mod caps_http;
mod change_log;
mod concurrency;
mod conformance;
mod consumers;
mod gc_soak;
mod hardening;
mod hostile_debs;
mod hostile_rpms;
mod http_semantics;
mod import;
mod kill9;
mod legacy_rpms;
mod maintenance;
mod mirror;
mod newer_clients;
mod publish_resume;
mod readcaps;
mod refresh_during_publish;
mod refusals;
mod releases;
mod rpm;
mod schema;
mod scope_integrity;
mod signing;
mod sources;
