//! Booting a fetched kernel under qemu (TCG) with an initramfs holding only the static
//! harness and the static init, and reading back what the guest reports.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::catalog;
use crate::cpio::{self, Entry};
use crate::fetch::{self, Fetched};
use crate::protocol::{self, MARK};

/// The target the guest binaries are built for (static glibc).
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the harness and the init statically; returns their paths.
pub fn build_guest_binaries() -> Result<(PathBuf, PathBuf), String> {
    let ws = catalog::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&ws)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "-q", "--release", "--target", TARGET])
        .args([
            "-p",
            "harness",
            "--bin",
            "khugepaged",
            "-p",
            "kernels",
            "--bin",
            "kernels-init",
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cargo build of the guest binaries: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build of the static guest binaries failed ({status})"
        ));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let dir = target_dir.join(TARGET).join("release");
    Ok((dir.join("khugepaged"), dir.join("kernels-init")))
}

/// What to run in the guest: each command is an argv whose first word is a guest path.
pub struct GuestJob {
    pub commands: Vec<Vec<String>>,
    /// Extra files for the initramfs (guest path without the leading '/', contents, mode).
    pub extra_files: Vec<(String, Vec<u8>, u32)>,
    pub timeout: Duration,
    /// Print the guest's console as it comes.
    pub stream: bool,
}

/// What came back.
#[derive(Debug)]
pub struct GuestResult {
    pub status: u8,
    pub console: Vec<String>,
    /// The files of the guest's /out.
    pub out: Vec<Entry>,
    /// Time from qemu's start to the init's first line.
    pub boot: Duration,
    pub total: Duration,
}

fn initramfs(f: &Fetched, harness: &Path, init: &Path, job: &GuestJob) -> Result<Vec<u8>, String> {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let mut entries = vec![
        Entry::dir("dev"),
        Entry {
            name: "dev/console".into(),
            mode: cpio::S_IFCHR | 0o600,
            data: Vec::new(),
            rdev: (5, 1),
        },
        Entry::dir("bin"),
        Entry::dir("boot"),
        Entry::dir("kernels"),
        Entry::dir("kernels/mod"),
        Entry::file("init", 0o755, read(init)?),
        Entry::file("bin/khugepaged", 0o755, read(harness)?),
    ];
    // The harness reads /boot/config-$(uname -r) (CONFIG_READ_ONLY_THP_FOR_FS).
    if let Some(c) = fetch::config_file(f) {
        entries.push(Entry::file(
            &format!("boot/config-{}", f.release),
            0o644,
            read(&c)?,
        ));
    }
    let (modules, _absent) = fetch::guest_modules(f)?;
    let mut list = String::new();
    for m in modules {
        let name = format!("kernels/mod/{}.ko", m.name);
        list.push_str(&format!("/{name}\n"));
        entries.push(Entry::file(&name, 0o644, m.data));
    }
    entries.push(Entry::file("kernels/modules", 0o644, list.into_bytes()));
    let commands: String = job
        .commands
        .iter()
        .map(|c| protocol::join_command(c) + "\n")
        .collect();
    entries.push(Entry::file(
        "kernels/commands",
        0o644,
        commands.into_bytes(),
    ));
    for (name, data, mode) in &job.extra_files {
        if let Some((dir, _)) = name.rsplit_once('/') {
            let mut acc = String::new();
            for part in dir.split('/') {
                acc = if acc.is_empty() {
                    part.to_string()
                } else {
                    format!("{acc}/{part}")
                };
                if !entries.iter().any(|e| e.name == acc) {
                    entries.push(Entry::dir(&acc));
                }
            }
        }
        entries.push(Entry::file(name, *mode, data.clone()));
    }
    Ok(cpio::write(&entries))
}

/// A fresh sparse ext4 image for the guest's disk.
fn ext4_image(path: &Path) -> Result<(), String> {
    let _ = fs::remove_file(path);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .arg("1G")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("mkfs.ext4 (e2fsprogs) is needed for the guest's disk: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn qemu_binary() -> Result<String, String> {
    let name = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let found = if name.contains('/') {
        std::path::Path::new(&name).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(&name).exists()))
    };
    if !found {
        return Err(format!(
            "{name} not found: install qemu (apt-get install qemu-system-x86) or set QEMU"
        ));
    }
    Ok(name)
}

/// Boots `f` and runs `job` in it.
pub fn boot(f: &Fetched, job: &GuestJob) -> Result<GuestResult, String> {
    let qemu = qemu_binary()?;
    let (harness, init) = build_guest_binaries()?;
    let run_dir =
        catalog::cache_root()
            .join("runs")
            .join(format!("{}-{}", f.release, std::process::id()));
    fs::create_dir_all(&run_dir).map_err(|e| format!("creating {}: {e}", run_dir.display()))?;
    let result = boot_in(f, job, &qemu, &harness, &init, &run_dir);
    let _ = fs::remove_dir_all(&run_dir);
    result
}

fn boot_in(
    f: &Fetched,
    job: &GuestJob,
    qemu: &str,
    harness: &Path,
    init: &Path,
    run_dir: &Path,
) -> Result<GuestResult, String> {
    let initrd = run_dir.join("initramfs.cpio");
    fs::write(&initrd, initramfs(f, harness, init, job)?)
        .map_err(|e| format!("writing {}: {e}", initrd.display()))?;
    let disk = run_dir.join("disk.ext4");
    ext4_image(&disk)?;
    let out_path = run_dir.join("out.cpio");
    let start = Instant::now();
    let mut child = Command::new("nice")
        .args(["-n", "10", qemu, "-accel", "tcg", "-m", "3G", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(&f.vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 transparent_hugepage=madvise quiet",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        // Entropy for the guest's random pool: without it a fresh TCG guest's pool is not
        // ready for minutes, and the huge_memory tracepoints print every hashed pointer as
        // `(____ptrval____)` (6.1 needs hashed ones; see harness/src/host/tracefs.rs).
        .args(["-device", "virtio-rng-pci"])
        .args(["-serial", "stdio", "-serial"])
        .arg(format!("file:{}", out_path.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {qemu}: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut console = Vec::new();
    let mut boot = None;
    let mut timed_out = false;
    let deadline = start + job.timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(500))) {
            Ok(line) => {
                if boot.is_none() && line.contains(&format!("{MARK} init")) {
                    boot = Some(start.elapsed());
                }
                if job.stream {
                    println!("{line}");
                    let _ = std::io::stdout().flush();
                }
                console.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("waiting for qemu: {e}"))?;
    let _ = reader.join();
    let stderr_text = err_reader.join().unwrap_or_default();
    let total = start.elapsed();
    let tail = |n: usize| -> String { console[console.len().saturating_sub(n)..].join("\n") };
    if timed_out {
        return Err(format!(
            "timeout: the guest ran longer than {}s and was killed; last console lines:\n{}",
            job.timeout.as_secs(),
            tail(15)
        ));
    }
    if let Some(p) = console.iter().find(|l| l.contains("Kernel panic")) {
        return Err(format!(
            "the guest kernel panicked: {}\nlast console lines:\n{}",
            p.trim(),
            tail(30)
        ));
    }
    let code = status.code();
    // isa-debug-exit makes qemu exit with status*2+1; the init says the same status on the
    // console first, which tells it from qemu's (or nice's) own odd exit codes.
    let reported = code
        .filter(|c| c % 2 == 1)
        .map(|c| (c >> 1) as u8)
        .filter(|s| {
            console
                .iter()
                .any(|l| l.contains(&format!("{MARK} done status {s}")))
        });
    let Some(guest_status) = reported else {
        let why = if code == Some(0) || (code.is_some_and(|c| c % 2 == 1) && boot.is_some()) {
            if boot.is_none() {
                "the guest stopped before its /init said anything (boot failure, or the serial output was cut)".to_string()
            } else if !console.iter().any(|l| l.contains(&format!("{MARK} done"))) {
                "the guest stopped without reporting a status: the serial output was cut or the guest rebooted".to_string()
            } else {
                "the guest said it was done but the isa-debug-exit device did not report it"
                    .to_string()
            }
        } else {
            format!("qemu failed ({status}): {}", stderr_text.trim())
        };
        return Err(format!(
            "{why} (qemu: {status}); last console lines:\n{}",
            tail(15)
        ));
    };
    if guest_status == protocol::STATUS_INIT_FAILED {
        return Err(format!(
            "the guest's init failed; last console lines:\n{}",
            tail(15)
        ));
    }
    let out_bytes = fs::read(&out_path).unwrap_or_default();
    let out = if out_bytes.is_empty() {
        Vec::new()
    } else {
        cpio::read(&out_bytes).map_err(|e| format!("the guest's /out archive: {e}"))?
    };
    Ok(GuestResult {
        status: guest_status,
        console,
        out,
        boot: boot.unwrap_or(total),
        total,
    })
}
