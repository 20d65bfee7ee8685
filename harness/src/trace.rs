//! Traces: a plain-text, line-oriented, diff-friendly record of one run of a case. A header
//! (kernel release, profile, case, environment, settings, whether collapse decisions were
//! recorded), then per step the system calls made since the previous step with their results,
//! after each khugepaged wait and MADV_COLLAPSE the collapse decisions it caused, the step
//! line and its verdict, the smaps counters and a run-length page map of the test area, and
//! finally the outcome.
//!
//! ```text
//! khugepaged-trace 1
//! kernel: 6.18.44-fc-v669
//! profile: 6.18
//! case: madvise:anon/collapse_full
//! env: anon_order=0 file=- khugepaged=deterministic
//! settings: enabled=madvise defrag=always ...
//! read_only_thp_for_fs: no
//! decisions: yes
//! --
//!   mmap(0x40000000, 0x800000, anon) = 0x40000000
//!   fill(0x40000000, 2048 pages) = 0
//!   madvise(0x40000000, 0x800000, MADV_HUGEPAGE) = 0
//!   madvise(0x40000000, 0x800000, MADV_COLLAPSE) = 0
//!   decision pmd 0: SCAN_SUCCEED scan_pmd none_or_zero=0 referenced=0 unmapped=0
//!   decision pmd 1: SCAN_SUCCEED scan_pmd none_or_zero=0 referenced=0 unmapped=0
//!   # MADV_COLLAPSE scan_pmd 0x40000000 (pid 1): SCAN_SUCCEED none=0 swap=0 shared=0 ...
//! step ok: Collapse multiple fully populated PTE table... OK
//!   smaps(0x40000000): rss=8192 anon_huge=8192 shmem_pmd=0 file_pmd=0 swap=0
//!   map(0x40000000+2048): 0-511 pmd f0[0..] o9 mc1 ex | 512-1023 pmd f1[0..] o9 mc1 ex | ...
//! outcome: pass
//! ```
//!
//! Decision lines are the kernel's tracepoint record of each collapse decision on the test's
//! own memory (`decision::catalogue_line`): `decision pmd N: RESULT scan_pmd none_or_zero=..
//! referenced=.. unmapped=..` (`writable=..` too where the release's mm_khugepaged_scan_pmd
//! prints it, up to 6.17) or `scan_file present=.. swap=..`, the PMD range N counted from the
//! selftest's BASE_ADDR, `[parent]` for the parent's memory seen from a forked child. A host
//! reads them from the huge_memory tracepoints (`host::decisions`), the model writes them from
//! its collapse reports. Per call they are sorted by range and an identical decision is written
//! once: how often khugepaged passes a range within one wait depends on the other MMs of the
//! machine; for the same reason a wait leaves out ranges found already PMD-mapped
//! (`SCAN_PMD_MAPPED`), which it may pass or not before it ends. Decisions made outside a
//! wait or MADV_COLLAPSE are not recorded.
//!
//! The `decisions:` header line says `yes`, or `no: <why>` (no tracefs instance could be made;
//! khugepaged runs on its own under the selftest's settings, so which of its decisions fall
//! inside a wait is timing). Two traces are compared decision by decision only when both say
//! `yes`; a trace without the line (recorded before decisions were) or with `no` is compared
//! without its decision lines, and the comparison says so. A backend that stops being able to
//! observe decisions mid-run writes `decision unobservable: <why>` where the decisions would
//! be, and the header then says `no` with that reason; in a forked child (whose parent's
//! header may still say `yes`) the line is compared and differs from any decision.

use std::fmt::Write as _;

use crate::backend::{Backend, ChildResult, Errno, Fd, Madv, MapTarget, PageObs, SmapsFields};
use crate::steps::Outcome;
use crate::steps::{Step, Verdict};

/// Wraps a backend and records the calls that change state (not loads, /proc reads or sysfs
/// writes, which the header and the observations cover).
pub struct TracingBackend<'a> {
    inner: &'a mut dyn Backend,
    calls: Vec<String>,
    /// Whether decisions are recorded (Ok) or why not.
    decisions: Result<(), String>,
}

impl<'a> TracingBackend<'a> {
    /// A tracing wrapper that records no collapse decisions.
    pub fn new(inner: &'a mut dyn Backend) -> TracingBackend<'a> {
        Self::with_decisions(inner, Err("not asked for".into()))
    }

    /// A tracing wrapper that records the collapse decisions of every khugepaged wait and
    /// MADV_COLLAPSE when `wanted` is Ok and the backend can observe them; otherwise the
    /// header says why not (`wanted`'s reason, or the backend's).
    pub fn with_decisions(
        inner: &'a mut dyn Backend,
        wanted: Result<(), String>,
    ) -> TracingBackend<'a> {
        let decisions = wanted.and_then(|()| inner.decisions_observable());
        TracingBackend {
            inner,
            calls: Vec::new(),
            decisions,
        }
    }

    fn decisions_begin(&mut self) {
        if self.decisions.is_ok() {
            self.inner.decisions_begin();
        }
    }

    /// The decision lines of the call just made, after its line. A backend that stops
    /// observing them says so in a line of its own (compared like a decision), and the header
    /// says decisions were not recorded. In a khugepaged wait, ranges found already
    /// PMD-mapped are left out: whether khugepaged passes such a range before the wait ends
    /// depends on where its cursor stood among the machine's MMs (a forked child's wait that
    /// ends with its collapse passes the parent's THP or not).
    fn decisions_end(&mut self, wait: bool) {
        if self.decisions.is_err() {
            return;
        }
        match self.inner.decisions_end() {
            Ok(lines) => self.calls.extend(
                crate::decision::call_lines(lines)
                    .into_iter()
                    .filter(|l| !(wait && l.contains(": SCAN_PMD_MAPPED "))),
            ),
            Err(why) => {
                self.calls
                    .push(format!("decision unobservable: {}", why.replace('\n', " ")));
                self.decisions = Err(why);
            }
        }
    }

    /// The backend's explanations so far, as `#` lines in call order.
    fn collect_notes(&mut self) {
        for n in self.inner.take_notes() {
            self.calls.push(format!("# {n}"));
        }
    }

    fn log<T>(&mut self, call: String, r: &Result<T, Errno>, show: impl Fn(&T) -> String) {
        // Notes produced by this call (a collapse) come right after it.
        let result = match r {
            Ok(v) => show(v),
            Err(e) => format!("-1 {}", e.name()),
        };
        self.calls.push(format!("{call} = {result}"));
        self.collect_notes();
    }
}

fn target(t: MapTarget) -> &'static str {
    match t {
        MapTarget::PrivateAnon => "anon",
        MapTarget::SharedRw(_) => "shared fd",
        MapTarget::PrivateRead(_) => "private-read fd",
        MapTarget::SharedRead(_) => "shared-read fd",
    }
}

impl Backend for TracingBackend<'_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn kernel_release(&self) -> String {
        self.inner.kernel_release()
    }
    fn page_size(&self) -> u64 {
        self.inner.page_size()
    }
    fn hpage_pmd_size(&self) -> u64 {
        self.inner.hpage_pmd_size()
    }
    fn read_only_thp_for_fs(&mut self) -> bool {
        self.inner.read_only_thp_for_fs()
    }
    fn mmap(&mut self, addr: u64, len: u64, t: MapTarget) -> Result<u64, Errno> {
        let r = self.inner.mmap(addr, len, t);
        self.log(
            format!("mmap({addr:#x}, {len:#x}, {})", target(t)),
            &r,
            |v| format!("{v:#x}"),
        );
        r
    }
    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        let r = self.inner.munmap(addr, len);
        self.log(format!("munmap({addr:#x}, {len:#x})"), &r, |_| "0".into());
        r
    }
    fn madvise(&mut self, addr: u64, len: u64, a: Madv) -> Result<(), Errno> {
        let collapse = a == Madv::Collapse;
        if collapse {
            self.decisions_begin();
        }
        let r = self.inner.madvise(addr, len, a);
        let call = format!("madvise({addr:#x}, {len:#x}, {})", a.name());
        if collapse {
            // The call, its decisions, then the notes about them.
            let result = match &r {
                Ok(()) => "0".to_string(),
                Err(e) => format!("-1 {}", e.name()),
            };
            self.calls.push(format!("{call} = {result}"));
            self.decisions_end(false);
            self.collect_notes();
        } else {
            self.log(call, &r, |_| "0".into());
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
        let r = self.inner.mremap_fixed(old, old_len, new_len, new);
        self.log(
            format!("mremap({old:#x}, {old_len:#x}, {new_len:#x}, MAYMOVE|FIXED, {new:#x})"),
            &r,
            |v| format!("{v:#x}"),
        );
        r
    }
    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), Errno> {
        let r = self.inner.write_u32(addr, value);
        self.log(format!("store({addr:#x})"), &r, |_| "0".into());
        r
    }
    fn fill_pages(&mut self, addr: u64, pages: u64, first: u32) -> Result<(), (u64, Errno)> {
        let r = self.inner.fill_pages(addr, pages, first);
        let result = match &r {
            Ok(()) => "0".to_string(),
            Err((i, e)) => format!("fault at page {i}: {}", e.name()),
        };
        self.calls
            .push(format!("fill({addr:#x}, {pages} pages) = {result}"));
        r
    }
    fn read_u32(&mut self, addr: u64) -> Result<u32, Errno> {
        self.inner.read_u32(addr)
    }
    fn memfd_create(&mut self, name: &str) -> Result<Fd, Errno> {
        let r = self.inner.memfd_create(name);
        self.log("memfd_create()".into(), &r, |_| "fd".into());
        r
    }
    fn ftruncate(&mut self, fd: Fd, len: u64) -> Result<(), Errno> {
        let r = self.inner.ftruncate(fd, len);
        self.log(format!("ftruncate(fd, {len:#x})"), &r, |_| "0".into());
        r
    }
    fn create_file(&mut self, path: &str) -> Result<Fd, Errno> {
        let r = self.inner.create_file(path);
        self.log(format!("open({path}, O_CREAT|O_EXCL|O_RDWR)"), &r, |_| {
            "fd".into()
        });
        r
    }
    fn open_read_only(&mut self, path: &str) -> Result<Fd, Errno> {
        let r = self.inner.open_read_only(path);
        self.log(format!("open({path}, O_RDONLY)"), &r, |_| "fd".into());
        r
    }
    fn open_read_write(&mut self, path: &str) -> Result<Fd, Errno> {
        let r = self.inner.open_read_write(path);
        self.log(format!("open({path}, O_RDWR)"), &r, |_| "fd".into());
        r
    }
    fn msync(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        let r = self.inner.msync(addr, len);
        self.log(format!("msync({addr:#x}, {len:#x}, MS_SYNC)"), &r, |_| {
            "0".into()
        });
        r
    }
    fn write_from(&mut self, fd: Fd, addr: u64, len: u64) -> Result<(), Errno> {
        let r = self.inner.write_from(fd, addr, len);
        self.log(format!("write(fd, {addr:#x}, {len:#x})"), &r, |_| {
            format!("{len:#x}")
        });
        r
    }
    fn close(&mut self, fd: Fd) -> Result<(), Errno> {
        let r = self.inner.close(fd);
        self.log("close(fd)".into(), &r, |_| "0".into());
        r
    }
    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        let r = self.inner.unlink(path);
        self.log(format!("unlink({path})"), &r, |_| "0".into());
        r
    }
    fn drop_caches(&mut self) -> Result<(), Errno> {
        let r = self.inner.drop_caches();
        self.log("drop_caches(3)".into(), &r, |_| "0".into());
        r
    }
    fn smaps(&mut self, addr: u64) -> Result<Option<SmapsFields>, String> {
        self.inner.smaps(addr)
    }
    fn page_map(&mut self, addr: u64, nr: usize) -> Result<Vec<PageObs>, String> {
        self.inner.page_map(addr, nr)
    }
    fn thp_read(&mut self, path: &str) -> Result<String, Errno> {
        self.inner.thp_read(path)
    }
    fn thp_write(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        self.inner.thp_write(path, value)
    }
    fn read_ahead_kb(&mut self, path: &str) -> Result<u64, Errno> {
        self.inner.read_ahead_kb(path)
    }
    fn set_read_ahead_kb(&mut self, path: &str, kb: u64) -> Result<(), Errno> {
        self.inner.set_read_ahead_kb(path, kb)
    }
    fn fork(
        &mut self,
        child: &mut dyn FnMut(&mut dyn Backend) -> ChildResult,
    ) -> Result<ChildResult, Errno> {
        self.calls.push("fork()".into());
        let wanted = self.decisions.clone();
        let r = self.inner.fork(&mut |cb: &mut dyn Backend| {
            let mut t = TracingBackend::with_decisions(cb, wanted.clone());
            child(&mut t)
        });
        let result = match &r {
            Ok(c) => format!("child exit status {}", c.status),
            Err(e) => format!("-1 {}", e.name()),
        };
        self.calls.push(format!("wait() = {result}"));
        r
    }
    fn sleep_us(&mut self, usec: u64) {
        self.inner.sleep_us(usec)
    }
    fn wait_for_scan(
        &mut self,
        full_scans_target: u64,
        done: &mut dyn FnMut(&mut dyn Backend) -> bool,
        tick: &mut dyn FnMut(),
    ) -> bool {
        self.decisions_begin();
        let r = self.inner.wait_for_scan(full_scans_target, done, tick);
        self.calls.push(format!(
            "wait for khugepaged = {}",
            if r { "timeout" } else { "done" }
        ));
        self.decisions_end(true);
        r
    }
    fn khugepaged_pass(&mut self) -> Result<(), String> {
        self.inner.khugepaged_pass()
    }
    fn khugepaged_settle(&mut self) -> Result<(), String> {
        self.inner.khugepaged_settle()
    }
    fn wait_for_scan_passes(
        &mut self,
        full_scans_target: u64,
        done: &mut dyn FnMut(&mut dyn Backend) -> bool,
        tick: &mut dyn FnMut(),
    ) -> Result<bool, String> {
        self.decisions_begin();
        let r = self
            .inner
            .wait_for_scan_passes(full_scans_target, done, tick);
        // The same line as the selftest's wait: the two modes differ in the header only.
        if let Ok(timed_out) = r {
            self.calls.push(format!(
                "wait for khugepaged = {}",
                if timed_out { "timeout" } else { "done" }
            ));
            self.decisions_end(true);
        }
        r
    }
    fn take_trace_calls(&mut self) -> Vec<String> {
        self.inner.step_boundary();
        self.collect_notes();
        std::mem::take(&mut self.calls)
    }
    fn decisions_recorded(&self) -> Option<Result<(), String>> {
        Some(self.decisions.clone())
    }
    fn as_dyn(&mut self) -> &mut dyn Backend {
        self
    }
}

/// The header of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub kernel: String,
    pub profile: String,
    pub case: String,
    pub env: String,
    pub settings: String,
    /// Whether the kernel has CONFIG_READ_ONLY_THP_FOR_FS (it decides whether khugepaged runs
    /// and what file mappings may collapse); None in a trace that does not say.
    pub read_only_thp_for_fs: Option<bool>,
    /// Why the run was repeated, when it was (the host retries a case khugepaged raced).
    pub retried: Option<String>,
    /// Unmodelled events of the recorded run, each tied to its step
    /// (`crosscheck::Explanation`'s header form); a replay shows the fixture as ignored with
    /// them and compares everything they do not cover.
    pub unmodelled: Vec<String>,
    /// Whether the run's collapse decisions were recorded (`decisions: yes`) or why not
    /// (`decisions: no: why`); None in a trace from before decisions were recorded. Only a
    /// trace that recorded them is compared decision by decision.
    pub decisions: Option<Result<(), String>>,
}

/// Magic first line.
pub const MAGIC: &str = "khugepaged-trace 1";

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Fail => "fail",
        Verdict::Skip => "skip",
        Verdict::Info => "info",
    }
}

/// Renders a whole trace.
pub fn render(h: &Header, steps: &[Step], outcome: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{MAGIC}");
    let _ = writeln!(out, "kernel: {}", h.kernel);
    let _ = writeln!(out, "profile: {}", h.profile);
    let _ = writeln!(out, "case: {}", h.case);
    let _ = writeln!(out, "env: {}", h.env);
    let _ = writeln!(out, "settings: {}", h.settings);
    if let Some(ro) = h.read_only_thp_for_fs {
        let _ = writeln!(
            out,
            "read_only_thp_for_fs: {}",
            if ro { "yes" } else { "no" }
        );
    }
    if let Some(r) = &h.retried {
        let _ = writeln!(out, "retried: {}", r.replace('\n', " "));
    }
    for u in &h.unmodelled {
        let _ = writeln!(out, "unmodelled: {u}");
    }
    match &h.decisions {
        None => {}
        Some(Ok(())) => {
            let _ = writeln!(out, "decisions: yes");
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "decisions: no: {}", why.replace('\n', " "));
        }
    }
    let _ = writeln!(out, "--");
    for s in steps {
        for c in &s.calls {
            let _ = writeln!(out, "  {c}");
        }
        let _ = writeln!(
            out,
            "step {}: {}",
            verdict_word(s.verdict),
            s.to_string().trim_end()
        );
        for o in &s.obs {
            let _ = writeln!(out, "  {o}");
        }
    }
    let _ = match outcome {
        Outcome::Pass => writeln!(out, "outcome: pass"),
        Outcome::Fail(w) => writeln!(out, "outcome: fail: {}", w.replace('\n', " ")),
        Outcome::Skip(w) => writeln!(out, "outcome: skip: {}", w.replace('\n', " ")),
    };
    out
}

/// Splits a trace into its header and body lines.
pub fn parse(text: &str) -> Result<(Header, Vec<String>), String> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("not a trace: the first line must be {MAGIC:?}"));
    }
    let mut h = Header {
        kernel: String::new(),
        profile: String::new(),
        case: String::new(),
        env: String::new(),
        settings: String::new(),
        read_only_thp_for_fs: None,
        retried: None,
        unmodelled: Vec::new(),
        decisions: None,
    };
    for (n, line) in lines.by_ref().enumerate() {
        if line == "--" {
            break;
        }
        let (k, v) = line
            .split_once(": ")
            .ok_or_else(|| format!("header line {}: expected 'key: value', got {line:?}", n + 2))?;
        match k {
            "kernel" => h.kernel = v.into(),
            "profile" => h.profile = v.into(),
            "case" => h.case = v.into(),
            "env" => h.env = v.into(),
            "settings" => h.settings = v.into(),
            "read_only_thp_for_fs" => {
                h.read_only_thp_for_fs = Some(match v {
                    "yes" => true,
                    "no" => false,
                    _ => {
                        return Err(format!(
                            "header line {}: read_only_thp_for_fs must be yes or no, got {v:?}",
                            n + 2
                        ))
                    }
                })
            }
            "retried" => h.retried = Some(v.into()),
            "unmodelled" => h.unmodelled.push(v.into()),
            "decisions" => {
                h.decisions = Some(match (v, v.strip_prefix("no: ")) {
                    ("yes", _) => Ok(()),
                    (_, Some(why)) => Err(why.to_string()),
                    _ => {
                        return Err(format!(
                            "header line {}: decisions must be `yes` or `no: <why>`, got {v:?}",
                            n + 2
                        ))
                    }
                })
            }
            other => return Err(format!("header line {}: unknown key {other:?}", n + 2)),
        }
    }
    if h.case.is_empty() {
        return Err("the header names no case".into());
    }
    Ok((h, lines.map(str::to_string).collect()))
}

/// Makes a body comparable across runs: the private directory becomes `$DIR`, the progress
/// dots a khugepaged wait adds after "..." (their number depends on timing) go, and so do
/// volatile observations ("~"), taken while khugepaged could act on the area at any moment,
/// and a backend's own explanations ("#", e.g. the model's collapse reports).
pub fn normalize(body: &[String], dir: Option<&str>) -> Vec<String> {
    body.iter()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with('~') && !t.starts_with('#')
        })
        .map(|l| {
            let mut l = match dir {
                Some(d) if !d.is_empty() => l.replace(d, "$DIR"),
                _ => l.clone(),
            };
            if l.starts_with("step ") {
                while l.contains("....") {
                    l = l.replace("....", "...");
                }
            }
            l
        })
        .collect()
}

/// The first difference between two normalized bodies: (line index, expected, actual), and
/// the map lines of the step around it on each side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub line: usize,
    pub left: String,
    pub right: String,
    pub step: String,
    pub left_map: Option<String>,
    pub right_map: Option<String>,
}

/// Compares two normalized bodies.
pub fn first_difference(left: &[String], right: &[String]) -> Option<Difference> {
    let n = left.len().max(right.len());
    let i = (0..n).find(|&i| left.get(i) != right.get(i))?;
    let step = left[..i.min(left.len())]
        .iter()
        .rev()
        .find(|l| l.starts_with("step "))
        .cloned()
        .unwrap_or_else(|| "(before the first step)".into());
    let map_near = |v: &[String]| -> Option<String> {
        v.iter()
            .skip(i)
            .take_while(|l| !l.starts_with("step ") || l.starts_with("  "))
            .find(|l| l.trim_start().starts_with("map("))
            .cloned()
            .or_else(|| {
                v[..i.min(v.len())]
                    .iter()
                    .rev()
                    .find(|l| l.trim_start().starts_with("map("))
                    .cloned()
            })
    };
    Some(Difference {
        line: i,
        left: left
            .get(i)
            .cloned()
            .unwrap_or_else(|| "(end of trace)".into()),
        right: right
            .get(i)
            .cloned()
            .unwrap_or_else(|| "(end of trace)".into()),
        step,
        left_map: map_near(left),
        right_map: map_near(right),
    })
}

/// A line of a report: a long line (a page map of thousands of pages) is cut, saying how much
/// was left out.
fn shorten(line: &str) -> String {
    const MAX: usize = 160;
    let line = line.trim();
    if line.len() <= MAX {
        return line.to_string();
    }
    let mut cut = MAX;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{} ... ({} more characters)",
        &line[..cut],
        line.len() - cut
    )
}

/// A readable report of a difference: the first differing line on each side (cut when long),
/// then the page maps of that step aligned range by range, only where they differ and a few
/// ranges around, one range a line.
pub fn describe(d: &Difference, left_name: &str, right_name: &str) -> String {
    let w = left_name.len().max(right_name.len());
    let map_line = |l: &str| l.trim_start().starts_with("map(");
    let show = |l: &str| {
        if map_line(l) && d.left_map != d.right_map {
            let head = l.trim().split_once(": ").map_or(l.trim(), |(h, _)| h);
            format!("{head}: ... (differs; aligned below)")
        } else {
            shorten(l)
        }
    };
    let mut s = format!(
        "first difference at body line {} (after {}):\n  {left_name:>w$}: {}\n  {right_name:>w$}: {}\n",
        d.line + 1,
        shorten(&d.step),
        show(&d.left),
        show(&d.right)
    );
    if d.left_map != d.right_map {
        let (l, r) = (
            d.left_map.as_deref().unwrap_or("-"),
            d.right_map.as_deref().unwrap_or("-"),
        );
        match crate::page_map::aligned_diff(l, r, left_name, right_name, 2) {
            Some(table) => {
                s.push_str(
                    "page maps there (ranges that differ marked !, with two around each):\n",
                );
                s.push_str(&table);
            }
            None => s.push_str(&format!(
                "page maps there:\n  {left_name:>w$}: {}\n  {right_name:>w$}: {}\n",
                shorten(l),
                shorten(r)
            )),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_parse_round_trip_and_difference() {
        let h = Header {
            kernel: "6.18.44".into(),
            profile: "6.18".into(),
            case: "madvise:anon/collapse_full".into(),
            env: "anon_order=0 file=-".into(),
            settings: "enabled=madvise".into(),
            read_only_thp_for_fs: Some(false),
            retried: Some("first attempt failed".into()),
            unmodelled: vec!["THP allocation failed".into()],
            decisions: Some(Err("no tracefs".into())),
        };
        let steps = vec![Step {
            text: "Collapse multiple fully populated PTE table....".into(),
            verdict: Verdict::Ok,
            word: "OK".into(),
            calls: vec!["madvise(0x40000000, 0x800000, MADV_COLLAPSE) = 0".into()],
            obs: vec!["map(0x40000000+4): 0-3 pmd f0[0..] o9 mc1 ex".into()],
            ..Step::default()
        }];
        let text = render(&h, &steps, &Outcome::Pass);
        let (h2, body) = parse(&text).unwrap();
        assert_eq!(h2, h);
        let norm = normalize(&body, None);
        assert_eq!(
            norm[1],
            "step ok: Collapse multiple fully populated PTE table... OK"
        );
        let mut other = norm.clone();
        other[2] = "  map(0x40000000+4): 0-3 pte f0[0..] o9 mc1 ex".into();
        let d = first_difference(&norm, &other).unwrap();
        assert_eq!(d.line, 2);
        let text = describe(&d, "host", "model");
        assert!(text.contains("page maps there"), "{text}");
        assert!(
            text.contains("! 0-3    pmd f0[0..] o9 mc1 ex  pte f0[0..] o9 mc1 ex"),
            "{text}"
        );
        assert!(
            text.contains("map(0x40000000+4): ... (differs; aligned below)"),
            "{text}"
        );
        assert!(first_difference(&norm, &norm).is_none());
        assert!(parse("garbage").is_err());
        for d in [None, Some(Ok(()))] {
            let h = Header {
                decisions: d,
                ..h.clone()
            };
            assert_eq!(parse(&render(&h, &steps, &Outcome::Pass)).unwrap().0, h);
        }
        let bad = render(&h, &steps, &Outcome::Pass)
            .replace("decisions: no: no tracefs", "decisions: maybe");
        assert!(parse(&bad).unwrap_err().contains("decisions must be"));
    }
}
