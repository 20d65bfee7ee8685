//! Wall time of the whole host catalogue against the C selftest's on this machine.
//!
//! With `KHUGEPAGED_C_SELFTEST=/path/to/khugepaged` (the kernel's
//! tools/testing/selftests/mm/khugepaged, built for this machine) the C selftest runs here, in
//! the same run, on the same test types, and the ratio is of the two measured times. Without
//! it the figure is against times recorded once on this machine (all:anon with swap 10.0 s,
//! all:shmem 2.1 s, all:file on tmpfs 2.2 s, quiet), and the output says so.
//!
//! Needs root, THP and MADV_COLLAPSE; says why and stops otherwise.
//! `cargo bench -p harness --bench host_catalogue_bench`.
//!
//! The C selftest runs under the harness's host lock (so no host case of another run changes
//! the settings meanwhile), its file tests on a tmpfs (huge=advise) mounted in a mount
//! namespace of its own (gone with the process, whatever happens), and every THP setting it
//! may change is checked and put back after it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use harness::host::{probe, swapfile, sysfs};

/// One test type, as both programs are asked to run it.
struct Run {
    name: &'static str,
    ours: Vec<&'static str>,
    /// The C selftest's arguments; `None` in place of the directory for the file tests.
    theirs: Vec<Option<&'static str>>,
    /// The C selftest's time recorded on this machine, in seconds.
    recorded: f64,
}

/// Counts failing step lines in a run's output.
fn failing_steps(text: &str) -> usize {
    text.lines()
        .filter(|l| l.ends_with(" Fail") || l.contains("Fail:") || l.ends_with(" Timeout"))
        .count()
}

/// The cross-process lock host cases take (`/run/lock/khugepaged-harness.lock`), and the one
/// of the journal's state directory where that exists (`/run/khugepaged-harness/lock`, taken
/// second, never created here), so this holds off host runs of either kind.
fn host_lock() -> Result<Vec<nix::fcntl::Flock<std::fs::File>>, String> {
    let mut held = Vec::new();
    for (path, create) in [
        ("/run/lock/khugepaged-harness.lock", true),
        ("/run/khugepaged-harness/lock", false),
    ] {
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
        {
            Ok(f) => f,
            Err(_) if !create => continue,
            Err(e) => return Err(format!("opening {path}: {e}")),
        };
        held.push(
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| format!("locking {path}: {e}"))?,
        );
    }
    Ok(held)
}

/// Every writable THP setting with its value as it would be written back.
fn thp_state() -> Vec<(String, String)> {
    sysfs::writable_files()
        .into_iter()
        .filter_map(|f| sysfs::read(&f).ok().map(|v| (f, sysfs::restorable(&v))))
        .collect()
}

/// Runs the C selftest with `args` (the file tests' directory on a private tmpfs), under the
/// host lock; returns its wall time in seconds and its output.
fn run_c_selftest(c: &Path, args: &[Option<&str>]) -> Result<(f64, String, i32), String> {
    let _lock = host_lock()?;
    let before = thp_state();
    let mut dir = None;
    let mut cmd = if args.iter().any(Option::is_none) {
        // A private mount namespace: the tmpfs exists only for this process and its children.
        let d = std::env::temp_dir().join(format!("khugepaged-bench.{}", std::process::id()));
        std::fs::create_dir(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        let mut script = String::from(
            "mount -t tmpfs -o huge=advise,mode=0700,size=64m tmpfs \"$1\" && shift && exec \"$@\"",
        );
        script.push('\n');
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(&d)
        .arg(c);
        for a in args {
            cmd.arg(a.map_or(d.as_os_str(), |s| s.as_ref()));
        }
        dir = Some(d);
        cmd
    } else {
        let mut cmd = Command::new(c);
        cmd.args(args.iter().flatten());
        cmd
    };
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let secs = t.elapsed().as_secs_f64();
    if let Some(d) = dir {
        let _ = std::fs::remove_dir(d);
    }
    // The selftest restores its settings itself; make sure of it.
    let mut put_back = Vec::new();
    for ((f, v), (_, now)) in before.iter().zip(thp_state()) {
        if *v != now {
            let _ = sysfs::write(f, v);
            put_back.push(format!("{f} {now} -> {v}"));
        }
    }
    if !put_back.is_empty() {
        eprintln!(
            "the C selftest left settings changed; put back: {}",
            put_back.join(", ")
        );
    }
    let out = out.map_err(|e| format!("running {}: {e}", c.display()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((secs, text, out.status.code().unwrap_or(-1)))
}

fn main() {
    if let Some(reason) = probe::host_unsupported_reason() {
        println!("host catalogue benchmark not run: {reason}");
        return;
    }
    let exe = env!("CARGO_BIN_EXE_khugepaged");
    let c_selftest: Option<PathBuf> = std::env::var_os("KHUGEPAGED_C_SELFTEST").map(PathBuf::from);
    if let Some(c) = &c_selftest {
        if !c.is_file() {
            eprintln!(
                "KHUGEPAGED_C_SELFTEST={}: no such file (give the path of the kernel's khugepaged selftest binary)",
                c.display()
            );
            std::process::exit(2);
        }
    }
    // With a C binary both run alike: without active swap the C selftest skips the swap
    // tests, so this harness does too rather than making a swapfile.
    let no_swap = c_selftest.is_some() && !swapfile::swap_active();
    let mut anon = vec!["--backend", "host", "all:anon"];
    if no_swap {
        anon.insert(2, "--no-swapfile");
    }
    let runs = [
        Run {
            name: if no_swap {
                "all:anon (no swap)"
            } else {
                "all:anon (with swap)"
            },
            ours: anon,
            theirs: vec![Some("all:anon")],
            recorded: 10.0,
        },
        Run {
            name: "all:shmem",
            ours: vec!["--backend", "host", "all:shmem"],
            theirs: vec![Some("all:shmem")],
            recorded: 2.1,
        },
        Run {
            name: "all:file (tmpfs)",
            ours: vec!["--backend", "host", "--tmpfs", "all:file"],
            theirs: vec![Some("all:file"), None],
            recorded: 2.2,
        },
    ];
    match &c_selftest {
        Some(c) => println!(
            "against the C selftest {} measured now, in this run{}",
            c.display(),
            if no_swap {
                " (no active swap: both skip the swap tests)"
            } else {
                ""
            }
        ),
        None => println!(
            "against the C selftest's times recorded on this machine, not measured now \
             (set KHUGEPAGED_C_SELFTEST=/path/to/khugepaged to measure it in the same run)"
        ),
    }
    let (mut ours, mut theirs) = (0.0, 0.0);
    for run in &runs {
        let t = Instant::now();
        let out = Command::new(exe)
            .args(&run.ours)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .expect("run khugepaged");
        let secs = t.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout);
        let c_text = match &c_selftest {
            Some(c) => match run_c_selftest(c, &run.theirs) {
                Ok((c_secs, c_out, code)) => {
                    theirs += c_secs;
                    format!(
                        "C selftest {c_secs:5.2} s, exit {code}, {} failing step(s)",
                        failing_steps(&c_out)
                    )
                }
                Err(e) => {
                    eprintln!("{}: the C selftest could not run: {e}", run.name);
                    std::process::exit(1);
                }
            },
            None => {
                theirs += run.recorded;
                format!("C selftest {:4.1} s recorded", run.recorded)
            }
        };
        println!(
            "{:<22} {secs:6.2} s, exit {}, {} failing step(s); {c_text}",
            run.name,
            out.status.code().unwrap_or(-1),
            failing_steps(&text)
        );
        ours += secs;
    }
    println!(
        "total {ours:.2} s against the C selftest's {theirs:.2} s {} ({:.0}%; target at most 50%)",
        if c_selftest.is_some() {
            "measured now"
        } else {
            "recorded"
        },
        100.0 * ours / theirs
    );
}
