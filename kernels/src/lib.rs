//! The kernel matrix: Debian's kernels fetched into a cache, booted under qemu with a static
//! harness as their whole userspace, and the fixtures they record.
//!
//! `guest` is the guest's /init and `probe` a check it can run; everything else runs on the
//! host.

pub mod catalog;
pub mod cpio;
pub mod fetch;
pub mod guest;
pub mod matrix;
pub mod newest;
pub mod probe;
pub mod protocol;
pub mod scenarios;
pub mod vm;
