//! Everything that touches the machine the harness runs on: which filesystem a directory is
//! on, the THP sysfs tree, /proc observations, the settings journal, the swapfile, and the host
//! backend with its isolated case processes.

pub mod backend;
pub mod fsinfo;
pub mod isolate;
pub mod journal;
pub mod probe;
pub mod proc;
pub mod swapfile;
pub mod sysfs;
