//! Wall time of the whole host catalogue, against the C selftest's figures measured on this
//! machine (all:anon with swap 10.0 s, all:shmem 2.1 s, all:file on tmpfs 2.2 s, quiet).
//! Needs root, THP and MADV_COLLAPSE; says why and stops otherwise. `cargo bench -p harness
//! --bench host_catalogue_bench`.

use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    if let Some(reason) = harness::host::probe::host_unsupported_reason() {
        println!("host catalogue benchmark not run: {reason}");
        return;
    }
    let exe = env!("CARGO_BIN_EXE_khugepaged");
    let runs: [(&str, &[&str], f64); 3] = [
        (
            "all:anon (with swap)",
            &["--backend", "host", "all:anon"],
            10.0,
        ),
        ("all:shmem", &["--backend", "host", "all:shmem"], 2.1),
        (
            "all:file (tmpfs)",
            &["--backend", "host", "--tmpfs", "all:file"],
            2.2,
        ),
    ];
    let (mut ours, mut theirs) = (0.0, 0.0);
    for (name, args, c_secs) in runs {
        let t = Instant::now();
        let out = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .expect("run khugepaged");
        let secs = t.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout);
        let fails = text
            .lines()
            .filter(|l| l.ends_with(" Fail") || l.contains("Fail:") || l.ends_with(" Timeout"))
            .count();
        println!(
            "{name:<22} {secs:6.2} s (C selftest {c_secs:4.1} s), exit {}, {fails} failing step(s)",
            out.status.code().unwrap_or(-1)
        );
        ours += secs;
        theirs += c_secs;
    }
    println!(
        "total {ours:.2} s against the C selftest's {theirs:.1} s ({:.0}%; target at most 50%)",
        100.0 * ours / theirs
    );
}
