//! Everything that touches the machine the harness runs on: reading which filesystem a
//! directory is on, and (with the host backend) real system calls and /proc observations.

pub mod fsinfo;
