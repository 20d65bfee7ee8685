//! The guest's /init: mounts what the harness needs, loads the modules the host picked (zram
//! for swap, ext4 and virtio_blk for the disk), runs the commands of /kernels/commands, sends
//! /out back as a cpio archive on the second serial port and reports the status through
//! qemu's isa-debug-exit port. Protocol lines on the console start with `@@kernels:`.
//! `/init probe` (a command the init runs) is `ci/kernels probe` inside the guest.

fn main() {
    // `/init probe`: the deterministic-mode probe, run by the init as one of its commands.
    if std::env::args().nth(1).as_deref() == Some("probe") {
        match kernels::probe::run() {
            Ok(report) => println!("{report}"),
            Err(e) => {
                println!("probe FAILED: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if std::process::id() != 1 {
        eprintln!("kernels-init: this is the /init of a test guest; it must run as PID 1");
        std::process::exit(2);
    }
    let status = kernels::guest::run();
    kernels::guest::finish(status);
}
