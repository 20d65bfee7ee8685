//! The kernel's collapse decisions on a run's own memory, read from the huge_memory
//! tracepoints of a private tracefs instance (`tracefs`) and placed on PMD ranges: shared by
//! scenario files (`host::scenario`) and the selftest catalogue's traced cases
//! (`host::backend`).
//!
//! An event names the mm by pointer: a process's mm is learnt once (`Tracer::register`, the
//! process mapping and unmapping a page with `touch`). Its `scan_pfn` is placed on a PMD range
//! through the page frames the run's mappings held just before the pass or MADV_COLLAPSE
//! ([`FrameMap`]); since 6.6 the events print the folio's head frame, which the process need
//! not map. A scan that met no page (`scan_pfn` -1: `page_pmd_mapped`, `pmd_null`) is placed
//! when exactly one range of the process looked so; a file decision without a mapped page by
//! the file's name. Events on other processes' memory (khugepaged scans every MM of the
//! machine) give no decision; the caller sees each event with whether it was its own.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;

use model::scan_result::ScanResult;

use super::tracefs::Event;
use crate::decision::{Decision, ProcId};

/// Maps a page, writes it and unmaps it: mmap(2) and munmap(2) take this process's mmap_lock,
/// whose tracepoint names its mm (see `tracefs`). Nothing THP-related is touched or counted.
pub fn touch() -> Result<(), String> {
    let len = model::PAGE_SIZE as usize;
    // SAFETY: a fresh private anonymous page, written once and unmapped; nothing else uses it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        std::ptr::write_volatile(p as *mut u8, 1);
        libc::munmap(p, len);
    }
    Ok(())
}

/// Marks this process's anonymous memory outside the run's `ranges` (its heap, stack and the
/// allocator's own mappings) MADV_NOHUGEPAGE, so khugepaged leaves it alone. With an mTHP size
/// at `always` (`-s 2` sets hugepages-16kB so) 7.2+ khugepaged collapses any anonymous VMA,
/// and its decisions there look like the test's: a scan without a page table or a success
/// names no page frame. Called before each khugepaged wait and MADV_COLLAPSE, as the
/// allocator maps new memory; the test's own mappings and file mappings are left as they are.
pub fn keep_khugepaged_off_own_memory(ranges: &[(u64, u64)]) -> Result<(), String> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(span), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or("");
        let anonymous = path.is_empty() || path == "[heap]" || path == "[stack]";
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            return Err(format!("/proc/self/maps: unreadable range in {line:?}"));
        };
        let ours = ranges.iter().any(|&(s, len)| a < s + len && s < b);
        // Private anonymous only (`p`); a shared anonymous mapping is shmem, no test's.
        if !anonymous || ours || !perms.ends_with('p') {
            continue;
        }
        // SAFETY: advice on a mapping of this process; MADV_NOHUGEPAGE only sets a VMA flag.
        let r = unsafe {
            libc::madvise(
                a as *mut libc::c_void,
                (b - a) as usize,
                libc::MADV_NOHUGEPAGE,
            )
        };
        if r != 0 {
            return Err(format!(
                "madvise({a:#x}, {:#x}, MADV_NOHUGEPAGE) on this process's own {}: {}",
                b - a,
                if path.is_empty() {
                    "anonymous memory"
                } else {
                    path
                },
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Which page frames each PMD range of the run's mappings held at one moment (just before a
/// khugepaged pass or MADV_COLLAPSE).
#[derive(Clone, Debug, Default)]
pub struct FrameMap {
    /// (page frame, process) -> PMD-aligned address (a shared page is in several processes).
    frames: BTreeMap<(u64, ProcId), u64>,
    /// Per process and whole PMD range: its present frames in page order.
    pmd_frames: BTreeMap<ProcId, BTreeMap<u64, Vec<u64>>>,
}

impl FrameMap {
    /// Reads `/proc/<pid>/pagemap` over each process's ranges `(address, length)`.
    pub fn snapshot<'a>(ranges: impl IntoIterator<Item = (ProcId, &'a [(u64, u64)])>) -> FrameMap {
        let mut m = FrameMap::default();
        for (p, ranges) in ranges {
            let Ok(f) = std::fs::File::open(format!("/proc/{p}/pagemap")) else {
                continue;
            };
            for &(addr, len) in ranges {
                let pmd = model::HPAGE_PMD_SIZE;
                let mut h = addr & !(pmd - 1);
                while h < addr + len {
                    let whole = h >= addr && h + pmd <= addr + len;
                    let mut present = Vec::new();
                    let mut buf = vec![0u8; 8 * model::HPAGE_PMD_NR];
                    if f.read_exact_at(&mut buf, (h / model::PAGE_SIZE) * 8)
                        .is_ok()
                    {
                        for w in buf.chunks_exact(8) {
                            let e = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                            if e & (1 << 63) != 0 {
                                let pfn = e & ((1 << 55) - 1);
                                if pfn != 0 {
                                    m.frames.insert((pfn, p), h);
                                    present.push(pfn);
                                }
                            }
                        }
                    }
                    if whole {
                        m.pmd_frames.entry(p).or_default().insert(h, present);
                    }
                    h += pmd;
                }
            }
        }
        m
    }

    /// Adds the frames of `later` (a snapshot after the call) that this one does not know: a
    /// file THP the call collapsed in the page cache and then mapped (khugepaged's
    /// collapse_pte_mapped_thp) is placed by its head frame only after the call.
    pub fn add_later(&mut self, later: FrameMap) {
        for (k, a) in later.frames {
            self.frames.entry(k).or_insert(a);
        }
    }

    /// How many (frame, process) pairs are known.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The PMD range of process `p` that held page frame `pfn`; for a folio's head frame the
    /// process does not map (the linux-mm case maps no page 0), the lowest frame of `p` above
    /// it within a PMD-sized folio's reach.
    pub fn place_frame(&self, pfn: u64, p: ProcId) -> Option<u64> {
        if let Some(&a) = self.frames.get(&(pfn, p)) {
            return Some(a);
        }
        let reach = model::HPAGE_PMD_NR as u64;
        self.frames
            .range((pfn, 0)..(pfn + reach, 0))
            .find(|((_, q), _)| *q == p)
            .map(|(_, &a)| a)
    }

    /// A decision without a page frame (scan_pfn -1): a range found PMD-mapped or without a
    /// page table met no page; a scan stopped by swap entries before its first page (6.18)
    /// neither; and since 7.2 (`collapse_scan_pmd` traces `failed_pfn`) a success, too few
    /// referenced pages and the none/swap limits print no frame either; 6.1 names the folio of
    /// the page before the one that failed, so none when the first present page failed (its
    /// sharing test, say). Such a decision is
    /// placed when exactly one whole PMD range of the process looked so: 512 present frames
    /// in a row from an aligned head; no present frame; some present frames, not PMD-mapped;
    /// not PMD-mapped. A range without a page table (SCAN_NO_PTE_TABLE, SCAN_PMD_NULL,
    /// SCAN_PMD_NONE) when every range held a present page is not on the run's memory:
    /// khugepaged scans every eligible VMA of the process, and with an mTHP size at `always`
    /// (`-s 2` sets hugepages-16kB so) 7.2+ finds the harness's own unpopulated memory
    /// eligible.
    pub fn place_pageless(&self, p: ProcId, result: ScanResult) -> Pageless {
        enum Look {
            PmdMapped,
            Empty,
            PtePages,
            NotPmdMapped,
        }
        let want = match result {
            ScanResult::PmdMapped => Look::PmdMapped,
            ScanResult::PmdNull | ScanResult::PmdNone | ScanResult::NoPteTable => Look::Empty,
            ScanResult::Succeed
            | ScanResult::LackReferencedPage
            | ScanResult::ExceedSwapPte
            | ScanResult::ExceedSharedPte
            | ScanResult::PageRo
            | ScanResult::PageNull
            | ScanResult::ScanAbort
            | ScanResult::PageCount
            | ScanResult::PageLru
            | ScanResult::PageLock
            | ScanResult::PageAnon
            | ScanResult::PageCompound => Look::PtePages,
            ScanResult::ExceedNonePte => Look::NotPmdMapped,
            _ => return Pageless::Unplaced,
        };
        let Some(ranges) = self.pmd_frames.get(&p).filter(|r| !r.is_empty()) else {
            return Pageless::Unplaced;
        };
        let mut found = None;
        for (&h, frames) in ranges {
            let pmd_mapped = frames.len() == model::HPAGE_PMD_NR
                && frames[0] % model::HPAGE_PMD_NR as u64 == 0
                && frames.windows(2).all(|w| w[1] == w[0] + 1);
            let looks = match want {
                Look::PmdMapped => pmd_mapped,
                Look::Empty => frames.is_empty(),
                Look::PtePages => !frames.is_empty() && !pmd_mapped,
                Look::NotPmdMapped => !pmd_mapped,
            };
            if looks {
                if found.is_some() {
                    return Pageless::Unplaced;
                }
                found = Some(h);
            }
        }
        match (found, want) {
            (Some(h), _) => Pageless::At(h),
            (None, Look::Empty) => Pageless::Elsewhere,
            (None, _) => Pageless::Unplaced,
        }
    }
}

/// Where [`FrameMap::place_pageless`] puts a decision without a page frame.
pub enum Pageless {
    At(u64),
    /// Possibly on the run's memory, but on no one range that can be told.
    Unplaced,
    /// Not on the run's memory.
    Elsewhere,
}

/// A file decision without a page: the process's one mapping of that file, when it covers
/// exactly one whole PMD range. `maps` are the file's mappings (process, address, length).
pub fn place_file(maps: &[(ProcId, u64, u64)], p: ProcId) -> Option<u64> {
    let mut pmds = maps
        .iter()
        .filter(|(q, _, _)| *q == p)
        .flat_map(|&(_, a, len)| {
            let pmd = model::HPAGE_PMD_SIZE;
            let first = (a + pmd - 1) & !(pmd - 1);
            (first..(a + len) & !(pmd - 1)).step_by(pmd as usize)
        });
    let h = pmds.next()?;
    pmds.next().is_none().then_some(h)
}

/// A file decision [`place_file`] cannot place, on a process mapping the file once over
/// several whole PMD ranges: those ranges (first address, end). 6.1 has no
/// mm_khugepaged_collapse_file and its scan_file names a page the process does not map (the
/// new THP's head after a collapse, none after a success), so its file decisions are known
/// only to be on one of them.
pub fn file_span(maps: &[(ProcId, u64, u64)], p: ProcId) -> Option<(u64, u64)> {
    let mut mine = maps.iter().filter(|(q, _, _)| *q == p);
    let &(_, a, len) = mine.next()?;
    if mine.next().is_some() {
        return None;
    }
    let pmd = model::HPAGE_PMD_SIZE;
    let (first, end) = ((a + pmd - 1) & !(pmd - 1), (a + len) & !(pmd - 1));
    (end > first).then_some((first, end))
}

/// After fork: `child` maps every file `parent` maps, where the parent maps it.
pub fn inherit_file_maps(
    files: &mut BTreeMap<String, Vec<(ProcId, u64, u64)>>,
    parent: ProcId,
    child: ProcId,
) {
    for maps in files.values_mut() {
        let theirs: Vec<_> = maps
            .iter()
            .filter(|(q, _, _)| *q == parent)
            .map(|&(_, a, l)| (child, a, l))
            .collect();
        maps.extend(theirs);
    }
}

/// Where the decisions of a batch of events are placed.
pub struct Placement<'a> {
    /// mm pointer -> process, for the run's own processes.
    pub mm_ids: &'a BTreeMap<u64, ProcId>,
    pub frames: &'a FrameMap,
    /// File name (memfds without their `memfd:` prefix) -> its mappings.
    pub files: &'a BTreeMap<String, Vec<(ProcId, u64, u64)>>,
    /// A MADV_COLLAPSE call of task `.0` from address `.1`: it scans the call's PMD ranges in
    /// order, one scan event each (`madvise_collapse`), so its n-th scan event that nothing
    /// else placed (a file scan whose folio no process maps, a scan that met no page) is on
    /// the n-th range.
    pub madv_collapse: Option<(ProcId, u64)>,
}

/// Page-cache THPs khugepaged or MADV_COLLAPSE made for a process: (head frame, process) ->
/// the PMD-aligned address, from `mm_khugepaged_collapse_file` (which prints the address; the
/// scan_file event after it and later ones print the folio's head, which the process need not
/// map yet).
pub type FileHeads = BTreeMap<(u64, ProcId), u64>;

/// The decisions of `events` on the run's own processes, in the tracepoint's terms
/// (`scan_pmd none_or_zero=.. referenced=.. unmapped=..`, `writable` where the release prints
/// it; `scan_file present=.. swap=..`), `mm_collapse_huge_page*` events as detail in the text.
/// `seen` is shown every event with whether its mm is the run's own. Err: an event with a
/// result the model does not know (the decisions up to it are lost with it: the caller
/// reports the whole batch unobservable).
pub fn decisions_from(
    events: Vec<Event>,
    at: &Placement,
    heads: &mut FileHeads,
    seen: &mut dyn FnMut(&Event, bool),
) -> Result<Vec<Decision>, String> {
    let mut out = Vec::new();
    // collapse_huge_page and isolate come before the scan_pmd that ends the decision.
    let mut detail: Vec<String> = Vec::new();
    // Scan events of the MADV_COLLAPSE call so far.
    let mut collapse_scans = 0u64;
    // The range of the last collapse_file per task: its scan_file follows.
    let mut collapsed_file: BTreeMap<i32, u64> = BTreeMap::new();
    // The frame each task's last mm_collapse_huge_page_isolate met: a page of the range being
    // collapsed, where the scan_pmd that ends the decision prints none (7.3's scan_pfn is the
    // folio that failed the scan, -1 for a success).
    let mut isolate_pfns: BTreeMap<i32, u64> = BTreeMap::new();
    for e in events {
        let mm_proc = e.mm().and_then(|m| at.mm_ids.get(&m).copied());
        seen(&e, mm_proc.is_some());
        match e.name.as_str() {
            "mm_collapse_huge_page" | "mm_collapse_huge_page_swapin" if mm_proc.is_some() => {
                let f: Vec<String> = e
                    .fields
                    .iter()
                    .filter(|(k, _)| *k != "mm")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                detail.push(format!(
                    "{} {}",
                    e.name.trim_start_matches("mm_"),
                    f.join(" ")
                ));
            }
            "mm_khugepaged_collapse_file" => {
                let Some(p) = mm_proc else { continue };
                let pmd = model::HPAGE_PMD_SIZE;
                if let Some(addr) = e.hex("addr").map(|a| a & !(pmd - 1)) {
                    collapsed_file.insert(e.pid, addr);
                    if let Some(head) = e.hex("hpage_pfn").filter(|&f| f != 0) {
                        heads.insert((head, p), addr);
                    }
                }
                detail.push(format!(
                    "collapse_file index={} nr={} result={}",
                    e.get("index").unwrap_or("?"),
                    e.get("nr").unwrap_or("?"),
                    e.get("result").unwrap_or("?")
                ));
            }
            "mm_collapse_huge_page_isolate" => {
                // No mm: it belongs to the scan_pmd that follows in the same task.
                match e.hex("scan_pfn").filter(|&v| v != u64::MAX) {
                    Some(f) => isolate_pfns.insert(e.pid, f),
                    None => isolate_pfns.remove(&e.pid),
                };
                detail.push(format!(
                    "isolate none_or_zero={} referenced={} status={}",
                    e.get("none_or_zero").unwrap_or("?"),
                    e.get("referenced").unwrap_or("?"),
                    e.get("status").unwrap_or("?")
                ));
            }
            "mm_khugepaged_scan_pmd" | "mm_khugepaged_scan_file" => {
                let taken = std::mem::take(&mut detail);
                let isolate_pfn = isolate_pfns.remove(&e.pid);
                let Some(p) = mm_proc else { continue };
                let file = e.name == "mm_khugepaged_scan_file";
                let status = e.get(if file { "result" } else { "status" }).unwrap_or("?");
                let result = ScanResult::parse(status).ok_or_else(|| {
                    format!(
                        "a huge_memory event with a result the model does not know: {} {:?}",
                        e.name, e.fields
                    )
                })?;
                let pfn = e
                    .hex("scan_pfn")
                    .filter(|&v| v != u64::MAX)
                    .or(isolate_pfn.filter(|_| !file));
                let in_call = at
                    .madv_collapse
                    .filter(|&(task, _)| task == e.pid as ProcId)
                    .map(|(_, start)| {
                        let pmd = model::HPAGE_PMD_SIZE;
                        let n = collapse_scans;
                        collapse_scans += 1;
                        ((start + pmd - 1) & !(pmd - 1)) + n * pmd
                    });
                // A file's folio need not be mapped by the process (it may still map the
                // small pages the folio replaced): then by the file's name.
                let after_collapse = collapsed_file.remove(&e.pid).filter(|_| file);
                // By the event's file name; a name no file of the run has is the process's one
                // file of the run, if it maps only one: 6.1 prints the dentry's inline name
                // (`d_iname`), which a name of 32 bytes or more does not use
                // (`memfd:khugepaged-selftest-collapse-shmem`), so it prints no name of ours.
                let file_maps = file
                    .then(|| {
                        let name = e.get("filename").unwrap_or("");
                        let name = name.strip_prefix("memfd:").unwrap_or(name);
                        at.files.get(name).or_else(|| {
                            let mut mine = at
                                .files
                                .values()
                                .filter(|m| m.iter().any(|(q, _, _)| *q == p));
                            let one = mine.next()?;
                            mine.next().is_none().then_some(one)
                        })
                    })
                    .flatten();
                let pageless = match (file, pfn) {
                    (false, None) => at.frames.place_pageless(p, result),
                    _ => Pageless::Unplaced,
                };
                let addr = pfn
                    .and_then(|f| at.frames.place_frame(f, p))
                    .or_else(|| pfn.and_then(|f| heads.get(&(f, p)).copied()))
                    .or(after_collapse)
                    .or_else(|| match (file_maps, &pageless) {
                        (Some(m), _) => place_file(m, p),
                        (None, Pageless::At(h)) => Some(*h),
                        _ => None,
                    })
                    .or(in_call);
                // Not on the run's memory (and not a MADV_COLLAPSE call's own range).
                if addr.is_none() && matches!(pageless, Pageless::Elsewhere) {
                    continue;
                }
                let span = addr
                    .is_none()
                    .then(|| file_maps.and_then(|m| file_span(m, p)))
                    .flatten();
                let record = if file {
                    format!(
                        "scan_file present={} swap={}",
                        e.get("present").unwrap_or("?"),
                        e.get("swap").unwrap_or("?")
                    )
                } else {
                    // `writable` is printed up to 6.17 only.
                    format!(
                        "scan_pmd none_or_zero={} referenced={} unmapped={}{}",
                        e.get("none_or_zero").unwrap_or("?"),
                        e.get("referenced").unwrap_or("?"),
                        e.get("unmapped").unwrap_or("?"),
                        e.get("writable")
                            .map_or(String::new(), |w| format!(" writable={w}"))
                    )
                };
                let who = if e.pid as ProcId == p {
                    "MADV_COLLAPSE"
                } else {
                    "khugepaged"
                };
                let mut text = format!(
                    "{who} {record} {}: {result}",
                    addr.map_or(
                        format!(
                            "(range unknown: scan_pfn {}, {} frames known)",
                            e.get("scan_pfn").unwrap_or("?"),
                            at.frames.len()
                        ),
                        |a| format!("{a:#x}")
                    )
                );
                if !taken.is_empty() {
                    text.push_str(&format!(" [{}]", taken.join("; ")));
                }
                out.push(Decision {
                    process: p,
                    addr,
                    span,
                    result,
                    record: Some(record),
                    text,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A traced catalogue case's view of the kernel's decisions (the case process and, after
/// fork, the child with its parent): what `Backend::decisions_begin` and `decisions_end`
/// read on the host.
pub struct CaseObserver {
    tracer: Result<super::tracefs::Tracer, String>,
    mm_ids: BTreeMap<u64, ProcId>,
    own: ProcId,
    parent: Option<ProcId>,
    frames: FrameMap,
    /// The ranges of the last `begin`.
    ranges: Vec<(u64, u64)>,
    heads: FileHeads,
    /// Descriptor -> the name tracepoints print for its file.
    fd_names: BTreeMap<i32, String>,
    files: BTreeMap<String, Vec<(ProcId, u64, u64)>>,
}

impl CaseObserver {
    /// Opens the instance `dir` (or keeps why there is none) and learns this process's mm.
    pub fn open(dir: Result<&std::path::Path, String>, release: &str) -> CaseObserver {
        let tracer = dir.and_then(|d| super::tracefs::Tracer::open(d, release));
        let mut o = CaseObserver {
            tracer,
            mm_ids: BTreeMap::new(),
            own: std::process::id() as ProcId,
            parent: None,
            frames: FrameMap::default(),
            ranges: Vec::new(),
            heads: FileHeads::new(),
            fd_names: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        o.register_self();
        // Before the test maps anything: the case process's memory so far (a forked child
        // inherits the flag).
        if o.tracer.is_ok() {
            if let Err(e) = keep_khugepaged_off_own_memory(&[]) {
                o.tracer = Err(e);
            }
        }
        o
    }

    fn register_self(&mut self) {
        let own = self.own;
        let Ok(t) = self.tracer.as_mut() else { return };
        match t.register(own as i32, &mut touch) {
            Ok(mm) => {
                self.mm_ids.insert(mm, own);
            }
            Err(e) => self.tracer = Err(format!("registering pid {own} with the tracer: {e}")),
        }
    }

    /// Ok, or why decisions cannot be observed.
    pub fn observable(&self) -> Result<(), String> {
        self.tracer.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// In a forked child: the caller becomes the parent (its mm stays known), the child's mm
    /// is learnt, and the child has the parent's file mappings.
    pub fn forked(&mut self) {
        let parent = self.own;
        self.parent = Some(parent);
        self.own = std::process::id() as ProcId;
        inherit_file_maps(&mut self.files, parent, self.own);
        self.register_self();
    }

    /// A descriptor opened on `path` (the name the tracepoints print is its last component;
    /// memfds print `memfd:NAME`, stripped when placing).
    pub fn opened(&mut self, fd: i32, path: &str) {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        self.fd_names.insert(fd, name);
    }

    pub fn closed(&mut self, fd: i32) {
        self.fd_names.remove(&fd);
    }

    /// A mapping of descriptor `fd` at `addr`.
    pub fn mapped(&mut self, fd: i32, addr: u64, len: u64) {
        if let Some(n) = self.fd_names.get(&fd) {
            self.files
                .entry(n.clone())
                .or_default()
                .push((self.own, addr, len));
        }
    }

    /// Before a khugepaged wait or MADV_COLLAPSE: forgets the events so far and records the
    /// page frames of `ranges` (this process's mappings; the parent's are the same ranges).
    pub fn begin(&mut self, ranges: &[(u64, u64)]) {
        let Ok(t) = self.tracer.as_mut() else { return };
        if let Err(e) = t.take() {
            self.tracer = Err(e);
            return;
        }
        if let Err(e) = keep_khugepaged_off_own_memory(ranges) {
            self.tracer = Err(e);
            return;
        }
        self.ranges = ranges.to_vec();
        self.frames = self.snapshot();
    }

    fn snapshot(&self) -> FrameMap {
        let procs = std::iter::once(self.own).chain(self.parent);
        FrameMap::snapshot(procs.map(|p| (p, self.ranges.as_slice())))
    }

    /// The decisions since `begin` on this process's memory and its parent's, as catalogue
    /// trace lines; `madv_collapse`: the call was MADV_COLLAPSE from that address.
    pub fn end(&mut self, madv_collapse: Option<u64>) -> Result<Vec<(i64, String)>, String> {
        let events = match self.tracer.as_mut() {
            Ok(t) => t.take(),
            Err(e) => return Err(e.clone()),
        };
        let events = events.inspect_err(|e| self.tracer = Err(e.clone()))?;
        let later = self.snapshot();
        self.frames.add_later(later);
        let at = Placement {
            mm_ids: &self.mm_ids,
            frames: &self.frames,
            files: &self.files,
            madv_collapse: madv_collapse.map(|a| (self.own, a)),
        };
        let d = decisions_from(events, &at, &mut self.heads, &mut |_, _| {})
            .inspect_err(|e| self.tracer = Err(e.clone()))?;
        Ok(d.iter()
            .filter_map(|d| crate::decision::catalogue_line(Some(d.process) == self.parent, d))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4000_0000;
    const PMD: u64 = model::HPAGE_PMD_SIZE;
    const MM: u64 = 0xffff_8881_0000_0000;

    /// A khugepaged event on the run's process 7 (`mm` known), fields as trace_pipe prints.
    fn event(name: &str, fields: &[(&str, &str)]) -> Event {
        let mut f: BTreeMap<String, String> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        f.insert("mm".into(), format!("{MM:#x}"));
        Event {
            pid: 99,
            name: name.into(),
            fields: f,
        }
    }

    /// Process 7's frames: `populated` of its four PMD ranges from BASE hold 512 small pages.
    fn frames(populated: &[u64]) -> FrameMap {
        let mut m = FrameMap::default();
        for i in 0..4u64 {
            let h = BASE + i * PMD;
            let mut present = Vec::new();
            if populated.contains(&i) {
                for n in 0..512u64 {
                    let pfn = 0x10_0000 + i * 0x1000 + 2 * n;
                    m.frames.insert((pfn, 7), h);
                    present.push(pfn);
                }
            }
            m.pmd_frames.entry(7).or_default().insert(h, present);
        }
        m
    }

    fn decide(
        frames: &FrameMap,
        files: &BTreeMap<String, Vec<(ProcId, u64, u64)>>,
        e: Event,
    ) -> Vec<Decision> {
        let mm_ids = BTreeMap::from([(MM, 7)]);
        let at = Placement {
            mm_ids: &mm_ids,
            frames,
            files,
            madv_collapse: None,
        };
        decisions_from(vec![e], &at, &mut FileHeads::new(), &mut |_, _| {}).unwrap()
    }

    #[test]
    fn a_scan_without_a_page_table_is_placed_only_where_a_range_had_none() {
        let no_table = || {
            event(
                "mm_khugepaged_scan_pmd",
                &[
                    ("scan_pfn", "0xffffffffffffffff"),
                    ("referenced", "0"),
                    ("none_or_zero", "0"),
                    ("status", "no_pte_table"),
                    ("unmapped", "0"),
                ],
            )
        };
        let none = BTreeMap::new();
        // Every range populated: the scan was on other memory of the process (7.2's mTHP
        // scan of the harness's heap), not a decision of the run.
        assert!(decide(&frames(&[0, 1, 2, 3]), &none, no_table()).is_empty());
        // One range without pages: that one.
        let d = decide(&frames(&[0, 1, 3]), &none, no_table());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].addr, Some(BASE + 2 * PMD));
        // Two: it is kept, unplaced.
        let d = decide(&frames(&[0, 3]), &none, no_table());
        assert_eq!((d.len(), d[0].addr, d[0].span), (1, None, None));
    }

    #[test]
    fn a_file_decision_without_a_mapped_page_spans_the_file_mapping() {
        // 6.1: no collapse_file event, and the scan names no page (-1 after a success).
        let scan = event(
            "mm_khugepaged_scan_file",
            &[
                ("scan_pfn", "0xffffffffffffffff"),
                ("filename", "memfd:khugepaged-selftest-collapse-shmem"),
                ("present", "512"),
                ("swap", "0"),
                ("result", "succeeded"),
            ],
        );
        let files = BTreeMap::from([(
            "khugepaged-selftest-collapse-shmem".to_string(),
            vec![(7, BASE, 4 * PMD)],
        )]);
        let d = decide(&frames(&[0, 1, 2, 3]), &files, scan.clone());
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].addr, d[0].span), (None, Some((BASE, BASE + 4 * PMD))));
        // 6.1 prints the dentry's inline name, not ours for a name that long: the process's
        // one file of the run; with two files, nothing.
        let mut garbled = scan.clone();
        garbled.fields.insert("filename".into(), "\u{1}x".into());
        let d = decide(&frames(&[0, 1, 2, 3]), &files, garbled.clone());
        assert_eq!(d[0].span, Some((BASE, BASE + 4 * PMD)));
        let mut two = files.clone();
        two.insert("other".into(), vec![(7, BASE + 8 * PMD, PMD)]);
        let d = decide(&frames(&[0, 1, 2, 3]), &two, garbled);
        assert_eq!((d[0].addr, d[0].span), (None, None));
        // Mapped over one PMD range only: placed there.
        let one = BTreeMap::from([(
            "khugepaged-selftest-collapse-shmem".to_string(),
            vec![(7, BASE + PMD, PMD)],
        )]);
        let d = decide(&frames(&[0, 1, 2, 3]), &one, scan);
        assert_eq!((d[0].addr, d[0].span), (Some(BASE + PMD), None));
    }
}
