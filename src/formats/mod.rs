//! The package formats caprepo takes in: Debian binary and source packages
//! ([`deb`]) and RPM packages ([`rpm`]), each parsed with bounds of its own and
//! refused where the reference tools (dpkg-deb, rpm -K) refuse; [`source`] is the
//! bytes of one upload, in memory or in a spool file.

pub mod deb;
pub mod rpm;
pub mod source;
