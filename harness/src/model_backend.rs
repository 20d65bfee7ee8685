//! The model backend: khugepaged.c's system calls performed on a [`model::Kernel`].

use std::collections::BTreeMap;

use model::filemap::InodeId;
use model::mmap::{MapKind, Prot};
use model::mremap::MremapFlags;
use model::task_mmu::PagemapEntry;
use model::{Errno, Kernel, KernelProfile, Pid, PAGE_SIZE};

use crate::backend::{Backend, ChildResult, Fd, Madv, MapTarget, PageObs, PageState, SmapsFields};
use crate::catalogue::DirKind;

/// How an invariant violation note starts (see [`ModelBackend::check_invariants`]).
pub const INVARIANTS_BROKEN: &str = "model invariants broken: ";

/// An open file description of the model process.
#[derive(Clone, Copy, Debug)]
struct OpenFile {
    inode: InodeId,
    write: bool,
}

/// One model process running the selftest, with its file descriptors and the files it made.
pub struct ModelBackend {
    pub k: Kernel,
    pub pid: Pid,
    fds: BTreeMap<i32, OpenFile>,
    files: BTreeMap<String, InodeId>,
    /// The filesystem the selftest's `[dir]` is on: where create_file makes its file.
    pub dir: Option<DirKind>,
    /// Run the invariant checker at every step boundary of a traced run and after every call
    /// that collapsed or tried to (the calls that made collapse reports); the first violation
    /// becomes a note and stays in `invariant_violation`. Checking after every call would
    /// cost seconds per case (the checker walks all memory).
    pub check_invariants: bool,
    pub invariant_violation: Option<String>,
    /// Notes explain every collapse attempt (`--explain`): after the one-line records, each
    /// attempt's decision record and the picture of its range.
    pub explain: bool,
    /// Notes not yet taken (an invariant violation found at a step boundary).
    pending_notes: Vec<String>,
    /// Between `decisions_begin` and `decisions_end`: the reports notes took meanwhile, and
    /// where the reports of the call start in the collapse log.
    decision_reports: Option<(Vec<model::khugepaged::CollapseReport>, usize)>,
    /// The parent's pid while a forked child runs.
    parent_pid: Option<Pid>,
}

impl ModelBackend {
    /// Swap the model machine has, like the swapfile the host harness sets up (1 GiB).
    pub const DEFAULT_SWAP_PAGES: usize = 262_144;

    /// A fresh machine running `profile`, with the host's boot-default THP settings and an
    /// active swap device.
    pub fn new(profile: KernelProfile) -> ModelBackend {
        let mut b = Self::without_swap(profile);
        b.k.swapon(Self::DEFAULT_SWAP_PAGES)
            .expect("a fresh model has no swap yet");
        b
    }

    /// The same machine with no swap device (as the kernels of the matrix that have nothing
    /// to swap to): MADV_PAGEOUT leaves anonymous pages where they are.
    pub fn without_swap(profile: KernelProfile) -> ModelBackend {
        let mut k = Kernel::boot(profile);
        // The pictures and per-folio answers cost a scan several times its own work; only
        // `--explain` and scenarios (which turn them on) show them.
        k.decision_detail = false;
        let pid = k.spawn();
        ModelBackend {
            k,
            pid,
            fds: BTreeMap::new(),
            files: BTreeMap::new(),
            dir: None,
            check_invariants: false,
            invariant_violation: None,
            explain: false,
            pending_notes: Vec::new(),
            decision_reports: None,
            parent_pid: None,
        }
    }

    fn inode_of(&self, fd: Fd) -> Result<OpenFile, Errno> {
        self.fds.get(&fd.0).copied().ok_or(Errno::EINVAL)
    }

    fn new_fd(&mut self, f: OpenFile) -> Fd {
        let mut n = 3;
        while self.fds.contains_key(&n) {
            n += 1;
        }
        self.fds.insert(n, f);
        Fd(n)
    }

    /// The invariant checker, when enabled and nothing broke yet; see `check_invariants`.
    fn check(&mut self) {
        if self.check_invariants && self.invariant_violation.is_none() {
            if let Err(v) = self.k.check_invariants() {
                let text = v.to_string().replace('\n', "; ");
                self.pending_notes
                    .push(format!("{INVARIANTS_BROKEN}{text}"));
                self.invariant_violation = Some(text);
            }
        }
    }

    fn obs(&self, e: PagemapEntry) -> PageObs {
        let state = if e.zero_page {
            PageState::Zero
        } else if e.present {
            PageState::Present
        } else if e.swap {
            PageState::Swap
        } else {
            PageState::None
        };
        let mut o = PageObs {
            state,
            pmd_mapped: e.pmd_mapped,
            exclusive: e.exclusive,
            ..PageObs::default()
        };
        if let Some((folio, page)) = e.page {
            let f = self.k.folio(folio);
            // The head page's PFN, as the host reports it: never reused while the model runs.
            o.folio = Some(f.pfn);
            o.index_in_folio = page as u32;
            o.order = f.order;
            o.mapcount = f.folio_precise_page_mapcount(page);
            o.anon = f.is_anon();
        }
        o
    }
}

impl Backend for ModelBackend {
    fn name(&self) -> &'static str {
        "model"
    }

    fn kernel_release(&self) -> String {
        format!("model-{}", self.k.profile.name)
    }

    fn read_only_thp_for_fs(&mut self) -> bool {
        // Whether regular files collapse at all: the config before 7.2, always from 7.2.
        self.k.regular_file_thp()
    }

    fn mmap(&mut self, addr: u64, len: u64, target: MapTarget) -> Result<u64, Errno> {
        let (prot, kind) = match target {
            MapTarget::PrivateAnon => (Prot::READ_WRITE, MapKind::PrivateAnon),
            MapTarget::SharedRw(fd) => {
                (Prot::READ_WRITE, MapKind::Shared(self.inode_of(fd)?.inode))
            }
            MapTarget::PrivateRead(fd) => (Prot::READ, MapKind::Private(self.inode_of(fd)?.inode)),
            MapTarget::SharedRead(fd) => (Prot::READ, MapKind::Shared(self.inode_of(fd)?.inode)),
        };
        self.k.mmap(self.pid, addr, len, prot, kind, 0, false)
    }

    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.k.munmap(self.pid, addr, len)
    }

    fn madvise(&mut self, addr: u64, len: u64, a: Madv) -> Result<(), Errno> {
        self.k.madvise(self.pid, addr, len, a)
    }

    fn mremap_fixed(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        new: u64,
    ) -> Result<u64, Errno> {
        self.k.mremap(
            self.pid,
            old,
            old_len,
            new_len,
            MremapFlags::MAYMOVE_FIXED,
            new,
        )
    }

    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), Errno> {
        // The model keeps one word per page: the word at the page's start, which is what the
        // selftests write and validate.
        self.k.write(self.pid, addr, value as u64)
    }

    fn fill_pages(&mut self, addr: u64, pages: u64, first: u32) -> Result<(), (u64, Errno)> {
        self.k.write_pages(self.pid, addr, pages, |i| {
            first.wrapping_add(i as u32) as u64
        })
    }

    fn read_u32(&mut self, addr: u64) -> Result<u32, Errno> {
        self.k.read(self.pid, addr).map(|v| v as u32)
    }

    fn memfd_create(&mut self, _name: &str) -> Result<Fd, Errno> {
        let inode = self.k.memfd_create();
        Ok(self.new_fd(OpenFile { inode, write: true }))
    }

    fn ftruncate(&mut self, fd: Fd, len: u64) -> Result<(), Errno> {
        let f = self.inode_of(fd)?;
        self.k.ftruncate(f.inode, len)
    }

    fn create_file(&mut self, path: &str) -> Result<Fd, Errno> {
        if self.files.contains_key(path) {
            return Err(Errno::EEXIST);
        }
        let inode = match &self.dir {
            Some(DirKind::Tmpfs { huge }) => {
                let huge = huge.parse().map_err(|_| Errno::EINVAL)?;
                self.k.tmpfs_create(huge)
            }
            _ => self.k.create_empty_file(),
        };
        self.files.insert(path.to_string(), inode);
        Ok(self.new_fd(OpenFile { inode, write: true }))
    }

    fn open_read_only(&mut self, path: &str) -> Result<Fd, Errno> {
        let inode = *self.files.get(path).ok_or(Errno::ENOENT)?;
        self.k.inode_open(inode, false);
        Ok(self.new_fd(OpenFile {
            inode,
            write: false,
        }))
    }

    fn open_read_write(&mut self, path: &str) -> Result<Fd, Errno> {
        let inode = *self.files.get(path).ok_or(Errno::ENOENT)?;
        self.k.inode_open(inode, true);
        Ok(self.new_fd(OpenFile { inode, write: true }))
    }

    fn msync(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.k.msync(self.pid, addr, len)
    }

    fn write_from(&mut self, fd: Fd, addr: u64, len: u64) -> Result<(), Errno> {
        let f = self.inode_of(fd)?;
        if !f.write {
            return Err(Errno::EINVAL);
        }
        let mut data = Vec::with_capacity((len / PAGE_SIZE) as usize);
        for i in 0..len / PAGE_SIZE {
            data.push(self.k.read(self.pid, addr + i * PAGE_SIZE)?);
        }
        self.k.file_write_pages(f.inode, 0, &data);
        Ok(())
    }

    fn close(&mut self, fd: Fd) -> Result<(), Errno> {
        let f = self.fds.remove(&fd.0).ok_or(Errno::EINVAL)?;
        self.k.inode_close(f.inode, f.write);
        Ok(())
    }

    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        self.files.remove(path).map(|_| ()).ok_or(Errno::ENOENT)
    }

    fn drop_caches(&mut self) -> Result<(), Errno> {
        self.k.drop_caches();
        Ok(())
    }

    fn smaps(&mut self, addr: u64) -> Result<Option<SmapsFields>, String> {
        // The model's only error here is "no VMA starts at addr".
        let Ok(s) = self.k.smaps(self.pid, addr) else {
            return Ok(None);
        };
        Ok(Some(SmapsFields {
            rss: s.rss,
            anon_huge_pages: s.anon_huge_pages,
            shmem_pmd_mapped: s.shmem_pmd_mapped,
            file_pmd_mapped: s.file_pmd_mapped,
            swap: s.swap,
        }))
    }

    fn page_map(&mut self, addr: u64, nr: usize) -> Result<Vec<PageObs>, String> {
        Ok((0..nr as u64)
            .map(|i| {
                let e = self
                    .k
                    .pagemap(self.pid, addr + i * PAGE_SIZE)
                    .unwrap_or_default();
                self.obs(e)
            })
            .collect())
    }

    fn thp_read(&mut self, path: &str) -> Result<String, Errno> {
        self.k.sysfs_read(path)
    }

    fn thp_write(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        self.k.sysfs_write(path, value)
    }

    /// The model's page cache fills only what a test faults: no readahead, which is what the
    /// selftest's read_ahead_kb of 0 asks for. (Replays have no read_ahead_kb path.)
    fn read_ahead_kb(&mut self, _path: &str) -> Result<u64, Errno> {
        Ok(0)
    }

    fn set_read_ahead_kb(&mut self, _path: &str, kb: u64) -> Result<(), Errno> {
        if kb == 0 {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    }

    fn fork(
        &mut self,
        child: &mut dyn FnMut(&mut dyn Backend) -> ChildResult,
    ) -> Result<ChildResult, Errno> {
        let parent = self.pid;
        let child_pid = self.k.fork(parent)?;
        let saved_fds = self.fds.clone();
        self.pid = child_pid;
        let parent_of_parent = self.parent_pid.replace(parent);
        let result = child(self);
        self.parent_pid = parent_of_parent;
        // The child exits: its address space goes, its descriptors close.
        self.k.exit(child_pid)?;
        self.pid = parent;
        self.fds = saved_fds;
        Ok(result)
    }

    fn sleep_us(&mut self, usec: u64) {
        // The model's clock: khugepaged wakes every scan_sleep_millisecs of sleep; scanning
        // itself takes no virtual time.
        self.k.sleep_us(usec);
    }

    /// khugepaged.c's wait in virtual time: the selftest's 6 ticks of 0.5 s (3 s), but the
    /// condition is looked at after every khugepaged wake-up rather than every 0.5 s, so the
    /// wait ends in the same state without scanning on after it was met. A dot per 0.5 s.
    fn wait_for_scan(
        &mut self,
        full_scans_target: u64,
        done: &mut dyn FnMut(&mut dyn Backend) -> bool,
        tick: &mut dyn FnMut(),
    ) -> bool {
        let period_us = self.k.khugepaged_period_us();
        let total_us = 6 * 500_000;
        let mut elapsed = 0;
        loop {
            if done(self) || self.k.khugepaged_state.full_scans >= full_scans_target {
                return false;
            }
            if elapsed >= total_us {
                return true;
            }
            let before = elapsed;
            elapsed += period_us;
            if before / 500_000 != elapsed / 500_000 || before == 0 {
                tick();
            }
            self.k.khugepaged_wake();
        }
    }

    /// One `khugepaged_do_scan`, as the host's write to scan_sleep_millisecs causes; the
    /// model's khugepaged is asleep whenever the test runs.
    fn khugepaged_pass(&mut self) -> Result<(), String> {
        self.k.khugepaged_do_scan();
        Ok(())
    }

    /// The model's collapse reports: for every scan and attempt, the result code and the
    /// counts that decided it.
    fn take_notes(&mut self) -> Vec<String> {
        let log = self.k.take_collapse_log();
        if let Some((taken, from)) = self.decision_reports.as_mut() {
            taken.extend(log.iter().skip(*from).cloned());
            *from = 0;
        }
        let mut notes: Vec<String> = log
            .iter()
            .map(|r| {
                let ctx = match r.context {
                    model::khugepaged::CollapseContext::Khugepaged => "khugepaged",
                    model::khugepaged::CollapseContext::Madvise => "MADV_COLLAPSE",
                };
                let stage = match r.stage {
                    model::khugepaged::CollapseStage::ScanPmd => "scan_pmd",
                    model::khugepaged::CollapseStage::CollapseHugePage => "collapse_huge_page",
                    model::khugepaged::CollapseStage::ScanFile => "scan_file",
                    model::khugepaged::CollapseStage::PteMappedThp => "collapse_pte_mapped_thp",
                };
                format!(
                    "{ctx} {stage} {:#x} (pid {}): {} none={} swap={} shared={} referenced={} writable={} present={}",
                    r.addr, r.pid, r.result, r.none_or_zero, r.swap, r.shared, r.referenced, r.writable, r.present
                )
            })
            .collect();
        if self.explain {
            for g in crate::explain::group(log) {
                let title = format!(
                    "{} on {:#x} (pid {}):",
                    crate::explain::context_name(g[0].context),
                    g[0].addr,
                    g[0].pid
                );
                let a = crate::explain::Attempt {
                    title,
                    line: None,
                    records: g,
                };
                notes.extend(a.text());
            }
        }
        if !notes.is_empty() {
            self.check();
        }
        notes.append(&mut self.pending_notes);
        notes
    }

    fn step_boundary(&mut self) {
        self.check();
    }

    fn decisions_observable(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn decisions_begin(&mut self) {
        self.decision_reports = Some((Vec::new(), self.k.collapse_log().len()));
    }

    /// The decisions of the call's collapse reports, as the release's tracepoints state them
    /// (`writable` up to 6.17), on this process's memory and its parent's.
    fn decisions_end(&mut self) -> Result<Vec<(i64, String)>, String> {
        let (mut reports, from) = self.decision_reports.take().unwrap_or_default();
        reports.extend(self.k.collapse_log().iter().skip(from).cloned());
        let with_writable = self.k.profile.collapse_requires_writable_pte;
        Ok(crate::decision::model_decisions(reports, with_writable)
            .iter()
            .filter_map(|d| {
                let parent = match d.process {
                    p if p == self.pid as crate::decision::ProcId => false,
                    p if Some(p) == self.parent_pid.map(|q| q as crate::decision::ProcId) => true,
                    _ => return None,
                };
                crate::decision::catalogue_line(parent, d)
            })
            .collect())
    }

    fn as_dyn(&mut self) -> &mut dyn Backend {
        self
    }
}
