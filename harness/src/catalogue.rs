//! tools/testing/selftests/mm/khugepaged.c, written once against [`Backend`]: the same test
//! functions, step messages, expectations and TEST() table, in the same mem_ops ×
//! collapse_context shape, for two versions of the file ([`Catalogue`]): Linux 6.18's, and
//! 7.3's (read in Debian's linux-source-7.3; 7.2's differs only by lacking the
//! mthp_khugepaged context). Where 7.3 changed a test, the test asks `env.catalogue`.

use std::fmt;

use crate::backend::{Backend, ChildResult, Errno, Fd, Madv, MapTarget};
use crate::steps::{Step, Verdict};
use crate::thp_settings::{SettingsStack, ThpSettings};

/// The selftest's BASE_ADDR.
pub const BASE_ADDR: u64 = 1 << 30;
/// The selftest's TEST_FILE.
pub const TEST_FILE: &str = "collapse_test_file";

/// Which release's khugepaged.c the tests follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Catalogue {
    /// Linux 6.18: one read-only file mem_ops, the khugepaged and madvise contexts.
    #[default]
    V6_18,
    /// Linux 7.3: read-only, read-write (read) and read-write (write) file mem_ops, the
    /// mthp_khugepaged context (`-c ORDER`), collapse_single_mthp, KTAP (TAP 13) output.
    V7_3,
}

impl Catalogue {
    pub const ALL: [Catalogue; 2] = [Catalogue::V6_18, Catalogue::V7_3];
    pub const NEWEST: Catalogue = Catalogue::V7_3;

    pub fn name(self) -> &'static str {
        match self {
            Catalogue::V6_18 => "6.18",
            Catalogue::V7_3 => "7.3",
        }
    }

    /// `--catalogue RELEASE`: a known version by its release (`7.3`).
    pub fn from_name(name: &str) -> Option<Catalogue> {
        Catalogue::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The catalogue of a kernel's era: 7.3's from 7.2 (whose khugepaged.c is 7.3's without
    /// the mthp_khugepaged context, which only runs when asked for), 6.18's before. A release
    /// the model does not know gets the newest.
    pub fn for_kernel(profile: Option<&model::KernelProfile>) -> Catalogue {
        match profile {
            Some(p) if p.release < model::profile::Release { major: 7, minor: 2 } => {
                Catalogue::V6_18
            }
            _ => Catalogue::NEWEST,
        }
    }

    /// Whether the run prints the selftest's KTAP (7.x) rather than its plain lines.
    pub fn ktap_output(self) -> bool {
        self == Catalogue::V7_3
    }
}

/// `struct mem_ops`: anon, file, shmem; 7.3 splits file into read-only (`File`), read-write
/// read (`FileRwRead`) and read-write write (`FileRwWrite`), all named "file".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    Anon,
    File,
    Shmem,
    FileRwRead,
    FileRwWrite,
}

impl MemType {
    pub const ALL: [MemType; 3] = [MemType::Anon, MemType::File, MemType::Shmem];

    /// The mem_ops name the selftest prints.
    pub fn name(self) -> &'static str {
        match self {
            MemType::Anon => "anon",
            MemType::File | MemType::FileRwRead | MemType::FileRwWrite => "file",
            MemType::Shmem => "shmem",
        }
    }

    /// A name unique among the mem_ops, for case ids and fixture names.
    pub fn key(self) -> &'static str {
        match self {
            MemType::FileRwRead => "file-rw-read",
            MemType::FileRwWrite => "file-rw-write",
            m => m.name(),
        }
    }

    /// A file mem_ops (needs a `[dir]`).
    pub fn is_file(self) -> bool {
        self.family() == MemType::File
    }

    /// The `<mem_type>` of the command line that selects these ops.
    pub fn family(self) -> MemType {
        match self {
            MemType::FileRwRead | MemType::FileRwWrite => MemType::File,
            m => m,
        }
    }
}

/// `struct collapse_context`: khugepaged, madvise, and (7.3) mthp_khugepaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    Khugepaged,
    Madvise,
    /// khugepaged collapsing to the `-c ORDER` mTHP size (7.3, anon only).
    MthpKhugepaged,
}

impl Context {
    /// The contexts `all:` selects (mthp_khugepaged only runs when named).
    pub const ALL: [Context; 2] = [Context::Khugepaged, Context::Madvise];

    pub fn name(self) -> &'static str {
        match self {
            Context::Khugepaged => "khugepaged",
            Context::Madvise => "madvise",
            Context::MthpKhugepaged => "mthp_khugepaged",
        }
    }

    /// `enforce_pte_scan_limits`.
    pub fn enforce_pte_scan_limits(self) -> bool {
        self != Context::Madvise
    }
}

/// The filesystem of the `[dir]` argument (`finfo.type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirKind {
    /// A tmpfs mount (VMA_SHMEM), with its `huge=` option.
    Tmpfs { huge: String },
    /// Anything else (VMA_FILE), with the block device's read_ahead_kb path if found.
    Disk { read_ahead_kb_path: Option<String> },
}

/// `struct file_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub dir: String,
    pub path: String,
    pub kind: DirKind,
}

impl FileInfo {
    pub fn new(dir: &str, kind: DirKind) -> FileInfo {
        FileInfo {
            dir: dir.to_string(),
            path: format!("{}/{}", dir.trim_end_matches('/'), TEST_FILE),
            kind,
        }
    }

    /// The model's stand-in for a directory on a tmpfs mounted with `huge=`.
    pub fn model_tmpfs(huge: &str) -> FileInfo {
        FileInfo::new("/model-tmpfs", DirKind::Tmpfs { huge: huge.into() })
    }

    fn is_tmpfs(&self) -> bool {
        matches!(self.kind, DirKind::Tmpfs { .. })
    }
}

/// How khugepaged runs while a case runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KhugepagedMode {
    /// The selftest's own settings: khugepaged wakes every 10 ms and may act on an advised
    /// area at any moment, also between two waits (the 6.17+ selftest leaves it advised).
    #[default]
    Selftest,
    /// khugepaged sleeps for [`PARKED_SLEEP_MILLISECS`] and runs only inside the test's waits,
    /// one pass at a time, each woken by a write to `scan_sleep_millisecs` (see
    /// `host::kthread`). Everything else is the selftest's.
    Deterministic,
}

impl KhugepagedMode {
    pub fn name(self) -> &'static str {
        match self {
            KhugepagedMode::Selftest => "selftest",
            KhugepagedMode::Deterministic => "deterministic",
        }
    }

    pub fn from_name(name: &str) -> Option<KhugepagedMode> {
        match name {
            "selftest" => Some(KhugepagedMode::Selftest),
            "deterministic" => Some(KhugepagedMode::Deterministic),
            _ => None,
        }
    }
}

/// `scan_sleep_millisecs` and `alloc_sleep_millisecs` in the deterministic mode: a day, so
/// khugepaged wakes only when the harness writes one of them.
pub const PARKED_SLEEP_MILLISECS: u64 = 86_400_000;

/// What the command line chose: `-s anon_order`, `-c collapse_order`, `[dir]`, how
/// khugepaged runs and which release's selftest the tests follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub anon_order: u8,
    pub finfo: Option<FileInfo>,
    pub khugepaged: KhugepagedMode,
    pub catalogue: Catalogue,
    /// `-c`: the mTHP order of the mthp_khugepaged context (7.3).
    pub collapse_order: u8,
}

/// `exit(EXIT_FAILURE)` in the C code: the test process stops here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort(pub String);

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type R = Result<(), Abort>;

/// One test process: the backend, its printed steps and khugepaged.c's globals.
pub struct Ctx<'a> {
    pub b: &'a mut dyn Backend,
    pub env: Env,
    pub steps: Vec<Step>,
    /// Text printed since the last newline (a step waiting for its verdict).
    pending: String,
    /// khugepaged.c's exit_status: failures so far.
    pub exit_status: i32,
    pub settings: SettingsStack,
    /// finfo.fd.
    fd: Option<Fd>,
    page_size: u64,
    hpage_pmd_size: u64,
    hpage_pmd_nr: u64,
    /// The area the last check_huge looked at and what it saw, for failure diagnostics.
    last_check: Option<(u64, u64, String)>,
    /// Record system calls and observations at every step (for traces).
    pub tracing: bool,
    /// The test area: where observations look.
    area: Option<(u64, u64)>,
    /// The test last advised MADV_HUGEPAGE (not since undone by MADV_NOHUGEPAGE): with
    /// khugepaged running, the kernel may collapse at any moment, not only during a wait.
    hugepage_advised: bool,
    /// The step being finished ends a khugepaged wait.
    ending_wait: bool,
    /// The kernel era the backend stands for (the model's profile, or the host kernel's).
    pub era: Option<model::KernelProfile>,
    /// Called with each step as it ends (the host's case process streams its lines).
    pub step_sink: Option<&'a mut dyn FnMut(&Step)>,
}

impl<'a> Ctx<'a> {
    pub fn new(b: &'a mut dyn Backend, env: Env) -> Ctx<'a> {
        let page_size = b.page_size();
        let hpage_pmd_size = b.hpage_pmd_size();
        Ctx {
            b,
            env,
            steps: Vec::new(),
            pending: String::new(),
            exit_status: 0,
            settings: SettingsStack::default(),
            fd: None,
            page_size,
            hpage_pmd_size,
            hpage_pmd_nr: hpage_pmd_size / page_size,
            last_check: None,
            tracing: false,
            area: None,
            hugepage_advised: false,
            ending_wait: false,
            era: None,
            step_sink: None,
        }
    }

    /// Records a printed step and hands it to the sink, if any.
    fn push_step(&mut self, step: Step) {
        if let Some(sink) = self.step_sink.as_mut() {
            sink(&step);
        }
        self.steps.push(step);
    }

    pub(crate) fn page_size(&self) -> u64 {
        self.page_size
    }

    pub(crate) fn hpage_pmd_size(&self) -> u64 {
        self.hpage_pmd_size
    }

    /// madvise(2) through the backend, remembering MADV_HUGEPAGE/NOHUGEPAGE for traces.
    pub fn madvise(&mut self, addr: u64, len: u64, advice: Madv) -> Result<(), Errno> {
        match advice {
            Madv::HugePage => self.hugepage_advised = true,
            Madv::NoHugePage => self.hugepage_advised = false,
            _ => {}
        }
        self.b.madvise(addr, len, advice)
    }

    /// Whether khugepaged may change the test area between waits right now: it runs (the
    /// settings enable PMD THPs) and the area is advised. Observations taken then depend on
    /// timing on a real kernel, and traces mark them volatile.
    fn khugepaged_may_act(&self) -> bool {
        if self.env.khugepaged == KhugepagedMode::Deterministic {
            return false;
        }
        let running = self.settings.current().is_ok_and(|s| {
            s.thp_enabled != "never" || !matches!(s.shmem_enabled.as_str(), "never" | "deny")
        });
        running && self.hugepage_advised && !self.ending_wait
    }

    /// When tracing: the calls since the last step, and what /proc shows of the test area.
    fn trace_point(&mut self) -> (Vec<String>, Vec<String>) {
        if !self.tracing {
            return (Vec::new(), Vec::new());
        }
        let calls = self.b.take_trace_calls();
        let mut obs = Vec::new();
        if self.khugepaged_may_act() {
            // What khugepaged did by now depends on timing, and reading /proc takes long
            // enough to change the race: leave the area alone ("~": replays skip the line).
            obs.push("~not observed: khugepaged may act on the area now".to_string());
            return (calls, obs);
        }
        if let Some((addr, len)) = self.area {
            obs.push(match self.b.smaps(addr) {
                Err(e) => format!("smaps({addr:#x}): unreadable: {e}"),
                Ok(Some(s)) => format!(
                    "smaps({addr:#x}): rss={} anon_huge={} shmem_pmd={} file_pmd={} swap={}",
                    s.rss, s.anon_huge_pages, s.shmem_pmd_mapped, s.file_pmd_mapped, s.swap
                ),
                Ok(None) => format!("smaps({addr:#x}): no VMA starts here"),
            });
            let nr = (len / self.page_size) as usize;
            obs.push(format!(
                "map({addr:#x}+{nr}): {}",
                self.b.page_map(addr, nr).map_or_else(
                    |e| format!("unreadable: {e}"),
                    |m| crate::page_map::render(&m)
                )
            ));
        }
        (calls, obs)
    }

    /// When tracing: a last record for the calls after the final step (cleanup).
    pub fn trace_end(&mut self) {
        if self.tracing {
            let (calls, obs) = self.trace_point();
            self.push_step(Step {
                text: "(end of test)".into(),
                calls,
                obs,
                ..Step::default()
            });
        }
    }

    // ---- output, as khugepaged.c prints it ----

    /// `printf` of text without a newline; a leading '\r' rewrites the pending line.
    pub fn printf(&mut self, text: &str) {
        match text.strip_prefix('\r') {
            Some(rest) => self.pending = rest.to_string(),
            None => self.pending.push_str(text),
        }
    }

    fn finish(&mut self, verdict: Verdict, word: &str) {
        let text = std::mem::take(&mut self.pending);
        let mut detail = Vec::new();
        if verdict == Verdict::Fail {
            detail = self.diagnostics();
        }
        let (calls, obs) = self.trace_point();
        self.ending_wait = false;
        self.push_step(Step {
            text,
            verdict,
            word: word.to_string(),
            detail,
            calls,
            obs,
        });
    }

    /// `success()`.
    pub fn success(&mut self, word: &str) {
        self.finish(Verdict::Ok, word);
    }

    /// `fail()`: also counts a failure.
    pub fn fail(&mut self, word: &str) {
        self.exit_status += 1;
        self.finish(Verdict::Fail, word);
    }

    /// `skip()`.
    pub fn skip(&mut self, word: &str) {
        self.finish(Verdict::Skip, word);
    }

    /// A message printed before `exit(EXIT_FAILURE)`.
    fn abort(&mut self, msg: String) -> Abort {
        let text = format!("{}{}", std::mem::take(&mut self.pending), msg);
        let detail = self.diagnostics();
        let (calls, obs) = self.trace_point();
        self.push_step(Step {
            text: text.clone(),
            verdict: Verdict::Fail,
            word: String::new(),
            detail,
            calls,
            obs,
        });
        Abort(text)
    }

    /// `perror(msg)` then exit; from 7.3 `ksft_exit_fail_perror(msg)`, which kselftest prints
    /// as `Bail out! msg: strerror (errno)`.
    fn perror(&mut self, msg: &str, e: Errno) -> Abort {
        if self.env.catalogue.ktap_output() {
            self.abort(format!(
                "Bail out! {msg}: {} ({})",
                e.strerror(),
                e.number()
            ))
        } else {
            self.abort(format!("{msg}: {}", e.strerror()))
        }
    }

    /// `printf(msg)` then exit; from 7.3 `ksft_exit_fail_msg(msg)`: `Bail out! msg`.
    fn fail_msg(&mut self, msg: &str) -> Abort {
        if self.env.catalogue.ktap_output() {
            self.abort(format!("Bail out! {msg}"))
        } else {
            self.abort(msg.to_string())
        }
    }

    /// What the last check saw and the page map of that area.
    fn diagnostics(&mut self) -> Vec<String> {
        let Some((addr, len, seen)) = self.last_check.clone() else {
            return Vec::new();
        };
        let nr = (len / self.page_size) as usize;
        let map = self.b.page_map(addr, nr).map_or_else(
            |e| format!("unreadable: {e}"),
            |m| crate::page_map::render(&m),
        );
        vec![seen, format!("page map {addr:#x}+{nr} pages: {map}")]
    }

    // ---- helpers of khugepaged.c ----

    fn alloc_mapping(&mut self, nr: u64) -> Result<u64, Abort> {
        let p = self
            .b
            .mmap(BASE_ADDR, nr * self.hpage_pmd_size, MapTarget::PrivateAnon);
        if p != Ok(BASE_ADDR) {
            return Err(self.fail_msg(&format!("Failed to allocate VMA at {BASE_ADDR:#x}")));
        }
        Ok(BASE_ADDR)
    }

    fn fill_memory(&mut self, p: u64, start: u64, end: u64) -> R {
        let (first, last) = (start / self.page_size, end / self.page_size);
        if last <= first {
            return Ok(());
        }
        let base = p + first * self.page_size;
        let value = (first as u32).wrapping_add(0xdead_0000);
        if let Err((k, e)) = self.b.fill_pages(base, last - first, value) {
            let i = first + k;
            let addr = p + i * self.page_size;
            return Err(self.abort(format!(
                "Segmentation fault writing page {i} at {addr:#x} ({e})"
            )));
        }
        Ok(())
    }

    pub(crate) fn validate_memory(&mut self, p: u64, start: u64, end: u64) -> R {
        for i in start / self.page_size..end / self.page_size {
            let addr = p + i * self.page_size;
            let want = (i as u32).wrapping_add(0xdead_0000);
            match self.b.read_u32(addr) {
                Ok(v) if v == want => {}
                Ok(v) => {
                    self.last_check = Some((
                        p,
                        end,
                        format!("page {i}: expected {want:#x}, found {v:#x}"),
                    ));
                    return Err(self.fail_msg(&format!("Page {i} is corrupted: {v:#x}")));
                }
                Err(e) => {
                    return Err(self.abort(format!(
                        "Segmentation fault reading page {i} at {addr:#x} ({e})"
                    )))
                }
            }
        }
        Ok(())
    }

    fn madvise_collapse_retry(&mut self, p: u64, size: u64) -> Result<(), Errno> {
        match self.b.madvise(p, size, Madv::Collapse) {
            Err(Errno::EAGAIN) => self.b.madvise(p, size, Madv::Collapse),
            r => r,
        }
    }

    pub(crate) fn alloc_hpage(&mut self, ops: MemType) -> Result<u64, Abort> {
        let p = self.setup_area(ops, 1)?;
        self.fault(ops, p, 0, self.hpage_pmd_size)?;
        self.printf("Allocate huge page...");
        if let Err(e) = self.madvise_collapse_retry(p, self.hpage_pmd_size) {
            return Err(self.perror("madvise(MADV_COLLAPSE)", e));
        }
        if !self.check_huge(ops, p, 1) {
            // The C's perror after a call that did not fail: errno 0.
            let msg = if self.env.catalogue.ktap_output() {
                "madvise(MADV_COLLAPSE): Success (0)"
            } else {
                "madvise(MADV_COLLAPSE): Success"
            };
            return Err(self.fail_msg(msg));
        }
        if let Err(e) = self.madvise(p, self.hpage_pmd_size, Madv::HugePage) {
            return Err(self.perror("madvise(MADV_HUGEPAGE)", e));
        }
        self.success("OK");
        Ok(p)
    }

    /// check_swap: the smaps `Swap:` of the VMA at `addr` equals `size`.
    fn check_swap(&mut self, addr: u64, size: u64) -> bool {
        let s = self.b.smaps(addr);
        let swap = s.as_ref().ok().and_then(|s| s.map(|s| s.swap));
        let seen = match &s {
            Err(e) => format!("check_swap: {e}"),
            Ok(_) => format!(
                "check_swap: Swap {} kB, expected {} kB",
                swap.map_or("?".into(), |v| v.to_string()),
                size >> 10
            ),
        };
        self.last_check = Some((addr, self.hpage_pmd_size, seen));
        swap == Some(size >> 10)
    }

    fn pageout(&mut self, p: u64, len: u64) -> R {
        if let Err(e) = self.b.madvise(p, len, Madv::PageOut) {
            return Err(self.perror("madvise(MADV_PAGEOUT)", e));
        }
        Ok(())
    }

    pub(crate) fn push_settings(&mut self, s: ThpSettings) -> R {
        let r = self.settings.push(self.b, s);
        r.map_err(|m| self.abort(m))?;
        self.settle_khugepaged()
    }

    pub(crate) fn pop_settings(&mut self) -> R {
        let r = self.settings.pop(self.b);
        r.map_err(|m| self.abort(m))?;
        self.settle_khugepaged()
    }

    /// Deterministic mode: thp_write_settings writes scan_sleep_millisecs, which wakes
    /// khugepaged for a pass, and may restart the thread; let that pass end before the test
    /// goes on, so it never overlaps a step.
    pub(crate) fn settle_khugepaged(&mut self) -> R {
        if self.env.khugepaged != KhugepagedMode::Deterministic {
            return Ok(());
        }
        let r = self.b.khugepaged_settle();
        r.map_err(|m| self.abort(m))
    }

    pub(crate) fn current_settings(&mut self) -> Result<ThpSettings, Abort> {
        match self.settings.current() {
            Ok(s) => Ok(s.clone()),
            Err(m) => Err(self.abort(m)),
        }
    }

    fn thp_read_num(&mut self, path: &str) -> Result<u64, Abort> {
        match self
            .b
            .thp_read(path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            Some(n) => Ok(n),
            None => Err(self.abort(format!("Failed to parse {path}"))),
        }
    }

    fn thp_write_num(&mut self, path: &str, n: u64) -> R {
        if self.b.thp_write(path, &n.to_string()).is_err() {
            return Err(self.abort(format!("write({n})")));
        }
        Ok(())
    }

    // ---- mem_ops ----

    pub fn setup_area(&mut self, ops: MemType, nr: u64) -> Result<u64, Abort> {
        let size = nr * self.hpage_pmd_size;
        self.area = Some((BASE_ADDR, size));
        match ops {
            MemType::Anon => self.alloc_mapping(nr),
            MemType::Shmem => {
                let fd = self.b.memfd_create("khugepaged-selftest-collapse-shmem");
                let fd = fd.map_err(|e| self.perror("memfd_create()", e))?;
                self.fd = Some(fd);
                if let Err(e) = self.b.ftruncate(fd, size) {
                    return Err(self.perror("ftruncate()", e));
                }
                match self.b.mmap(BASE_ADDR, size, MapTarget::SharedRw(fd)) {
                    Ok(p) if p == BASE_ADDR => Ok(p),
                    Ok(_) => Err(self.abort("mmap(): Success".into())),
                    Err(e) => Err(self.perror("mmap()", e)),
                }
            }
            MemType::File | MemType::FileRwRead | MemType::FileRwWrite => {
                let finfo = self
                    .env
                    .finfo
                    .clone()
                    .ok_or_else(|| self.abort("file tests need a [dir] argument".into()))?;
                let _ = self.b.unlink(&finfo.path);
                let tmpfs = if finfo.is_tmpfs() { " (tmpfs)" } else { "" };
                self.printf(&format!("Creating {} for collapse{}...", finfo.path, tmpfs));
                let fd = self
                    .b
                    .create_file(&finfo.path)
                    .map_err(|e| self.perror("open()", e))?;
                let p = self.alloc_mapping(nr)?;
                self.fill_memory(p, 0, size)?;
                let _ = self.b.write_from(fd, p, size);
                let _ = self.b.close(fd);
                let _ = self.b.munmap(p, size);
                self.success("OK");
                // 7.3 maps the file shared, read-only or read-write as its mem_ops say.
                let (how, writable) = match (self.env.catalogue, ops) {
                    (Catalogue::V6_18, _) => ("read only", false),
                    (Catalogue::V7_3, MemType::FileRwRead) => ("read-write (read)", true),
                    (Catalogue::V7_3, MemType::FileRwWrite) => ("read-write (write)", true),
                    (Catalogue::V7_3, _) => ("read-only", false),
                };
                self.printf(&format!("Opening {} {how} for collapse...", finfo.path));
                let fd = if writable {
                    self.b.open_read_write(&finfo.path)
                } else {
                    self.b.open_read_only(&finfo.path)
                };
                let fd = fd.map_err(|e| self.perror("open()", e))?;
                self.fd = Some(fd);
                let target = match (self.env.catalogue, writable) {
                    (Catalogue::V6_18, _) => MapTarget::PrivateRead(fd),
                    (Catalogue::V7_3, false) => MapTarget::SharedRead(fd),
                    (Catalogue::V7_3, true) => MapTarget::SharedRw(fd),
                };
                match self.b.mmap(BASE_ADDR, size, target) {
                    Ok(p) if p == BASE_ADDR => {}
                    Ok(_) => return Err(self.abort("mmap(): Success".into())),
                    Err(e) => return Err(self.perror("mmap()", e)),
                }
                let _ = self.b.drop_caches();
                self.success("OK");
                Ok(BASE_ADDR)
            }
        }
    }

    pub fn cleanup_area(&mut self, ops: MemType, p: u64, size: u64) {
        let _ = self.b.munmap(p, size);
        match ops {
            MemType::Anon => {}
            MemType::Shmem => {
                if let Some(fd) = self.fd.take() {
                    let _ = self.b.close(fd);
                }
            }
            MemType::File | MemType::FileRwRead | MemType::FileRwWrite => {
                if let Some(fd) = self.fd.take() {
                    let _ = self.b.close(fd);
                }
                if let Some(f) = self.env.finfo.clone() {
                    let _ = self.b.unlink(&f.path);
                }
            }
        }
    }

    pub fn fault(&mut self, ops: MemType, p: u64, start: u64, end: u64) -> R {
        let populate = |t: &mut Self, advice: Madv, name: &str| match t.b.madvise(
            p + start,
            end - start,
            advice,
        ) {
            Ok(()) => Ok(()),
            Err(e) => Err(t.perror(&format!("madvise({name})"), e)),
        };
        match ops {
            MemType::Anon | MemType::Shmem => self.fill_memory(p, start, end),
            MemType::File => populate(self, Madv::PopulateRead, "MADV_POPULATE_READ"),
            MemType::FileRwRead => {
                populate(self, Madv::PopulateRead, "MADV_POPULATE_READ")?;
                // Clean folios: khugepaged refuses dirty ones of a regular file.
                let _ = self.b.msync(p + start, end - start);
                Ok(())
            }
            MemType::FileRwWrite => populate(self, Madv::PopulateWrite, "MADV_POPULATE_WRITE"),
        }
    }

    /// check_huge: the smaps field of the memory type equals `nr` PMD sizes.
    pub fn check_huge(&mut self, ops: MemType, addr: u64, nr: u64) -> bool {
        let len = nr.max(1) * self.hpage_pmd_size;
        self.check_huge_sized(ops, addr, len, nr, model::HPAGE_PMD_ORDER)
    }

    /// 7.3's check_huge(addr, len, nr_hpages, hpage_size): at the PMD size the smaps field;
    /// below it `check_large_folios`, counting the folios of `order` in `[addr, addr + len)`.
    pub fn check_huge_sized(
        &mut self,
        ops: MemType,
        addr: u64,
        len: u64,
        nr: u64,
        order: u8,
    ) -> bool {
        let finfo = self.env.finfo.as_ref();
        let (ok, seen) = check_huge_order_on(self.b, ops, finfo, addr, len, nr, order);
        if self.area.is_none_or(|(a, l)| a != addr || l < len) {
            self.area = Some((addr, len));
        }
        self.last_check = Some((addr, len, seen));
        ok
    }

    fn is_tmpfs(&self, ops: MemType) -> bool {
        ops.is_file() && self.env.finfo.as_ref().is_some_and(|f| f.is_tmpfs())
    }

    // ---- collapse contexts ----

    pub(crate) fn collapse(
        &mut self,
        c: Context,
        msg: &str,
        p: u64,
        nr: u64,
        ops: MemType,
        expect: bool,
    ) -> R {
        match c {
            Context::Khugepaged => self.khugepaged_collapse(msg, p, nr, ops, expect),
            Context::MthpKhugepaged => self.mthp_khugepaged_collapse(msg, p, nr, ops, expect),
            Context::Madvise => {
                if !self.check_huge(ops, p, 0) {
                    return Err(self.fail_msg("Unexpected huge page"));
                }
                self.__madvise_collapse(msg, p, nr, ops, expect)
            }
        }
    }

    #[allow(non_snake_case)]
    fn __madvise_collapse(&mut self, msg: &str, p: u64, nr: u64, ops: MemType, expect: bool) -> R {
        let mut settings = self.current_settings()?;
        self.printf(&format!("{msg}..."));
        // Keep khugepaged out of the way, and show that MADV_COLLAPSE ignores `enabled`.
        settings.thp_enabled = "never".into();
        settings.shmem_enabled = "never".into();
        self.push_settings(settings)?;
        let _ = self.madvise(p, nr * self.hpage_pmd_size, Madv::HugePage);
        let ret = self.madvise_collapse_retry(p, nr * self.hpage_pmd_size);
        if ret.is_err() == expect {
            self.last_check = Some((
                p,
                nr * self.hpage_pmd_size,
                format!(
                    "MADV_COLLAPSE returned {}, expected {}",
                    describe(ret),
                    if expect { "0" } else { "an error" }
                ),
            ));
            self.fail("Fail: Bad return value");
        } else if !self.check_huge(ops, p, if expect { nr } else { 0 }) {
            self.fail("Fail: check_huge()");
        } else {
            self.success("OK");
        }
        self.pop_settings()
    }

    /// wait_for_scan over `nr` PMD sizes for PMD THPs; Ok(true) on timeout.
    fn wait_for_scan(&mut self, msg: &str, p: u64, nr: u64, ops: MemType) -> Result<bool, Abort> {
        let len = nr * self.hpage_pmd_size;
        self.wait_for_scan_sized(msg, p, len, nr, model::HPAGE_PMD_ORDER, ops)
    }

    /// 7.3's wait_for_scan(msg, p, len, nr_hpages, order, ops): waits for `nr` folios of
    /// `order` in `[p, p + len)`.
    fn wait_for_scan_sized(
        &mut self,
        msg: &str,
        p: u64,
        len: u64,
        nr: u64,
        order: u8,
        ops: MemType,
    ) -> Result<bool, Abort> {
        if !self.check_huge_sized(ops, p, len, 0, order) {
            return Err(self.fail_msg("Unexpected huge page"));
        }
        let _ = self.madvise(p, len, Madv::HugePage);
        let full_scans = self.thp_read_num("khugepaged/full_scans")? + 2;
        self.printf(&format!("{msg}..."));
        let finfo = self.env.finfo.clone();
        let pending = &mut self.pending;
        let mut done =
            |b: &mut dyn Backend| check_huge_order_on(b, ops, finfo.as_ref(), p, len, nr, order).0;
        let mut tick = || pending.push('.');
        let timed_out = match self.env.khugepaged {
            KhugepagedMode::Selftest => self.b.wait_for_scan(full_scans, &mut done, &mut tick),
            KhugepagedMode::Deterministic => {
                let r = self
                    .b
                    .wait_for_scan_passes(full_scans, &mut done, &mut tick);
                r.map_err(|m| self.abort(m))?
            }
        };
        // The step that reports this wait observes the state the wait ended in.
        self.ending_wait = true;
        Ok(timed_out)
    }

    fn khugepaged_collapse(
        &mut self,
        msg: &str,
        p: u64,
        nr: u64,
        ops: MemType,
        mut expect: bool,
    ) -> R {
        // 7.3: khugepaged does not write back a regular file's dirty folios, so it cannot
        // collapse the read-write (write) file outside tmpfs.
        if ops == MemType::FileRwWrite && !self.is_tmpfs(ops) {
            expect = false;
        }
        if self.wait_for_scan(msg, p, nr, ops)? {
            let scans = self.b.thp_read("khugepaged/full_scans").unwrap_or_default();
            self.last_check = Some((
                p,
                nr * self.hpage_pmd_size,
                format!("no collapse and full_scans stuck at {}", scans.trim()),
            ));
            if expect {
                self.fail("Timeout");
            } else {
                self.success("OK");
            }
            return Ok(());
        }
        // File and shmem THPs are only retracted by khugepaged: refault to map the PMD.
        if ops != MemType::Anon {
            self.fault(ops, p, 0, nr * self.hpage_pmd_size)?;
        }
        if self.check_huge(ops, p, if expect { nr } else { 0 }) {
            self.success("OK");
        } else {
            self.fail("Fail");
        }
        Ok(())
    }

    /// mthp_khugepaged_collapse (7.3): for anon, PMD THPs off and the `-c` size on madvise,
    /// then wait for `nr` folios of that size in the PMD range.
    fn mthp_khugepaged_collapse(
        &mut self,
        msg: &str,
        p: u64,
        nr: u64,
        ops: MemType,
        expect: bool,
    ) -> R {
        let order = self.env.collapse_order;
        let hpage_size = self.page_size << order;
        let len = self.hpage_pmd_size;
        let mut settings = self.current_settings()?;
        if ops == MemType::Anon {
            settings.thp_enabled = "never".into();
            // thp_write_settings writes only the sizes that have a hugepages-<N>kB directory
            // (none before 6.8): elsewhere the setting stays unwritten, as in C.
            if let Some(size) = settings.hugepages[order as usize].as_mut() {
                *size = "madvise".into();
            }
        }
        self.push_settings(settings)?;
        if self.wait_for_scan_sized(msg, p, len, nr, order, ops)? {
            if expect {
                self.fail("Timeout");
            } else {
                self.success("OK");
            }
            return self.pop_settings();
        }
        if ops != MemType::Anon {
            self.fault(ops, p, 0, nr * hpage_size)?;
        }
        if self.check_huge_sized(ops, p, len, if expect { nr } else { 0 }, order) {
            self.success("OK");
        } else {
            self.fail("Fail");
        }
        self.pop_settings()
    }

    /// fork(): runs `body` in a child with a copy of this process's state; returns the
    /// child's exit status. The child's steps join this process's output.
    pub(crate) fn fork_child(&mut self, body: &dyn Fn(&mut Ctx) -> R) -> Result<i32, Abort> {
        let env = self.env.clone();
        let settings = self.settings.clone();
        let fd = self.fd;
        let (tracing, area, era) = (self.tracing, self.area, self.era.clone());
        // MADV_HUGEPAGE is a VMA flag: the child's copy of the area is advised too.
        let hugepage_advised = self.hugepage_advised;
        // The parent's unfinished line is completed by the child's first verdict.
        let pending = std::mem::take(&mut self.pending);
        let r = self.b.fork(&mut |cb: &mut dyn Backend| {
            let mut c = Ctx::new(cb, env.clone());
            c.tracing = tracing;
            c.area = area;
            c.era = era.clone();
            c.hugepage_advised = hugepage_advised;
            c.settings = settings.clone();
            c.fd = fd;
            c.pending = pending.clone();
            c.exit_status = 0;
            let status = match body(&mut c) {
                Ok(()) => c.exit_status,
                Err(_) => 1,
            };
            ChildResult {
                status,
                steps: c.steps,
            }
        });
        match r {
            Ok(res) => {
                for step in res.steps {
                    self.push_step(step);
                }
                Ok(res.status)
            }
            Err(e) => Err(self.perror("fork()", e)),
        }
    }
}

fn describe(r: Result<(), Errno>) -> String {
    match r {
        Ok(()) => "0".into(),
        Err(e) => format!("-1 ({})", e.name()),
    }
}

/// check_huge at a size below the PMD's (7.3's `check_large_folios` in vm_util.c): walks
/// the pages of `[addr, addr + len)` as `gather_folio_orders` does with pagemap and
/// kpageflags (a head page, then doubling while the page at the next power-of-two offset is
/// a tail) and counts the folios found of `order`; the page just past the range is looked at
/// as the C code does.
pub fn check_huge_order_on(
    b: &mut dyn Backend,
    ops: MemType,
    finfo: Option<&FileInfo>,
    addr: u64,
    len: u64,
    nr: u64,
    order: u8,
) -> (bool, String) {
    if order == model::HPAGE_PMD_ORDER {
        return check_huge_on(b, ops, finfo, addr, nr);
    }
    let n = (len / b.page_size()) as usize;
    let map = match b.page_map(addr, n + 1) {
        Ok(m) => m,
        Err(e) => return (false, format!("check_large_folios: {e}")),
    };
    let mut orders = [0u64; 12];
    let present = |o: &crate::backend::PageObs| o.state == crate::backend::PageState::Present;
    let head = |o: &crate::backend::PageObs| present(o) && o.order > 0 && o.index_in_folio == 0;
    let tail = |o: &crate::backend::PageObs| present(o) && o.order > 0 && o.index_in_folio != 0;
    let mut i = 0usize;
    while i < n {
        let o = &map[i];
        if !present(o) {
            i += 1;
            continue;
        }
        if o.order == 0 {
            orders[0] += 1;
            i += 1;
            continue;
        }
        if !head(o) {
            i += 1;
            continue;
        }
        let mut cur = 1usize;
        let mut next = i + (1 << cur);
        if next >= n {
            break;
        }
        loop {
            let ends = map.get(next).is_none_or(|o| !tail(o));
            if ends {
                if cur < orders.len() {
                    orders[cur] += 1;
                }
                i = next;
                break;
            }
            cur += 1;
            next = i + (1 << cur);
        }
    }
    let have = orders[order as usize];
    (
        have == nr,
        format!("check_large_folios: {have} folio(s) of order {order} in {n} pages, expected {nr}"),
    )
}

/// check_huge_anon / check_huge_file / check_huge_shmem: the VMA starting at `addr` shows
/// `nr` PMD-sized mappings in the field of its memory type. Returns the verdict and what was
/// seen.
pub fn check_huge_on(
    b: &mut dyn Backend,
    ops: MemType,
    finfo: Option<&FileInfo>,
    addr: u64,
    nr: u64,
) -> (bool, String) {
    let want = nr * (b.hpage_pmd_size() >> 10);
    let s = match b.smaps(addr) {
        Ok(Some(s)) => s,
        Ok(None) => return (false, format!("check_huge: no VMA starts at {addr:#x}")),
        Err(e) => return (false, format!("check_huge: {e}")),
    };
    let (field, have) = match ops {
        MemType::Anon => ("AnonHugePages", s.anon_huge_pages),
        MemType::Shmem => ("ShmemPmdMapped", s.shmem_pmd_mapped),
        MemType::File | MemType::FileRwRead | MemType::FileRwWrite => {
            match finfo.map(|f| &f.kind) {
                Some(DirKind::Tmpfs { .. }) => ("ShmemPmdMapped", s.shmem_pmd_mapped),
                _ => ("FilePmdMapped", s.file_pmd_mapped),
            }
        }
    };
    (
        have == want,
        format!(
            "check_huge: {field} {have} kB, expected {want} kB (Rss {} kB)",
            s.rss
        ),
    )
}

// ---- the tests, in khugepaged.c's order ----

/// alloc_at_fault: run by main() before every test.
pub fn alloc_at_fault(t: &mut Ctx) -> R {
    let mut settings = t.current_settings()?;
    settings.thp_enabled = "always".into();
    t.push_settings(settings)?;
    let p = t.alloc_mapping(1)?;
    if let Err(e) = t.b.write_u32(p, 1) {
        return Err(t.abort(format!("Segmentation fault ({e})")));
    }
    t.printf("Allocate huge page on fault...");
    if t.check_huge(MemType::Anon, p, 1) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.pop_settings()?;
    let _ = t.madvise(p, t.page_size, Madv::DontNeed);
    t.printf("Split huge PMD on MADV_DONTNEED...");
    if t.check_huge(MemType::Anon, p, 0) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    let _ = t.b.munmap(p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_full(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let (mut nr_pmds, mut nr) = (4, 4);
    let mut size = nr * t.hpage_pmd_size;
    if c == Context::MthpKhugepaged {
        // One PMD range, expecting it full of `-c` sized folios.
        nr_pmds = 1;
        nr = 1 << (model::HPAGE_PMD_ORDER - t.env.collapse_order);
        size = t.hpage_pmd_size;
    }
    let p = t.setup_area(ops, nr_pmds)?;
    t.fault(ops, p, 0, size)?;
    t.collapse(
        c,
        "Collapse multiple fully populated PTE table",
        p,
        nr,
        ops,
        true,
    )?;
    t.validate_memory(p, 0, size)?;
    t.cleanup_area(ops, p, size);
    Ok(())
}

pub fn collapse_empty(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let nr = match c {
        Context::MthpKhugepaged => 1 << (model::HPAGE_PMD_ORDER - t.env.collapse_order),
        _ => 1,
    };
    let p = t.setup_area(ops, 1)?;
    t.collapse(c, "Do not collapse empty PTE table", p, nr, ops, false)?;
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

/// collapse_single_mthp (7.3): one `-c` sized block populated, one folio of that size wanted.
pub fn collapse_single_mthp(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let hpage_size = t.page_size << t.env.collapse_order;
    let p = t.setup_area(ops, 1)?;
    t.fault(ops, p, 0, hpage_size)?;
    t.collapse(
        c,
        "Collapse PTE table with half PTE entries present",
        p,
        1,
        ops,
        true,
    )?;
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_single_pte_entry(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let p = t.setup_area(ops, 1)?;
    t.fault(ops, p, 0, t.page_size)?;
    t.collapse(
        c,
        "Collapse PTE table with single PTE entry present",
        p,
        1,
        ops,
        true,
    )?;
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_max_ptes_none(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let max_ptes_none = t.hpage_pmd_nr / 2;
    let fault_nr_pages = if ops == MemType::Anon {
        1u64 << t.env.anon_order
    } else {
        1
    };
    let mut settings = t.current_settings()?;
    settings.max_ptes_none = max_ptes_none;
    t.push_settings(settings)?;
    let mut p = t.setup_area(ops, 1)?;
    if t.is_tmpfs(ops) {
        t.printf("tmpfs...");
        t.skip("Skip");
    } else {
        let first = (t.hpage_pmd_nr - max_ptes_none - fault_nr_pages) * t.page_size;
        t.fault(ops, p, 0, first)?;
        t.collapse(
            c,
            "Maybe collapse with max_ptes_none exceeded",
            p,
            1,
            ops,
            !c.enforce_pte_scan_limits(),
        )?;
        t.validate_memory(p, 0, first)?;
        if c.enforce_pte_scan_limits() {
            if t.env.catalogue == Catalogue::V7_3 {
                // 7.3 starts the second half on a fresh area (a new file for file ops).
                t.cleanup_area(ops, p, t.hpage_pmd_size);
                p = t.setup_area(ops, 1)?;
            }
            let second = (t.hpage_pmd_nr - max_ptes_none) * t.page_size;
            t.fault(ops, p, 0, second)?;
            t.collapse(c, "Collapse with max_ptes_none PTEs empty", p, 1, ops, true)?;
            t.validate_memory(p, 0, second)?;
        }
    }
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    t.pop_settings()
}

pub fn collapse_swapin_single_pte(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let p = t.setup_area(ops, 1)?;
    t.fault(ops, p, 0, t.hpage_pmd_size)?;
    t.printf("Swapout one page...");
    t.pageout(p, t.page_size)?;
    if t.check_swap(p, t.page_size) {
        t.success("OK");
        t.collapse(
            c,
            "Collapse with swapping in single PTE entry",
            p,
            1,
            ops,
            true,
        )?;
        t.validate_memory(p, 0, t.hpage_pmd_size)?;
    } else {
        t.fail("Fail");
    }
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_max_ptes_swap(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let max_ptes_swap = t.thp_read_num("khugepaged/max_ptes_swap")?;
    let p = t.setup_area(ops, 1)?;
    t.fault(ops, p, 0, t.hpage_pmd_size)?;
    'out: {
        t.printf(&format!(
            "Swapout {} of {} pages...",
            max_ptes_swap + 1,
            t.hpage_pmd_nr
        ));
        t.pageout(p, (max_ptes_swap + 1) * t.page_size)?;
        if !t.check_swap(p, (max_ptes_swap + 1) * t.page_size) {
            t.fail("Fail");
            break 'out;
        }
        t.success("OK");
        t.collapse(
            c,
            "Maybe collapse with max_ptes_swap exceeded",
            p,
            1,
            ops,
            !c.enforce_pte_scan_limits(),
        )?;
        t.validate_memory(p, 0, t.hpage_pmd_size)?;
        if c.enforce_pte_scan_limits() {
            t.fault(ops, p, 0, t.hpage_pmd_size)?;
            t.printf(&format!(
                "Swapout {} of {} pages...",
                max_ptes_swap, t.hpage_pmd_nr
            ));
            t.pageout(p, max_ptes_swap * t.page_size)?;
            if !t.check_swap(p, max_ptes_swap * t.page_size) {
                t.fail("Fail");
                break 'out;
            }
            t.success("OK");
            t.collapse(
                c,
                "Collapse with max_ptes_swap pages swapped out",
                p,
                1,
                ops,
                true,
            )?;
            t.validate_memory(p, 0, t.hpage_pmd_size)?;
        }
    }
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_single_pte_entry_compound(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let p = t.alloc_hpage(ops)?;
    if t.is_tmpfs(ops) {
        // MADV_DONTNEED won't evict tmpfs pages.
        t.printf("tmpfs...");
        t.skip("Skip");
    } else {
        let _ = t.madvise(p, t.hpage_pmd_size, Madv::NoHugePage);
        t.printf("Split huge page leaving single PTE mapping compound page...");
        let _ = t.madvise(
            p + t.page_size,
            t.hpage_pmd_size - t.page_size,
            Madv::DontNeed,
        );
        if t.check_huge(ops, p, 0) {
            t.success("OK");
        } else {
            t.fail("Fail");
        }
        t.collapse(
            c,
            "Collapse PTE table with single PTE mapping compound page",
            p,
            1,
            ops,
            true,
        )?;
        t.validate_memory(p, 0, t.page_size)?;
    }
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_full_of_compound(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let p = t.alloc_hpage(ops)?;
    t.printf("Split huge page leaving single PTE page table full of compound pages...");
    let _ = t.madvise(p, t.page_size, Madv::NoHugePage);
    let _ = t.madvise(p, t.hpage_pmd_size, Madv::NoHugePage);
    if t.check_huge(ops, p, 0) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.collapse(
        c,
        "Collapse PTE table full of compound pages",
        p,
        1,
        ops,
        true,
    )?;
    t.validate_memory(p, 0, t.hpage_pmd_size)?;
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_compound_extreme(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let (ps, hs, nr) = (t.page_size, t.hpage_pmd_size, t.hpage_pmd_nr);
    let mut p = t.setup_area(ops, 1)?;
    let v7 = t.env.catalogue == Catalogue::V7_3;
    if v7 {
        // 7.3 prints the line once, ending it; its verdict comes after the loop on a line of
        // its own.
        t.printf("Construct PTE page table full of different PTE-mapped compound pages\n");
    }
    for i in 0..nr {
        if !v7 {
            t.printf(&format!(
                "\rConstruct PTE page table full of different PTE-mapped compound pages {:3}/{}...",
                i + 1,
                nr
            ));
        }
        let _ = t.madvise(BASE_ADDR, hs, Madv::HugePage);
        t.fault(ops, BASE_ADDR, 0, hs)?;
        if !t.check_huge(ops, BASE_ADDR, 1) {
            return Err(t.abort("Failed to allocate huge page".into()));
        }
        let _ = t.madvise(BASE_ADDR, hs, Madv::NoHugePage);
        if let Err(e) = t.b.mremap_fixed(
            BASE_ADDR - i * ps,
            i * ps + hs,
            (i + 1) * ps,
            BASE_ADDR + 2 * hs,
        ) {
            return Err(t.perror("mremap+unmap", e));
        }
        p = match t.b.mremap_fixed(
            BASE_ADDR + 2 * hs,
            (i + 1) * ps,
            (i + 1) * ps + hs,
            BASE_ADDR - (i + 1) * ps,
        ) {
            Ok(a) => a,
            Err(e) => return Err(t.perror("mremap+alloc", e)),
        };
    }
    t.cleanup_area(ops, BASE_ADDR, hs);
    t.fault(ops, p, 0, hs)?;
    if !t.check_huge(ops, p, 1) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.collapse(
        c,
        "Collapse PTE table full of different compound pages",
        p,
        1,
        ops,
        true,
    )?;
    t.validate_memory(p, 0, hs)?;
    t.cleanup_area(ops, p, hs);
    Ok(())
}

pub fn collapse_fork(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let p = t.setup_area(ops, 1)?;
    t.printf("Allocate small page...");
    t.fault(ops, p, 0, t.page_size)?;
    if t.check_huge(ops, p, 0) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.printf("Share small page over fork()...");
    let status = t.fork_child(&|t: &mut Ctx| {
        // Do not touch settings on child exit.
        if t.check_huge(ops, p, 0) {
            t.success("OK");
        } else {
            t.fail("Fail");
        }
        t.fault(ops, p, t.page_size, 2 * t.page_size)?;
        t.collapse(
            c,
            "Collapse PTE table with single page shared with parent process",
            p,
            1,
            ops,
            true,
        )?;
        t.validate_memory(p, 0, t.page_size)?;
        t.cleanup_area(ops, p, t.hpage_pmd_size);
        Ok(())
    })?;
    t.exit_status += status;
    t.printf("Check if parent still has small page...");
    if t.check_huge(ops, p, 0) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.validate_memory(p, 0, t.page_size)?;
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_fork_compound(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let p = t.alloc_hpage(ops)?;
    t.printf("Share huge page over fork()...");
    let status = t.fork_child(&|t: &mut Ctx| {
        if t.check_huge(ops, p, 1) {
            t.success("OK");
        } else {
            t.fail("Fail");
        }
        t.printf("Split huge page PMD in child process...");
        let _ = t.madvise(p, t.page_size, Madv::NoHugePage);
        let _ = t.madvise(p, t.hpage_pmd_size, Madv::NoHugePage);
        if t.check_huge(ops, p, 0) {
            t.success("OK");
        } else {
            t.fail("Fail");
        }
        t.fault(ops, p, 0, t.page_size)?;
        t.thp_write_num("khugepaged/max_ptes_shared", t.hpage_pmd_nr - 1)?;
        t.collapse(
            c,
            "Collapse PTE table full of compound pages in child",
            p,
            1,
            ops,
            true,
        )?;
        let restore = t.current_settings()?.max_ptes_shared;
        t.thp_write_num("khugepaged/max_ptes_shared", restore)?;
        t.validate_memory(p, 0, t.hpage_pmd_size)?;
        t.cleanup_area(ops, p, t.hpage_pmd_size);
        Ok(())
    })?;
    t.exit_status += status;
    t.printf("Check if parent still has huge page...");
    if t.check_huge(ops, p, 1) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.validate_memory(p, 0, t.hpage_pmd_size)?;
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn collapse_max_ptes_shared(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let max_ptes_shared = t.thp_read_num("khugepaged/max_ptes_shared")?;
    let p = t.alloc_hpage(ops)?;
    t.printf("Share huge page over fork()...");
    let status = t.fork_child(&|t: &mut Ctx| {
        let nr = t.hpage_pmd_nr;
        if t.check_huge(ops, p, 1) {
            t.success("OK");
        } else {
            t.fail("Fail");
        }
        t.printf(&format!(
            "Trigger CoW on page {} of {}...",
            nr - max_ptes_shared - 1,
            nr
        ));
        t.fault(ops, p, 0, (nr - max_ptes_shared - 1) * t.page_size)?;
        if t.check_huge(ops, p, 0) {
            t.success("OK");
        } else {
            t.fail("Fail");
        }
        t.collapse(
            c,
            "Maybe collapse with max_ptes_shared exceeded",
            p,
            1,
            ops,
            !c.enforce_pte_scan_limits(),
        )?;
        if c.enforce_pte_scan_limits() {
            t.printf(&format!(
                "Trigger CoW on page {} of {}...",
                nr - max_ptes_shared,
                nr
            ));
            t.fault(ops, p, 0, (nr - max_ptes_shared) * t.page_size)?;
            if t.check_huge(ops, p, 0) {
                t.success("OK");
            } else {
                t.fail("Fail");
            }
            t.collapse(
                c,
                "Collapse with max_ptes_shared PTEs shared",
                p,
                1,
                ops,
                true,
            )?;
        }
        t.validate_memory(p, 0, t.hpage_pmd_size)?;
        t.cleanup_area(ops, p, t.hpage_pmd_size);
        Ok(())
    })?;
    t.exit_status += status;
    t.printf("Check if parent still has huge page...");
    if t.check_huge(ops, p, 1) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.validate_memory(p, 0, t.hpage_pmd_size)?;
    t.cleanup_area(ops, p, t.hpage_pmd_size);
    Ok(())
}

pub fn madvise_collapse_existing_thps(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let size = t.hpage_pmd_size;
    let p = t.setup_area(ops, 1)?;
    t.fault(ops, p, 0, size)?;
    t.collapse(c, "Collapse fully populated PTE table...", p, 1, ops, true)?;
    t.validate_memory(p, 0, size)?;
    // c->collapse() will find a hugepage and complain: call __madvise_collapse() directly.
    t.__madvise_collapse("Re-collapse PMD-mapped hugepage", p, 1, ops, true)?;
    t.validate_memory(p, 0, size)?;
    t.cleanup_area(ops, p, size);
    Ok(())
}

pub fn madvise_retracted_page_tables(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let size = t.hpage_pmd_size;
    let p = t.setup_area(ops, 1)?;
    t.fault(ops, p, 0, size)?;
    // Let khugepaged collapse and leave the PMD cleared.
    if t.wait_for_scan("Collapse and leave PMD cleared", p, 1, ops)? {
        t.fail("Timeout");
        return Ok(());
    }
    t.success("OK");
    t.collapse(c, "Install huge PMD from page cache", p, 1, ops, true)?;
    t.validate_memory(p, 0, size)?;
    t.cleanup_area(ops, p, size);
    Ok(())
}

/// Tests whose file variant prints "tmpfs... Skip" when `[dir]` is on tmpfs (the
/// `is_tmpfs(ops)` branches above).
pub const SKIPPED_ON_TMPFS: [&str; 2] = [
    "collapse_max_ptes_none",
    "collapse_single_pte_entry_compound",
];

/// A test function of the table.
pub type TestFn = fn(&mut Ctx, Context, MemType) -> R;

/// One line of main()'s TEST() list.
#[derive(Clone, Copy)]
pub struct TestEntry {
    pub name: &'static str,
    pub func: TestFn,
    pub context: Context,
    pub mem: MemType,
}

impl fmt::Debug for TestEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}:{})",
            self.name,
            self.context.name(),
            self.mem.name()
        )
    }
}

macro_rules! tests {
    ($( $func:ident : [$( $ctx:ident $mem:ident ),+ $(,)?] ),+ $(,)?) => {
        vec![$($(TestEntry {
            name: stringify!($func),
            func: $func,
            context: Context::$ctx,
            mem: MemType::$mem,
        }),+),+]
    };
}

/// main()'s TEST() list of a catalogue, in order.
pub fn test_table_of(catalogue: Catalogue) -> Vec<TestEntry> {
    match catalogue {
        Catalogue::V6_18 => test_table(),
        Catalogue::V7_3 => tests![
            collapse_full: [Khugepaged Anon, Khugepaged File, Khugepaged FileRwRead, Khugepaged FileRwWrite, Khugepaged Shmem, MthpKhugepaged Anon, Madvise Anon, Madvise File, Madvise FileRwRead, Madvise FileRwWrite, Madvise Shmem],
            collapse_empty: [Khugepaged Anon, MthpKhugepaged Anon, Madvise Anon],
            collapse_single_mthp: [MthpKhugepaged Anon],
            collapse_single_pte_entry: [Khugepaged Anon, Khugepaged File, Khugepaged FileRwRead, Khugepaged FileRwWrite, Khugepaged Shmem, Madvise Anon, Madvise File, Madvise FileRwRead, Madvise FileRwWrite, Madvise Shmem],
            collapse_max_ptes_none: [Khugepaged Anon, Khugepaged File, Khugepaged FileRwRead, Khugepaged FileRwWrite, Madvise Anon, Madvise File, Madvise FileRwRead, Madvise FileRwWrite],
            collapse_single_pte_entry_compound: [Khugepaged Anon, Khugepaged File, Khugepaged FileRwRead, Madvise Anon, Madvise File, Madvise FileRwRead],
            collapse_full_of_compound: [Khugepaged Anon, Khugepaged File, Khugepaged FileRwRead, Khugepaged Shmem, Madvise Anon, Madvise File, Madvise FileRwRead, Madvise Shmem],
            collapse_compound_extreme: [Khugepaged Anon, Madvise Anon],
            collapse_swapin_single_pte: [Khugepaged Anon, Madvise Anon],
            collapse_max_ptes_swap: [Khugepaged Anon, Madvise Anon],
            collapse_fork: [Khugepaged Anon, Madvise Anon],
            collapse_fork_compound: [Khugepaged Anon, Madvise Anon],
            collapse_max_ptes_shared: [Khugepaged Anon, Madvise Anon],
            madvise_collapse_existing_thps: [Madvise Anon, Madvise File, Madvise FileRwRead, Madvise Shmem],
            madvise_retracted_page_tables: [Madvise File, Madvise FileRwRead, Madvise Shmem],
        ],
    }
}

/// main()'s TEST() list of the 6.18 selftest, in order.
pub fn test_table() -> Vec<TestEntry> {
    tests![
        collapse_full: [Khugepaged Anon, Khugepaged File, Khugepaged Shmem, Madvise Anon, Madvise File, Madvise Shmem],
        collapse_empty: [Khugepaged Anon, Madvise Anon],
        collapse_single_pte_entry: [Khugepaged Anon, Khugepaged File, Khugepaged Shmem, Madvise Anon, Madvise File, Madvise Shmem],
        collapse_max_ptes_none: [Khugepaged Anon, Khugepaged File, Madvise Anon, Madvise File],
        collapse_single_pte_entry_compound: [Khugepaged Anon, Khugepaged File, Madvise Anon, Madvise File],
        collapse_full_of_compound: [Khugepaged Anon, Khugepaged File, Khugepaged Shmem, Madvise Anon, Madvise File, Madvise Shmem],
        collapse_compound_extreme: [Khugepaged Anon, Madvise Anon],
        collapse_swapin_single_pte: [Khugepaged Anon, Madvise Anon],
        collapse_max_ptes_swap: [Khugepaged Anon, Madvise Anon],
        collapse_fork: [Khugepaged Anon, Madvise Anon],
        collapse_fork_compound: [Khugepaged Anon, Madvise Anon],
        collapse_max_ptes_shared: [Khugepaged Anon, Madvise Anon],
        madvise_collapse_existing_thps: [Madvise Anon, Madvise File, Madvise Shmem],
        madvise_retracted_page_tables: [Madvise File, Madvise Shmem],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_selftests_45_entries() {
        let t = test_table();
        assert_eq!(t.len(), 45);
        assert_eq!(t.iter().filter(|e| e.mem == MemType::Anon).count(), 25);
        assert_eq!(format!("{:?}", t[0]), "collapse_full (khugepaged:anon)");
    }

    #[test]
    fn the_7_3_table_has_its_66_entries() {
        // all:all leaves out the 3 mthp_khugepaged ones: 63 tests and alloc_at_fault, the
        // "1..64" of 7.3's output.
        let t = test_table_of(Catalogue::V7_3);
        assert_eq!(t.len(), 66);
        assert_eq!(
            t.iter()
                .filter(|e| Context::ALL.contains(&e.context))
                .count(),
            63
        );
        let mthp: Vec<&str> = t
            .iter()
            .filter(|e| e.context == Context::MthpKhugepaged)
            .map(|e| e.name)
            .collect();
        assert_eq!(
            mthp,
            ["collapse_full", "collapse_empty", "collapse_single_mthp"]
        );
        let ids: std::collections::BTreeSet<_> = t
            .iter()
            .map(|e| (e.name, e.context.name(), e.mem.key()))
            .collect();
        assert_eq!(ids.len(), t.len(), "case ids must be unique");
    }
}
