//! Scenario files on this machine's kernel.
//!
//! The coordinator (`run_scenario`) takes the host lock, restores what a killed run left,
//! journals every THP setting, mounts a private tmpfs for each `huge=` the file's tmpfs files
//! use, creates a private tracefs instance (all journaled before they exist, as for the
//! catalogue's cases: see `isolate`), and runs the scenario in a fresh single-threaded case
//! process (`khugepaged --host-scenario FILE ...`). It restores everything afterwards,
//! whatever happened.
//!
//! In the case process, the process `main` is the case process itself; every `fork` makes a
//! real child (of whichever process is current) that stays alive and runs the operations
//! sent to it over a Unix socket (a worker). fork(2) happens only in single-threaded
//! processes: the case process and its workers never start a thread. A worker's socket
//! reaches the case process through SCM_RIGHTS when a worker forks; each socket end lives in
//! exactly one process, so a worker ends when the case process does (it reads end-of-file).
//!
//! khugepaged runs in the deterministic mode: parked with a day-long sleep, woken for single
//! passes (`khugepaged scans`, `khugepaged until`); a scenario's own `scan_sleep_millisecs`
//! and `alloc_sleep_millisecs` are kept as the values it reads back, never written.
//!
//! Collapse decisions come from the huge_memory tracepoints (`tracefs`): each event's mm is
//! matched to a scenario process, and its scan_pfn to a PMD range of a mapping through the
//! page frames the mappings held just before the pass or MADV_COLLAPSE.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::backend::{
    Backend, ChildResult, Errno, Fd, Madv, MapTarget, PageObs, PageState, SmapsFields,
};
use crate::catalogue::PARKED_SLEEP_MILLISECS;
use crate::scenario::parse::{MapKind, Op, Scenario, Stmt};
use crate::scenario::run::Failure;
use crate::scenario::run::{Decision, Outcome, ProcId, ScenarioExt};

use super::backend::HostBackend;
use super::decisions::{self, FrameMap, Placement};
use super::journal::{self, Journal, SavedState};
use super::{sysfs, tracefs};

// ---------------------------------------------------------------------------------------
// Messages: an 8-byte length and the text; a passed socket rides on the first byte.

fn send(sock: &UnixStream, text: &str, pass: Option<RawFd>) -> std::io::Result<()> {
    let mut msg = (text.len() as u64).to_le_bytes().to_vec();
    msg.extend_from_slice(text.as_bytes());
    match pass {
        None => (&*sock).write_all(&msg),
        Some(fd) => {
            use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
            let fds = [fd];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let n = sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(&msg)],
                &cmsg,
                MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)?;
            (&*sock).write_all(&msg[n..])
        }
    }
}

fn recv(sock: &UnixStream) -> std::io::Result<(String, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut head = [0u8; 8];
    let mut got = 0;
    let mut passed = None;
    while got < head.len() {
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut head[got..])];
        let r = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        for c in r.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    passed.get_or_insert(owned);
                }
            }
        }
        if r.bytes == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += r.bytes;
    }
    let len = u64::from_le_bytes(head) as usize;
    let mut body = vec![0u8; len];
    (&*sock).read_exact(&mut body)?;
    Ok((String::from_utf8_lossy(&body).into_owned(), passed))
}

fn errno_of(e: nix::Error) -> Errno {
    Errno::from_number(e as i32).unwrap_or(Errno::EINVAL)
}

// ---------------------------------------------------------------------------------------
// Workers.

/// Forks a worker from this (single-threaded) process. The child closes `close_in_child`
/// (sockets of other processes), ignores SIGCHLD (its own children are reaped by the
/// kernel) and serves requests until end-of-file. Returns its PID and the socket to it.
fn spawn_worker(b: &HostBackend, close_in_child: &[RawFd]) -> Result<(i32, UnixStream), Errno> {
    match super::ranges::thread_count() {
        Ok(1) => {}
        Ok(n) => {
            eprintln!("host scenario: refusing fork: this process has {n} threads");
            return Err(Errno::EINVAL);
        }
        Err(e) => {
            eprintln!("host scenario: refusing fork: {e}");
            return Err(Errno::EINVAL);
        }
    }
    let (mine, theirs) = UnixStream::pair().map_err(|e| {
        e.raw_os_error()
            .and_then(Errno::from_number)
            .unwrap_or(Errno::EINVAL)
    })?;
    std::io::stdout().flush().ok();
    // SAFETY: the process is single-threaded (checked above).
    match unsafe { nix::unistd::fork() }.map_err(errno_of)? {
        nix::unistd::ForkResult::Child => {
            for &fd in close_in_child {
                // SAFETY: closing descriptors that belong to other processes' sockets.
                unsafe { libc::close(fd) };
            }
            drop(mine);
            // SAFETY: SIG_IGN for SIGCHLD: children of this worker are reaped on exit.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
            let mut wb = HostBackend::default();
            wb.show_progress = false;
            wb.inherit_mappings(b);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(&mut wb, theirs);
            }))
            .map_or(1, |_| 0);
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok((child.as_raw(), mine)),
    }
}

/// A worker's loop: one request, one answer, until end-of-file or `exit`.
fn serve(b: &mut HostBackend, sock: UnixStream) {
    loop {
        let Ok((req, _)) = recv(&sock) else { return };
        let words: Vec<&str> = req.split(' ').collect();
        if words[0] == "fork" {
            let r = spawn_worker(b, &[sock.as_raw_fd()]);
            let sent = match r {
                Ok((pid, s)) => send(&sock, &format!("ok {pid}"), Some(s.as_raw_fd())),
                Err(e) => send(&sock, &format!("errno {}", e.number()), None),
            };
            if sent.is_err() {
                return;
            }
            continue;
        }
        let answer = handle(b, &words);
        if send(&sock, &answer, None).is_err() || words[0] == "exit" {
            return;
        }
    }
}

fn num(w: Option<&&str>) -> u64 {
    w.and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn advice_of(n: i32) -> Option<Madv> {
    [
        Madv::DontNeed,
        Madv::HugePage,
        Madv::NoHugePage,
        Madv::Cold,
        Madv::PageOut,
        Madv::PopulateRead,
        Madv::PopulateWrite,
        Madv::Collapse,
    ]
    .into_iter()
    .find(|a| a.number() == n)
}

fn errno_answer(r: Result<String, Errno>) -> String {
    match r {
        Ok(v) => format!("ok {v}"),
        Err(e) => format!("errno {}", e.number()),
    }
}

fn target_words(t: MapTarget) -> String {
    match t {
        MapTarget::PrivateAnon => "anon 0".into(),
        MapTarget::SharedRw(fd) => format!("shared {}", fd.0),
        MapTarget::PrivateRead(fd) => format!("private {}", fd.0),
        MapTarget::SharedRead(fd) => format!("shared-read {}", fd.0),
    }
}

/// Runs one request in this process.
fn handle(b: &mut HostBackend, w: &[&str]) -> String {
    let a = |i: usize| num(w.get(i));
    let unit = |r: Result<(), Errno>| errno_answer(r.map(|()| String::new()));
    match w[0] {
        "exit" => "ok".into(),
        "touch" => match decisions::touch() {
            Ok(()) => "ok".into(),
            Err(e) => format!("fail {e}"),
        },
        "mmap" => {
            let t = match (w.get(3).copied(), a(4) as i32) {
                (Some("shared"), fd) => MapTarget::SharedRw(Fd(fd)),
                (Some("private"), fd) => MapTarget::PrivateRead(Fd(fd)),
                (Some("shared-read"), fd) => MapTarget::SharedRead(Fd(fd)),
                _ => MapTarget::PrivateAnon,
            };
            errno_answer(b.mmap(a(1), a(2), t).map(|v| v.to_string()))
        }
        "munmap" => unit(b.munmap(a(1), a(2))),
        "madvise" => match advice_of(a(3) as i32) {
            Some(adv) => unit(b.madvise(a(1), a(2), adv)),
            None => format!("errno {}", Errno::EINVAL.number()),
        },
        "mremap" => errno_answer(
            b.mremap_fixed(a(1), a(2), a(3), a(4))
                .map(|v| v.to_string()),
        ),
        "write" => unit(b.write_u32(a(1), a(2) as u32)),
        "read" => errno_answer(b.read_u32(a(1)).map(|v| v.to_string())),
        "memfd" => errno_answer(
            b.memfd_create(w.get(1).unwrap_or(&"m"))
                .map(|f| f.0.to_string()),
        ),
        "ftruncate" => unit(b.ftruncate(Fd(a(1) as i32), a(2))),
        "create" => errno_answer(b.create_file(&w[1..].join(" ")).map(|f| f.0.to_string())),
        "close" => unit(b.close(Fd(a(1) as i32))),
        "smaps" => match b.smaps(a(1)) {
            Ok(None) => "ok none".into(),
            Ok(Some(s)) => format!(
                "ok {} {} {} {} {}",
                s.rss, s.anon_huge_pages, s.shmem_pmd_mapped, s.file_pmd_mapped, s.swap
            ),
            Err(e) => format!("fail {e}"),
        },
        "pagemap" => match b.page_map(a(1), a(2) as usize) {
            Ok(v) => format!(
                "ok {}",
                v.iter().map(encode_obs).collect::<Vec<_>>().join(";")
            ),
            Err(e) => format!("fail {e}"),
        },
        other => format!("fail unknown request {other}"),
    }
}

fn encode_obs(o: &PageObs) -> String {
    format!(
        "{},{},{},{},{},{},{},{}",
        match o.state {
            PageState::None => 'n',
            PageState::Present => 'p',
            PageState::Swap => 's',
            PageState::Zero => 'z',
        },
        o.pmd_mapped as u8,
        o.folio.map_or("-".to_string(), |f| f.to_string()),
        o.index_in_folio,
        o.order,
        o.mapcount,
        o.exclusive as u8,
        o.anon as u8
    )
}

fn decode_obs(s: &str) -> Option<PageObs> {
    let f: Vec<&str> = s.split(',').collect();
    if f.len() != 8 {
        return None;
    }
    Some(PageObs {
        state: match f[0] {
            "p" => PageState::Present,
            "s" => PageState::Swap,
            "z" => PageState::Zero,
            _ => PageState::None,
        },
        pmd_mapped: f[1] == "1",
        folio: f[2].parse().ok(),
        index_in_folio: f[3].parse().ok()?,
        order: f[4].parse().ok()?,
        mapcount: f[5].parse().ok()?,
        exclusive: f[6] == "1",
        anon: f[7] == "1",
    })
}

// ---------------------------------------------------------------------------------------
// The case process's backend.

/// Where a scenario's `file ... on disk` lives.
const DISK_DIR: &str = "/var/tmp";

/// The scenario's processes on this kernel: `main` is this process; the others are workers.
pub struct HostScenario {
    main: HostBackend,
    main_pid: ProcId,
    current: ProcId,
    workers: BTreeMap<ProcId, UnixStream>,
    /// Workers forked by `main` itself (reaped with waitpid).
    direct: BTreeSet<ProcId>,
    /// Private tmpfs directory per `huge=` value.
    tmpfs: BTreeMap<String, PathBuf>,
    files: u32,
    tracer: Result<tracefs::Tracer, String>,
    /// mm pointer -> process.
    mm_ids: BTreeMap<u64, ProcId>,
    /// The ranges each process mapped (for the page-frame snapshot).
    ranges: BTreeMap<ProcId, Vec<(u64, u64)>>,
    /// The page frames of every mapping, as before the last pass or collapse.
    frames: FrameMap,
    /// What decisions on other processes' memory added to /proc/vmstat's collapse counters.
    foreign: BTreeMap<&'static str, u64>,
    /// Decisions read while reading vmstat, for the next take_decisions.
    pending: Vec<Decision>,
    /// The file the next shared mapping maps (the last one created).
    pending_file: Option<String>,
    /// File name -> (process, address, length) of its mappings.
    file_maps: BTreeMap<String, Vec<(ProcId, u64, u64)>>,
    /// Page-cache THPs made for the scenario's processes, by head frame.
    file_heads: decisions::FileHeads,
    /// What the scenario wrote to the sleep settings (never written: khugepaged is parked).
    sleeps: BTreeMap<String, String>,
    /// A failure of the machinery (a worker gone, a tracefs read), reported with the next
    /// decisions.
    broken: Option<String>,
}

const SLEEP_FILES: [&str; 2] = [
    "khugepaged/scan_sleep_millisecs",
    "khugepaged/alloc_sleep_millisecs",
];

impl HostScenario {
    /// Parks khugepaged (deterministic mode) and registers `main` with the tracer.
    pub fn new(
        tmpfs: BTreeMap<String, PathBuf>,
        tracefs: Option<&Path>,
    ) -> Result<HostScenario, String> {
        let mut main = HostBackend::default();
        for f in SLEEP_FILES {
            sysfs::write(f, &PARKED_SLEEP_MILLISECS.to_string())
                .map_err(|e| format!("writing {f}: {e}"))?;
        }
        main.khugepaged_settle()?;
        let pid = std::process::id() as ProcId;
        let tracer = match tracefs {
            Some(d) => tracefs::Tracer::open(d, &main.kernel_release()),
            None => Err("no tracefs instance (tracefs could not be set up)".into()),
        };
        let mut s = HostScenario {
            main,
            main_pid: pid,
            current: pid,
            workers: BTreeMap::new(),
            direct: BTreeSet::new(),
            tmpfs,
            files: 0,
            tracer,
            mm_ids: BTreeMap::new(),
            ranges: BTreeMap::from([(pid, Vec::new())]),
            frames: FrameMap::default(),
            sleeps: BTreeMap::new(),
            pending_file: None,
            foreign: BTreeMap::new(),
            pending: Vec::new(),
            file_maps: BTreeMap::new(),
            file_heads: decisions::FileHeads::new(),
            broken: None,
        };
        s.register(pid);
        Ok(s)
    }

    fn register(&mut self, p: ProcId) {
        let Ok(t) = self.tracer.as_mut() else { return };
        let main = p == self.main_pid;
        let sock = self.workers.get(&p);
        let mut do_touch = || -> Result<(), String> {
            if main {
                decisions::touch()
            } else {
                let s = sock.ok_or("no such process")?;
                ask_on(s, "touch").map(|_| ())
            }
        };
        match t.register(p as i32, &mut do_touch) {
            Ok(id) => {
                self.mm_ids.insert(id, p);
            }
            Err(e) => self.broken = Some(format!("registering pid {p} with the tracer: {e}")),
        }
    }

    /// Sends a request to the current process (a worker); the answer after `ok`.
    fn ask(&mut self, req: &str) -> Result<String, AskError> {
        let s = self
            .workers
            .get(&self.current)
            .ok_or_else(|| AskError::Broken(format!("process {} is gone", self.current)))?;
        ask_on(s, req).map_err(|e| match e.strip_prefix("errno ") {
            Some(n) => AskError::Errno(
                n.parse()
                    .ok()
                    .and_then(Errno::from_number)
                    .unwrap_or(Errno::EINVAL),
            ),
            None => AskError::Broken(e),
        })
    }

    fn ask_errno(&mut self, req: &str) -> Result<String, Errno> {
        self.ask(req).map_err(|e| match e {
            AskError::Errno(e) => e,
            AskError::Broken(why) => {
                eprintln!("host scenario: {why}");
                self.broken.get_or_insert(why);
                Errno::EFAULT
            }
        })
    }

    fn is_main(&self) -> bool {
        self.current == self.main_pid
    }

    /// Records which page frames each PMD range of every mapping holds now.
    fn snapshot_frames(&mut self) {
        self.frames = FrameMap::snapshot(self.ranges.iter().map(|(&p, r)| (p, r.as_slice())));
    }

    /// Counts what a decision on another process's memory added to the collapse counters of
    /// /proc/vmstat (khugepaged scans every MM of the machine), so that `vmstat` shows the
    /// scenario's own share: a scan's exceed verdict (`count_vm_event` next to it in
    /// `hpage_collapse_scan_pmd`, `hpage_collapse_scan_file`, `__collapse_huge_page_isolate`),
    /// an allocated THP (every collapse that did not fail to allocate), a khugepaged success.
    fn tally_foreign(
        foreign: &mut BTreeMap<&'static str, u64>,
        e: &tracefs::Event,
        ours: bool,
        isolates: &mut BTreeMap<i32, String>,
    ) {
        let exceed = |status: &str| match status {
            "exceed_none_pte" => Some("thp_scan_exceed_none_pte"),
            "exceed_swap_pte" => Some("thp_scan_exceed_swap_pte"),
            "exceed_shared_pte" => Some("thp_scan_exceed_share_pte"),
            _ => None,
        };
        let khugepaged = super::kthread::state(e.pid).is_some();
        let mut add = |c: &'static str| *foreign.entry(c).or_default() += 1;
        match e.name.as_str() {
            "mm_collapse_huge_page_isolate" => {
                isolates.insert(e.pid, e.get("status").unwrap_or("").to_string());
            }
            "mm_collapse_huge_page" | "mm_khugepaged_collapse_file" => {
                let isolate = isolates.remove(&e.pid);
                if ours {
                    return;
                }
                if let Some(c) = isolate.as_deref().and_then(exceed) {
                    add(c);
                }
                let status = e.get("status").or(e.get("result")).unwrap_or("");
                if status != "alloc_huge_page_failed" {
                    add("thp_collapse_alloc");
                }
            }
            "mm_khugepaged_scan_pmd" | "mm_khugepaged_scan_file" if !ours => {
                let status = e.get("status").or(e.get("result")).unwrap_or("");
                if let Some(c) = exceed(status) {
                    add(c);
                }
                // khugepaged's own successes (another MM's MADV_COLLAPSE is not counted in
                // pages_collapsed).
                if status == "succeeded" && khugepaged {
                    add("pages_collapsed");
                }
            }
            _ => {}
        }
    }

    fn decisions_from(&mut self, events: Vec<tracefs::Event>) -> Vec<Decision> {
        let mut isolates: BTreeMap<i32, String> = BTreeMap::new();
        let foreign = &mut self.foreign;
        let at = Placement {
            mm_ids: &self.mm_ids,
            frames: &self.frames,
            files: &self.file_maps,
            madv_collapse: None,
        };
        let mut seen =
            |e: &tracefs::Event, ours: bool| Self::tally_foreign(foreign, e, ours, &mut isolates);
        match decisions::decisions_from(events, &at, &mut self.file_heads, &mut seen) {
            Ok(d) => d,
            Err(e) => {
                self.broken.get_or_insert(e);
                Vec::new()
            }
        }
    }

    /// Ends every worker and waits until each is gone.
    fn end_all(&mut self) {
        let ps: Vec<ProcId> = self.workers.keys().copied().collect();
        for p in ps {
            let _ = self.exit_process(p);
        }
    }
}

enum AskError {
    Errno(Errno),
    Broken(String),
}

fn ask_on(s: &UnixStream, req: &str) -> Result<String, String> {
    send(s, req, None).map_err(|e| format!("sending to a scenario process: {e}"))?;
    let (a, _) = recv(s).map_err(|e| format!("the scenario process did not answer: {e}"))?;
    if let Some(v) = a.strip_prefix("ok") {
        Ok(v.trim_start().to_string())
    } else if a.starts_with("errno ") {
        Err(a)
    } else {
        Err(a.strip_prefix("fail ").unwrap_or(&a).to_string())
    }
}

/// Waits until process `p` is gone or a zombie (its mm released): a direct child is reaped.
fn wait_gone(p: ProcId, direct: bool) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let pid = nix::unistd::Pid::from_raw(p as i32);
    if direct {
        let _ = waitpid(pid, None);
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(10) {
        let state = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .map(|(_, r)| r.chars().next().unwrap_or('?'))
            });
        match state {
            None | Some('Z') | Some('X') => return,
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
}

impl Drop for HostScenario {
    fn drop(&mut self) {
        self.end_all();
    }
}

impl Backend for HostScenario {
    fn name(&self) -> &'static str {
        "host"
    }
    fn kernel_release(&self) -> String {
        self.main.kernel_release()
    }
    fn read_only_thp_for_fs(&mut self) -> bool {
        self.main.read_only_thp_for_fs()
    }
    fn mmap(&mut self, addr: u64, len: u64, target: MapTarget) -> Result<u64, Errno> {
        let r = if self.is_main() {
            self.main.mmap(addr, len, target)
        } else {
            self.ask_errno(&format!("mmap {addr} {len} {}", target_words(target)))
                .map(|v| v.parse().unwrap_or(0))
        };
        if let Ok(a) = r {
            self.ranges.entry(self.current).or_default().push((a, len));
            if let (MapTarget::SharedRw(_), Some(f)) = (target, self.pending_file.take()) {
                self.file_maps
                    .entry(f)
                    .or_default()
                    .push((self.current, a, len));
            }
        }
        r
    }
    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        if self.is_main() {
            self.main.munmap(addr, len)
        } else {
            self.ask_errno(&format!("munmap {addr} {len}")).map(|_| ())
        }
    }
    fn madvise(&mut self, addr: u64, len: u64, advice: Madv) -> Result<(), Errno> {
        if advice == Madv::Collapse {
            self.snapshot_frames();
        }
        let r = if self.is_main() {
            self.main.madvise(addr, len, advice)
        } else {
            self.ask_errno(&format!("madvise {addr} {len} {}", advice.number()))
                .map(|_| ())
        };
        if advice == Madv::HugePage {
            // Registering the first MM wakes a khugepaged that had nothing to scan: let that
            // pass end before the scenario goes on.
            if let Err(e) = self.main.khugepaged_settle() {
                self.broken.get_or_insert(e);
            }
        }
        r
    }
    fn mremap_fixed(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        new: u64,
    ) -> Result<u64, Errno> {
        let r = if self.is_main() {
            self.main.mremap_fixed(old, old_len, new_len, new)
        } else {
            self.ask_errno(&format!("mremap {old} {old_len} {new_len} {new}"))
                .map(|v| v.parse().unwrap_or(0))
        };
        if let Ok(a) = r {
            self.ranges
                .entry(self.current)
                .or_default()
                .push((a, new_len));
        }
        r
    }
    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), Errno> {
        if self.is_main() {
            self.main.write_u32(addr, value)
        } else {
            self.ask_errno(&format!("write {addr} {value}")).map(|_| ())
        }
    }
    fn read_u32(&mut self, addr: u64) -> Result<u32, Errno> {
        if self.is_main() {
            self.main.read_u32(addr)
        } else {
            self.ask_errno(&format!("read {addr}"))
                .map(|v| v.parse().unwrap_or(0))
        }
    }
    fn memfd_create(&mut self, name: &str) -> Result<Fd, Errno> {
        let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        self.pending_file = Some(n.clone());
        if self.is_main() {
            self.main.memfd_create(&n)
        } else {
            self.ask_errno(&format!("memfd {n}"))
                .map(|v| Fd(v.parse().unwrap_or(-1)))
        }
    }
    fn ftruncate(&mut self, fd: Fd, len: u64) -> Result<(), Errno> {
        if self.is_main() {
            self.main.ftruncate(fd, len)
        } else {
            self.ask_errno(&format!("ftruncate {} {len}", fd.0))
                .map(|_| ())
        }
    }
    fn create_file(&mut self, path: &str) -> Result<Fd, Errno> {
        if self.is_main() {
            self.main.create_file(path)
        } else {
            self.ask_errno(&format!("create {path}"))
                .map(|v| Fd(v.parse().unwrap_or(-1)))
        }
    }
    fn open_read_only(&mut self, _path: &str) -> Result<Fd, Errno> {
        Err(Errno::EINVAL)
    }
    // Scenarios open no files by path and write nothing back (the selftest's file mem_ops
    // only).
    fn open_read_write(&mut self, _path: &str) -> Result<Fd, Errno> {
        Err(Errno::EINVAL)
    }
    fn msync(&mut self, _addr: u64, _len: u64) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }
    fn write_from(&mut self, _fd: Fd, _addr: u64, _len: u64) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }
    fn close(&mut self, fd: Fd) -> Result<(), Errno> {
        if self.is_main() {
            self.main.close(fd)
        } else {
            self.ask_errno(&format!("close {}", fd.0)).map(|_| ())
        }
    }
    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        self.main.unlink(path)
    }
    fn drop_caches(&mut self) -> Result<(), Errno> {
        self.main.drop_caches()
    }
    fn read_ahead_kb(&mut self, path: &str) -> Result<u64, Errno> {
        self.main.read_ahead_kb(path)
    }
    /// Scenarios set no read_ahead_kb (only the selftest's disk file cases do), and their
    /// journal does not save it: refused.
    fn set_read_ahead_kb(&mut self, _path: &str, _kb: u64) -> Result<(), Errno> {
        Err(Errno::EPERM)
    }
    fn smaps(&mut self, addr: u64) -> Result<Option<SmapsFields>, String> {
        if self.is_main() {
            return self.main.smaps(addr);
        }
        let v = self.ask(&format!("smaps {addr}")).map_err(|e| match e {
            AskError::Errno(e) => e.name().to_string(),
            AskError::Broken(w) => w,
        })?;
        if v == "none" {
            return Ok(None);
        }
        let n: Vec<u64> = v.split(' ').filter_map(|x| x.parse().ok()).collect();
        if n.len() != 5 {
            return Err(format!("a scenario process sent smaps {v:?}"));
        }
        Ok(Some(SmapsFields {
            rss: n[0],
            anon_huge_pages: n[1],
            shmem_pmd_mapped: n[2],
            file_pmd_mapped: n[3],
            swap: n[4],
        }))
    }
    fn page_map(&mut self, addr: u64, nr: usize) -> Result<Vec<PageObs>, String> {
        if self.is_main() {
            return self.main.page_map(addr, nr);
        }
        let v = self
            .ask(&format!("pagemap {addr} {nr}"))
            .map_err(|e| match e {
                AskError::Errno(e) => e.name().to_string(),
                AskError::Broken(w) => w,
            })?;
        let obs: Option<Vec<PageObs>> = v.split(';').map(decode_obs).collect();
        match obs {
            Some(o) if o.len() == nr => Ok(o),
            _ => Err("a scenario process sent a page map that cannot be read".into()),
        }
    }
    fn thp_read(&mut self, path: &str) -> Result<String, Errno> {
        match self.sleeps.get(path) {
            Some(v) => Ok(format!("{v}\n")),
            None => self.main.thp_read(path),
        }
    }
    fn thp_write(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        if SLEEP_FILES.contains(&path) {
            // Parked: the value is kept for reads, never written.
            sysfs::checked(path)?;
            self.sleeps.insert(path.to_string(), value.to_string());
            return Ok(());
        }
        self.main.thp_write(path, value)
    }
    fn fork(
        &mut self,
        _child: &mut dyn FnMut(&mut dyn Backend) -> ChildResult,
    ) -> Result<ChildResult, Errno> {
        // Scenarios fork through ScenarioExt::fork_process (children stay alive).
        Err(Errno::EINVAL)
    }
    fn sleep_us(&mut self, usec: u64) {
        self.main.sleep_us(usec)
    }
    fn khugepaged_pass(&mut self) -> Result<(), String> {
        self.snapshot_frames();
        self.main.khugepaged_pass()
    }
    fn khugepaged_settle(&mut self) -> Result<(), String> {
        self.main.khugepaged_settle()
    }
    fn as_dyn(&mut self) -> &mut dyn Backend {
        self
    }
}

impl ScenarioExt for HostScenario {
    fn current_process(&self) -> ProcId {
        self.current
    }

    fn fork_process(&mut self) -> Result<ProcId, Errno> {
        let (pid, sock) = if self.is_main() {
            let others: Vec<RawFd> = self.workers.values().map(|s| s.as_raw_fd()).collect();
            let (pid, s) = spawn_worker(&self.main, &others)?;
            self.direct.insert(pid as ProcId);
            (pid as ProcId, s)
        } else {
            let s = self.workers.get(&self.current).ok_or(Errno::ENOENT)?;
            send(s, "fork", None).map_err(|_| Errno::EFAULT)?;
            let (a, fd) = recv(s).map_err(|_| Errno::EFAULT)?;
            let pid: ProcId = match a.strip_prefix("ok ") {
                Some(p) => p.parse().map_err(|_| Errno::EFAULT)?,
                None => {
                    return Err(a
                        .strip_prefix("errno ")
                        .and_then(|n| n.parse().ok())
                        .and_then(Errno::from_number)
                        .unwrap_or(Errno::EFAULT))
                }
            };
            let fd = fd.ok_or(Errno::EFAULT)?;
            (pid, UnixStream::from(fd))
        };
        self.workers.insert(pid, sock);
        let inherited = self.ranges.get(&self.current).cloned().unwrap_or_default();
        self.ranges.insert(pid, inherited);
        decisions::inherit_file_maps(&mut self.file_maps, self.current, pid);
        self.register(pid);
        Ok(pid)
    }

    fn switch_process(&mut self, p: ProcId) {
        self.current = p;
    }

    fn exit_process(&mut self, p: ProcId) -> Result<(), Errno> {
        let s = self.workers.remove(&p).ok_or(Errno::ENOENT)?;
        let _ = ask_on(&s, "exit");
        drop(s);
        wait_gone(p, self.direct.remove(&p));
        self.ranges.remove(&p);
        self.mm_ids.retain(|_, q| *q != p);
        Ok(())
    }

    /// The machine's counter, less what decisions on other processes' memory added to it
    /// (read from the tracepoints; see `tally_foreign`). Without the tracer, the machine's.
    fn vmstat(&mut self, name: &str) -> Option<u64> {
        if let Ok(t) = self.tracer.as_mut() {
            match t.take() {
                Ok(events) => {
                    let d = self.decisions_from(events);
                    self.pending.extend(d);
                }
                Err(e) => {
                    self.broken.get_or_insert(e);
                }
            }
        }
        let machine: u64 = if name == "pages_collapsed" {
            self.main
                .thp_read("khugepaged/pages_collapsed")
                .ok()?
                .trim()
                .parse()
                .ok()?
        } else {
            let text = std::fs::read_to_string("/proc/vmstat").ok()?;
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.trim().parse().ok())?
        };
        Some(machine.saturating_sub(self.foreign.get(name).copied().unwrap_or(0)))
    }

    fn create_tmpfs_file(&mut self, huge: &str) -> Result<Fd, Errno> {
        let Some(dir) = self.tmpfs.get(huge).cloned() else {
            eprintln!("host scenario: no private tmpfs with huge={huge} was mounted");
            return Err(Errno::ENOENT);
        };
        self.files += 1;
        let name = format!("scenario-file-{}", self.files);
        self.pending_file = Some(name.clone());
        let path = dir.join(name);
        self.create_file(&path.to_string_lossy())
    }

    fn create_disk_file(&mut self) -> Result<Fd, String> {
        // /var/tmp: the root filesystem here, the ext4 disk in the qemu guests (their init
        // links it there). A tmpfs or ramfs would make it a shmem or ramfs file instead.
        let dir = Path::new(DISK_DIR);
        super::fsinfo::require_disk_dir(dir)?;
        self.files += 1;
        let name = format!("khugepaged-scenario-{}-{}", std::process::id(), self.files);
        let path = dir.join(&name);
        let fd = self
            .create_file(&path.to_string_lossy())
            .map_err(|e| format!("creating {}: {}", path.display(), e.name()))?;
        // Unlinked at once: the descriptor and then the mapping keep the inode, and a run
        // killed at any point leaves nothing behind. Tracepoints still print the name.
        std::fs::remove_file(&path).map_err(|e| format!("unlinking {}: {e}", path.display()))?;
        self.pending_file = Some(name);
        Ok(fd)
    }

    fn take_decisions(&mut self) -> Result<Vec<Decision>, String> {
        if let Some(b) = &self.broken {
            return Err(b.clone());
        }
        let events = match self.tracer.as_mut() {
            Ok(t) => t.take()?,
            Err(e) => return Err(e.clone()),
        };
        let mut d = std::mem::take(&mut self.pending);
        d.extend(self.decisions_from(events));
        match &self.broken {
            Some(b) => Err(b.clone()),
            None => Ok(d),
        }
    }

    fn khugepaged_wake(&mut self) -> Result<(), String> {
        self.khugepaged_pass()
    }

    fn after_settings_write(&mut self) -> Result<(), String> {
        self.main.khugepaged_settle()
    }
}

// ---------------------------------------------------------------------------------------
// The case process.

/// `khugepaged --host-scenario FILE [--tmpfs HUGE=DIR]... [--tracefs DIR]`: runs one
/// scenario (already validated by the coordinator) as this kernel's release and writes its
/// log (`L`), trace (`T`) and failure (`F`) lines, then `O\tdone`.
pub fn scenario_process_main(args: &[String]) -> i32 {
    super::crash_point::mark_case_process();
    let mut file = None;
    let mut tmpfs = BTreeMap::new();
    let mut trace_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--host-scenario" => file = it.next().cloned(),
            "--tmpfs" => {
                if let Some((h, d)) = it.next().and_then(|v| v.split_once('=')) {
                    tmpfs.insert(h.to_string(), PathBuf::from(d));
                }
            }
            "--tracefs" => trace_dir = it.next().map(PathBuf::from),
            _ => {}
        }
    }
    let Some(file) = file else {
        eprintln!("khugepaged --host-scenario: no file");
        return 2;
    };
    let sc = match crate::scenario::parse_file(Path::new(&file)) {
        Ok(s) => s,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            return 2;
        }
    };
    let out = std::io::stdout();
    let emit = |tag: &str, text: &str| {
        let mut o = out.lock();
        let _ = writeln!(o, "{tag}\t{}", text.replace(['\t', '\n'], " "));
        let _ = o.flush();
    };
    let mut b = match HostScenario::new(tmpfs, trace_dir.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            emit("E", &e);
            emit("O", "done");
            return 0;
        }
    };
    let release = b.kernel_release();
    let o = crate::scenario::run_on(&sc, &release, &mut b);
    drop(b);
    for l in &o.log {
        emit("L", l);
    }
    for l in &o.trace {
        emit("T", l);
    }
    if let Some(f) = &o.failure {
        let mut line = format!("F\t{}\t{}\t{}", f.loc, f.line, f.why);
        line = line.replace('\n', " ");
        let mut lock = out.lock();
        let _ = writeln!(lock, "{line}");
    }
    emit("O", "done");
    0
}

// ---------------------------------------------------------------------------------------
// The coordinator.

/// What a host run of a scenario gave.
#[derive(Clone, Debug)]
pub enum HostRun {
    Ran(Outcome),
    /// The machine cannot run it (not root, no THP, ...): the reason.
    Skipped(String),
    /// The run broke before or outside the scenario's lines (with why).
    Broken(String),
}

/// The `huge=` values of the tmpfs files a scenario maps.
fn tmpfs_hugs(body: &[Stmt], out: &mut BTreeSet<String>) {
    for s in body {
        match &s.op {
            Op::Map {
                kind: MapKind::TmpfsFile { huge },
                ..
            } => {
                out.insert(huge.clone());
            }
            Op::In { body, .. } | Op::On { body, .. } => tmpfs_hugs(body, out),
            _ => {}
        }
    }
}

/// Runs `sc` (parsed and validated) on this kernel in its own case process; see the module
/// documentation. `exe` is this binary.
pub fn run_scenario(sc: &Scenario, exe: &Path) -> HostRun {
    use super::isolate::{preflight, HostLock, Preflight};
    use super::signals::{exit_if_interrupted, DeferSignals};
    match preflight() {
        Preflight::Broken(e) => return HostRun::Broken(e),
        Preflight::SkipAll(r) => return HostRun::Skipped(r),
        Preflight::Ready(_) => {}
    }
    let _signals = DeferSignals::new();
    let lock = match HostLock::acquire() {
        Ok(l) => l,
        Err(e) => {
            exit_if_interrupted();
            return HostRun::Broken(e);
        }
    };
    match journal::recover_leftover() {
        Ok(Some(msg)) => eprintln!("khugepaged: {msg}"),
        Ok(None) => {}
        Err(e) => return HostRun::Broken(e),
    }
    let state = match SavedState::capture(&[]) {
        Ok(s) => s,
        Err(e) => return HostRun::Broken(e),
    };
    let mut journal = match Journal::begin(state) {
        Ok(j) => j,
        Err(e) => return HostRun::Broken(e),
    };
    let mut hugs = BTreeSet::new();
    tmpfs_hugs(&sc.body, &mut hugs);
    let prepared = prepare(&hugs, &mut journal);
    let result = match prepared {
        Err(e) => HostRun::Broken(e),
        Ok((mounts, tracing)) => spawn(sc, exe, &mounts, tracing.as_deref(), &lock),
    };
    let errs = journal.finish();
    drop(lock);
    exit_if_interrupted();
    if !errs.is_empty() {
        return HostRun::Broken(format!("restoring the machine failed: {}", errs.join("; ")));
    }
    result
}

type Prepared = (BTreeMap<String, PathBuf>, Option<PathBuf>);

/// Private tmpfs mounts (one per `huge=`) and the tracefs instance, each journaled first. A
/// tracefs that cannot be set up is not fatal: decisions are then reported as unobservable.
fn prepare(hugs: &BTreeSet<String>, journal: &mut Journal) -> Result<Prepared, String> {
    let mut mounts = BTreeMap::new();
    for h in hugs {
        let dir = super::isolate::private_dir_in(&std::env::temp_dir(), journal)?;
        journal.state.mounts.push(dir.clone());
        journal.write()?;
        super::crash_point::crash_point("mount the private tmpfs");
        nix::mount::mount(
            Some("tmpfs"),
            dir.as_path(),
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("huge={h},mode=0700,size=256m").as_str()),
        )
        .map_err(|e| {
            format!(
                "mounting a private tmpfs (huge={h}) on {}: {e}",
                dir.display()
            )
        })?;
        mounts.insert(h.clone(), dir);
    }
    let mut private = |j: &mut Journal| super::isolate::private_dir_in(&std::env::temp_dir(), j);
    let tracing = match tracefs::create_instance(journal, &mut private) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("khugepaged scenario: no tracefs instance, collapse decisions will not be observed: {e}");
            None
        }
    };
    Ok((mounts, tracing))
}

fn spawn(
    sc: &Scenario,
    exe: &Path,
    mounts: &BTreeMap<String, PathBuf>,
    tracing: Option<&Path>,
    lock: &super::journal::HostLock,
) -> HostRun {
    use std::io::BufRead;
    let mut args = vec![
        "--host-scenario".to_string(),
        sc.path.to_string_lossy().into_owned(),
    ];
    for (h, d) in mounts {
        args.push("--tmpfs".into());
        args.push(format!("{h}={}", d.display()));
    }
    if let Some(t) = tracing {
        args.push("--tracefs".into());
        args.push(t.to_string_lossy().into_owned());
    }
    let mut cmd = Command::new(exe);
    super::isolate::case_process_setup(&mut cmd, lock);
    let mut child = match cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return HostRun::Broken(format!("starting the case process {}: {e}", exe.display()))
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut o = Outcome::default();
    let mut done = false;
    let mut error = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let (tag, rest) = line.split_once('\t').unwrap_or((line.as_str(), ""));
        match tag {
            "L" => o.log.push(rest.to_string()),
            "T" => o.trace.push(rest.to_string()),
            "E" => error = Some(rest.to_string()),
            "F" => {
                let f: Vec<&str> = rest.splitn(3, '\t').collect();
                o.failure = Some(Failure {
                    loc: parse_loc(f[0]),
                    line: f.get(1).unwrap_or(&"").to_string(),
                    why: f.get(2).unwrap_or(&"").to_string(),
                });
            }
            "O" => done = true,
            _ => {}
        }
    }
    let status = child.wait();
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) if s.signal().is_some() => {
            return HostRun::Broken(format!(
                "the case process was killed by signal {}",
                s.signal().unwrap_or(0)
            ))
        }
        Err(e) => return HostRun::Broken(format!("waiting for the case process: {e}")),
        _ => {}
    }
    if let Some(e) = error {
        return HostRun::Broken(e);
    }
    if !done {
        return HostRun::Broken("the case process ended without a verdict".into());
    }
    HostRun::Ran(o)
}

/// `file:line:col` back into a location.
fn parse_loc(s: &str) -> crate::scenario::parse::Loc {
    let mut it = s.rsplitn(3, ':');
    let col = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let line = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let file = it.next().unwrap_or(s);
    crate::scenario::parse::Loc {
        file: std::sync::Arc::new(PathBuf::from(file)),
        line,
        col,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_observations_cross_the_socket_unchanged() {
        let o = PageObs {
            state: PageState::Present,
            pmd_mapped: true,
            folio: Some(0x402200),
            index_in_folio: 17,
            order: 9,
            mapcount: 2,
            exclusive: false,
            anon: true,
        };
        assert_eq!(decode_obs(&encode_obs(&o)), Some(o));
        let none = PageObs::default();
        assert_eq!(decode_obs(&encode_obs(&none)), Some(none));
        assert_eq!(decode_obs("p,1"), None);
    }

    #[test]
    fn a_failure_location_round_trips() {
        let l = parse_loc("fixtures/scenarios/a.scn:12:5");
        assert_eq!(l.file.as_path(), Path::new("fixtures/scenarios/a.scn"));
        assert_eq!((l.line, l.col), (12, 5));
    }

    #[test]
    fn tmpfs_huge_values_are_collected_from_nested_blocks() {
        let sc = crate::scenario::parse_str(
            Path::new("x.scn"),
            "profile 6.18\nfile F 1 pmd on tmpfs huge=within_size\non 6.18:\n    file G 1 pmd on tmpfs huge=always\n",
        )
        .unwrap();
        let mut h = BTreeSet::new();
        tmpfs_hugs(&sc.body, &mut h);
        assert_eq!(
            h.into_iter().collect::<Vec<_>>(),
            ["always".to_string(), "within_size".to_string()]
        );
    }
}
