//! Debian binary packages (`.deb`): the ar container, the control paragraph, the
//! tar streams and the file names they may hold, and the bounded inspection that
//! turns an uploaded file into a package record.

pub mod ar;
pub mod control;
pub mod inspect;
pub mod limits;
pub mod paths;
pub mod tar;

pub use control::Control;
pub use inspect::{DebError, DebInfo, inspect_deb};
pub use limits::Limits;
