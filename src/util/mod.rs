//! Small utilities every layer may use, and which use nothing of caprepo's own:
//! content digests ([`digest`]), random ids ([`ids`]), time and durations
//! ([`time`]), Debian and RPM version order ([`versions`]) and bounded parallel
//! work in order ([`parallel`]).

pub mod digest;
pub mod ids;
pub mod parallel;
pub mod time;
pub mod versions;
