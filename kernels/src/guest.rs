//! Guest side (PID 1 in the qemu guest). All of it runs in a throwaway VM: nothing here is
//! ever run on the host.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cpio;
use crate::protocol::{self, MARK};

/// Where the host puts the module list, the commands and the config.
pub const KDIR: &str = "/kernels";
/// What the guest sends back to the host.
pub const OUT: &str = "/out";
/// The ext4 disk's mount point.
pub const EXT4: &str = "/mnt/ext4";
/// A tmpfs mounted huge=advise, for the C selftest's file cases.
pub const TMPFS_HUGE: &str = "/mnt/tmpfs-huge";

fn say(msg: &str) {
    println!("{MARK} {msg}");
    let _ = std::io::stdout().flush();
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a fixed path")
}

fn mount(src: &str, target: &str, fstype: &str, data: &str) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    // SAFETY: mount(2) with valid NUL-terminated strings.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, d.as_ptr().cast()) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount -t {fstype} {src} {target}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn load_module(path: &str) -> Result<(), String> {
    let f = fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    use std::os::fd::AsRawFd;
    let params = cstr("");
    // SAFETY: finit_module(2) on an open file with an empty parameter string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    // Already built in or loaded; or a driver for hardware this VM lacks (crc32c_intel
    // without SSE4.2 under TCG).
    if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENODEV)) {
        return Ok(());
    }
    Err(format!("finit_module {path}: {e}"))
}

fn wait_for(path: &str, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Path::new(path).exists()
}

/// Waits until the kernel's random pool is ready (getrandom(2) without GRND_NONBLOCK would
/// block before): pointer hashing, which the tracepoints use, waits for it too. The virtio-rng
/// device feeds it; without a driver for it (kernels without modules) there is nothing to
/// wait for.
fn random_ready(within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut b = [0u8; 1];
    let rng = fs::read_to_string("/sys/class/misc/hw_random/rng_available").unwrap_or_default();
    let within = if rng.contains("virtio") {
        within
    } else {
        Duration::ZERO
    };
    loop {
        // SAFETY: getrandom(2) into a one-byte buffer we own.
        let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) };
        if r == 1 {
            return Ok(start.elapsed());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(format!("getrandom: {e}"));
        }
        if start.elapsed() >= within {
            return Err(if within.is_zero() {
                "not ready, and no virtio-rng driver to feed it".to_string()
            } else {
                format!("not ready after {} s", within.as_secs())
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tracepoints the harness enables per traced case (its private instance: the huge_memory
/// events, and `mmap_lock_acquire_returned` to learn a process's mm), kept enabled for the
/// whole boot by two instances of our own that never record (`tracing_on` 0). Enabling a
/// tracepoint's first probe flips its static key, and its first and second probe re-point its
/// static call; both rewrite kernel text at every call site through int3 breakpoints
/// (`text_poke_bp`). Under TCG that patching, repeated for every case, crashed guests: 6.17
/// oopsed on an int3 in `ttwu_do_activate`, and 6.1's khugepaged hung in a soft lockup. With
/// two probes already registered, a case's instance adds a third and removes it again, which
/// only swaps the probe array (RCU): the kernel text is patched here, once, before any test.
fn pin_tracepoints() -> Result<(), String> {
    let root = Path::new("/sys/kernel/tracing");
    if !root.join("events/huge_memory").is_dir() {
        return Err("no tracefs with huge_memory events".to_string());
    }
    for n in 0..2 {
        let dir = root.join(format!("instances/guest-pinned-tracepoints.{n}"));
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for (file, value) in [
            ("tracing_on", "0"),
            ("buffer_size_kb", "4"),
            ("events/huge_memory/enable", "1"),
            ("events/mmap_lock/mmap_lock_acquire_returned/enable", "1"),
        ] {
            let path = dir.join(file);
            fs::write(&path, value)
                .map_err(|e| format!("writing {value} to {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// zram0 as swap: the first compressor this kernel offers among the usual ones.
fn zram_swap() -> Result<String, String> {
    if !wait_for("/sys/block/zram0", Duration::from_secs(2)) {
        return Err("no /sys/block/zram0 (zram not built in and no module loaded)".into());
    }
    let algos = fs::read_to_string("/sys/block/zram0/comp_algorithm")
        .map_err(|e| format!("reading zram0/comp_algorithm: {e}"))?;
    let offered: Vec<String> = algos
        .split_whitespace()
        .map(|a| a.trim_matches(|c| c == '[' || c == ']').to_string())
        .collect();
    let algo = ["lzo-rle", "lzo", "lz4", "zstd"]
        .iter()
        .find(|a| offered.iter().any(|o| o == *a))
        .map(|a| a.to_string())
        .unwrap_or_else(|| offered.first().cloned().unwrap_or_default());
    // Setting the compressor can fail when its crypto module is missing: keep the default.
    let _ = fs::write("/sys/block/zram0/comp_algorithm", &algo);
    let chosen = fs::read_to_string("/sys/block/zram0/comp_algorithm").unwrap_or_default();
    fs::write("/sys/block/zram0/disksize", "1G").map_err(|e| format!("zram0 disksize: {e}"))?;
    if !wait_for("/dev/zram0", Duration::from_secs(2)) {
        return Err("no /dev/zram0".into());
    }
    let pages = (1u64 << 30) / 4096;
    let mut h = vec![0u8; 4096];
    // struct swap_header: version 1 and last_page after the 1024-byte boot block.
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&((pages - 1) as u32).to_ne_bytes());
    h[4096 - 10..].copy_from_slice(b"SWAPSPACE2");
    let mut dev = fs::OpenOptions::new()
        .write(true)
        .open("/dev/zram0")
        .map_err(|e| format!("/dev/zram0: {e}"))?;
    dev.write_all(&h)
        .and_then(|_| dev.sync_all())
        .map_err(|e| format!("writing the swap header: {e}"))?;
    drop(dev);
    let p = cstr("/dev/zram0");
    // SAFETY: swapon(2) with a valid path.
    if unsafe { libc::swapon(p.as_ptr(), 0) } != 0 {
        return Err(format!(
            "swapon /dev/zram0: {}",
            std::io::Error::last_os_error()
        ));
    }
    let current = chosen
        .split_whitespace()
        .find(|a| a.starts_with('['))
        .unwrap_or("?")
        .to_string();
    Ok(current)
}

/// Sets up the guest and runs the commands; returns the status to report.
pub fn run() -> u8 {
    let mut setup_errors = Vec::new();
    for (src, target, fstype, data) in [
        ("proc", "/proc", "proc", ""),
        ("sysfs", "/sys", "sysfs", ""),
        ("devtmpfs", "/dev", "devtmpfs", ""),
        ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
        ("tmpfs", "/run", "tmpfs", "mode=755"),
    ] {
        if let Err(e) = mount(src, target, fstype, data) {
            setup_errors.push(e);
        }
    }
    // tracefs is optional: the harness does not need it to run.
    let _ = mount("tracefs", "/sys/kernel/tracing", "tracefs", "");
    let _ = fs::create_dir_all("/run/lock");
    if let Err(e) = mount("tmpfs", TMPFS_HUGE, "tmpfs", "huge=advise") {
        setup_errors.push(e);
    }
    let _ = fs::create_dir_all(OUT);
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say(&format!("init release={}", release.trim()));
    // Modules, in the order the host resolved (dependencies first).
    let list = fs::read_to_string(format!("{KDIR}/modules")).unwrap_or_default();
    for m in list.lines().filter(|l| !l.is_empty()) {
        match load_module(m) {
            Ok(()) => {}
            Err(e) => say(&format!("module failed: {e}")),
        }
    }
    // The ext4 disk: file tests on a block-device filesystem, and /var/tmp for swapfiles.
    let _ = fs::create_dir_all("/var");
    if wait_for("/dev/vda", Duration::from_secs(5)) {
        match mount("/dev/vda", EXT4, "ext4", "") {
            Ok(()) => {
                let _ = fs::create_dir_all(format!("{EXT4}/khugepaged"));
                let _ = fs::create_dir_all(format!("{EXT4}/vartmp"));
                let _ = std::os::unix::fs::symlink(format!("{EXT4}/vartmp"), "/var/tmp");
                say(&format!("ext4 mounted on {EXT4}"));
            }
            Err(e) => say(&format!("ext4: {e}")),
        }
    } else {
        say("ext4: no /dev/vda (virtio_blk missing?)");
    }
    if !Path::new("/var/tmp").exists() {
        let _ = fs::create_dir_all("/var/tmp");
    }
    match zram_swap() {
        Ok(algo) => say(&format!("swap zram0 {algo}")),
        Err(e) => say(&format!("swap: none from zram: {e}")),
    }
    match random_ready(Duration::from_secs(20)) {
        Ok(t) => say(&format!("random pool ready after {:.1}s", t.as_secs_f64())),
        Err(e) => say(&format!("random pool: {e}")),
    }
    match pin_tracepoints() {
        Ok(()) => say("tracepoints pinned (two idle tracefs instances)"),
        Err(e) => say(&format!("tracepoints not pinned: {e}")),
    }
    for e in &setup_errors {
        say(&format!("setup failed: {e}"));
    }
    let commands = fs::read_to_string(format!("{KDIR}/commands")).unwrap_or_default();
    let mut status = 0u8;
    for (n, line) in commands.lines().filter(|l| !l.is_empty()).enumerate() {
        let argv = protocol::split_command(line);
        say(&format!("run {n}: {}", argv.join(" ")));
        let start = Instant::now();
        let code = match Command::new(&argv[0])
            .args(&argv[1..])
            .env("PATH", "/bin")
            .env("HOME", "/tmp")
            .status()
        {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
            }
            Err(e) => {
                say(&format!("cannot start {}: {e}", argv[0]));
                127
            }
        };
        say(&format!(
            "exit {n} status {code} after {:.1}s",
            start.elapsed().as_secs_f64()
        ));
        if status == 0 && code != 0 {
            status = code.clamp(1, 255) as u8;
        }
    }
    match send_out() {
        Ok(n) => say(&format!("sent {n} file(s)")),
        Err(e) => {
            say(&format!("sending {OUT} failed: {e}"));
            if status == 0 {
                status = protocol::STATUS_INIT_FAILED;
            }
        }
    }
    status
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<cpio::Entry>) -> std::io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?.flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let ft = e.file_type()?;
        if ft.is_dir() {
            out.push(cpio::Entry::dir(&name));
            collect(&e.path(), &format!("{name}/"), out)?;
        } else if ft.is_file() {
            out.push(cpio::Entry::file(&name, 0o644, fs::read(e.path())?));
        }
    }
    Ok(())
}

/// /out as a cpio archive on ttyS1 (raw mode, so no byte is translated).
fn send_out() -> Result<usize, String> {
    let mut entries = Vec::new();
    collect(Path::new(OUT), "", &mut entries).map_err(|e| format!("reading {OUT}: {e}"))?;
    let files = entries
        .iter()
        .filter(|e| e.mode & cpio::S_IFREG != 0)
        .count();
    let bytes = cpio::write(&entries);
    let mut tty = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ttyS1")
        .map_err(|e| format!("/dev/ttyS1: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: termios calls on an open tty with a zeroed, then filled, struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(tty.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
    tty.write_all(&bytes)
        .map_err(|e| format!("writing ttyS1: {e}"))?;
    // SAFETY: tcdrain on an open tty.
    unsafe { libc::tcdrain(tty.as_raw_fd()) };
    Ok(files)
}

/// Reports `status` through isa-debug-exit (qemu exits with status*2+1), or powers off.
pub fn finish(status: u8) -> ! {
    say(&format!("done status {status}"));
    // The host needs this line before qemu exits: wait until the console's UART has sent it
    // (without this, the exit sometimes came first under load and the run looked cut short).
    // SAFETY: tcdrain on stdout (the console) and sync(2) take no pointers.
    unsafe {
        libc::tcdrain(1);
        libc::sync();
    }
    if let Ok(f) = fs::OpenOptions::new().write(true).open("/dev/port") {
        use std::os::unix::fs::FileExt;
        let _ = f.write_at(&[status], protocol::DEBUG_EXIT_PORT);
    }
    // Only reached without the isa-debug-exit device: power off (qemu then exits 0).
    // SAFETY: reboot(2) as PID 1.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
