//! Shared helpers: a kernel whose invariants are checked after every step.
#![allow(dead_code)]

use model::errno::Errno;
use model::filemap::InodeId;
use model::folio::{Folio, FolioId};
use model::madvise::Advice;
use model::mmap::{MapKind, Prot};
use model::{Kernel, KernelProfile, Pid, HPAGE_PMD_SIZE, PAGE_SIZE};

/// The selftest's BASE_ADDR.
pub const BASE: u64 = 1 << 30;
pub const PMD: u64 = HPAGE_PMD_SIZE;
pub const PAGE: u64 = PAGE_SIZE;

/// A model kernel plus the first process; every helper checks all invariants afterwards.
pub struct Sys {
    pub k: Kernel,
    pub p: Pid,
}

impl Sys {
    pub fn new(profile: KernelProfile) -> Sys {
        let k = Kernel::new(profile);
        let p = k.pids()[0];
        Sys { k, p }
    }

    pub fn v618() -> Sys {
        Sys::new(KernelProfile::v6_18())
    }

    /// Runs one operation, then the invariant checker.
    pub fn step<T>(&mut self, what: &str, op: impl FnOnce(&mut Kernel) -> T) -> T {
        let r = op(&mut self.k);
        if let Err(v) = self.k.check_invariants() {
            panic!("after {what}: {v}");
        }
        r
    }

    pub fn mmap_anon(&mut self, pid: Pid, addr: u64, len: u64) -> u64 {
        self.step("mmap", |k| {
            k.mmap(
                pid,
                addr,
                len,
                Prot::READ_WRITE,
                MapKind::PrivateAnon,
                0,
                false,
            )
        })
        .expect("mmap")
    }

    /// memfd_create, then ftruncate to `len`.
    pub fn memfd(&mut self, len: u64) -> InodeId {
        let fd = self.step("memfd", |k| k.memfd_create());
        self.step("ftruncate", |k| k.ftruncate(fd, len))
            .expect("ftruncate");
        fd
    }

    /// A read-write mapping of file `fd` from offset 0 (`MapKind::Shared` or `Private`).
    pub fn mmap_file(&mut self, pid: Pid, addr: u64, len: u64, kind: MapKind) -> u64 {
        self.step("mmap", |k| {
            k.mmap(pid, addr, len, Prot::READ_WRITE, kind, 0, false)
        })
        .expect("mmap")
    }

    /// A memfd of `len` bytes mapped shared at `addr`: the file and the mapping's address.
    pub fn memfd_shared(&mut self, pid: Pid, addr: u64, len: u64) -> (InodeId, u64) {
        let fd = self.memfd(len);
        (fd, self.mmap_file(pid, addr, len, MapKind::Shared(fd)))
    }

    pub fn write(&mut self, pid: Pid, addr: u64, v: u64) {
        self.step("write", |k| k.write(pid, addr, v))
            .expect("write");
    }

    pub fn read(&mut self, pid: Pid, addr: u64) -> u64 {
        self.step("read", |k| k.read(pid, addr)).expect("read")
    }

    /// The selftest's fill_memory(p, start, end): page i of the area at `p` gets
    /// `i + 0xdead0000`, for byte offsets `start..end`.
    pub fn fill(&mut self, pid: Pid, p: u64, start: u64, end: u64) {
        for i in start / PAGE..end / PAGE {
            self.write(pid, p + i * PAGE, i + 0xdead_0000);
        }
    }

    /// The selftest's validate_memory(p, start, end).
    pub fn validate(&mut self, pid: Pid, p: u64, start: u64, end: u64) {
        for i in start / PAGE..end / PAGE {
            let a = p + i * PAGE;
            assert_eq!(
                self.read(pid, a),
                i + 0xdead_0000,
                "contents of page {i} at {a:#x}"
            );
        }
    }

    pub fn madvise(&mut self, pid: Pid, addr: u64, len: u64, advice: Advice) -> Result<(), Errno> {
        self.step("madvise", |k| k.madvise(pid, addr, len, advice))
    }

    pub fn fork(&mut self, pid: Pid) -> Pid {
        self.step("fork", |k| k.fork(pid)).expect("fork")
    }

    /// Allocates a PMD THP at `addr` by faulting under MADV_HUGEPAGE.
    pub fn thp_at(&mut self, pid: Pid, addr: u64) {
        self.madvise(pid, addr, PMD, Advice::HugePage).unwrap();
        self.fill(pid, addr, 0, PMD);
        assert_eq!(
            self.k
                .smaps(pid, self.k.vma(pid, addr).unwrap().start)
                .unwrap()
                .anon_huge_pages,
            2048
        );
    }

    pub fn folio_at(&self, pid: Pid, addr: u64) -> (FolioId, usize) {
        self.k
            .folio_at(pid, addr)
            .unwrap_or_else(|| panic!("nothing mapped at {addr:#x}"))
    }

    pub fn folio(&self, pid: Pid, addr: u64) -> &Folio {
        self.k.folio(self.folio_at(pid, addr).0)
    }
}
