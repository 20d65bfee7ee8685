//! Random sequences of user operations (several processes, all the advice the selftests use,
//! mremap, fork, exit, khugepaged) on every profile. After every operation the model's
//! invariants must hold, and every read must return what a shadow of the contents says:
//! contents follow pages through COW, swap, splits, mremap and collapse, for private anonymous
//! memory and for a memfd every process maps shared (shmem page cache, shmem collapse).
//! Deterministic seeds.

mod common;
use std::collections::BTreeMap;

use common::*;
use model::madvise::Advice;
use model::mremap::MremapFlags;
use model::thp_settings::ThpOrderEnabled;
use model::{Errno, KernelProfile, Pid};

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The window the operations use: 8 MiB of anonymous memory at BASE, then 4 MiB of a memfd
/// mapped shared (every process maps it: fork keeps shared mappings), then 8 MiB of a
/// regular file mapped private: writable (reads see the file until a write gives the page a
/// COW copy), then read-only (where file THPs can be collapsed and PMD-mapped).
const ANON: u64 = 4 * PMD;
const SHARED: u64 = ANON + 2 * PMD;
const FILE_RO: u64 = SHARED + 2 * PMD;
const WINDOW: u64 = FILE_RO + 2 * PMD;

struct World {
    s: Sys,
    /// Per process: page address -> value last written to private memory (absent = what
    /// backs the mapping: zero, or the file's contents).
    shadow: BTreeMap<Pid, BTreeMap<u64, u64>>,
    /// The memfd's pages: (inode, page index) -> value last written (absent = zero).
    shared: BTreeMap<(u32, u64), u64>,
    rng: Rng,
    log: Vec<String>,
    /// Kinds of VMA backing (Anon, File, Shmem) that MADV_COLLAPSE left PMD-mapped.
    collapsed: std::collections::BTreeSet<&'static str>,
}

impl World {
    fn addr(&mut self) -> u64 {
        BASE + self.rng.below(WINDOW / PAGE) * PAGE
    }

    fn range(&mut self) -> (u64, u64) {
        let a = self.addr();
        let big = self.rng.below(3) == 0;
        let pages = 1 + self.rng.below(if big { 600 } else { 40 });
        (a, (pages * PAGE).min(BASE + WINDOW - a))
    }

    /// Where a store or load at `addr` lands: the memfd page, if a shared VMA maps it.
    fn shared_key(&self, pid: Pid, addr: u64) -> Option<(u32, u64)> {
        let vma = self.s.k.vma(pid, addr)?;
        match vma.backing {
            model::vma::VmaBacking::Shmem(inode) => Some((inode.0, vma.linear_page_index(addr))),
            _ => None,
        }
    }

    /// What a private page reads before it is written: the file's contents for a private
    /// file mapping, zero for anonymous memory.
    fn backing(&self, pid: Pid, addr: u64) -> u64 {
        match self
            .s
            .k
            .vma(pid, addr)
            .map(|v| (v.backing, v.linear_page_index(addr)))
        {
            Some((model::vma::VmaBacking::File(inode), index)) => {
                self.s.k.inode(inode).disk.get(&index).copied().unwrap_or(0)
            }
            _ => 0,
        }
    }

    fn pid(&mut self) -> Pid {
        let pids = self.s.k.pids();
        pids[self.rng.below(pids.len() as u64) as usize]
    }

    fn clear(&mut self, pid: Pid, start: u64, len: u64) {
        if let Some(m) = self.shadow.get_mut(&pid) {
            let keys: Vec<u64> = m.range(start..start + len).map(|(k, _)| *k).collect();
            for k in keys {
                m.remove(&k);
            }
        }
    }

    fn step(&mut self) {
        let pid = self.pid();
        let op = self.rng.below(100);
        let what: String;
        match op {
            0..=29 => {
                let a = self.addr();
                let v = self.rng.next() | 1;
                what = format!("pid {pid} write {a:#x}");
                let key = self.shared_key(pid, a);
                if self.s.k.write(pid, a, v).is_ok() {
                    match key {
                        Some(k) => {
                            self.shared.insert(k, v);
                        }
                        None => {
                            self.shadow.entry(pid).or_default().insert(a, v);
                        }
                    }
                }
            }
            30..=44 => {
                let a = self.addr();
                what = format!("pid {pid} read {a:#x}");
                let key = self.shared_key(pid, a);
                if let Ok(v) = self.s.k.read(pid, a) {
                    let want = match key {
                        Some(k) => self.shared.get(&k).copied().unwrap_or(0),
                        None => match self.shadow.get(&pid).and_then(|m| m.get(&a)) {
                            Some(&v) => v,
                            None => self.backing(pid, a),
                        },
                    };
                    assert_eq!(
                        v,
                        want,
                        "contents at {a:#x} in pid {pid} (VMA {:?}); ops so far:\n{}",
                        self.s.k.vma(pid, a),
                        self.log.join("\n")
                    );
                }
            }
            45..=49 => {
                let (a, len) = self.range();
                what = format!("pid {pid} mmap {a:#x}+{len:#x}");
                let _ = self.s.k.mmap(
                    pid,
                    a,
                    len,
                    model::mmap::Prot::READ_WRITE,
                    model::mmap::MapKind::PrivateAnon,
                    0,
                    true,
                );
                self.clear(pid, a, len);
            }
            50..=53 => {
                let (a, len) = self.range();
                what = format!("pid {pid} munmap {a:#x}+{len:#x}");
                if self.s.k.munmap(pid, a, len).is_ok() {
                    self.clear(pid, a, len);
                }
            }
            54..=58 => {
                let (a, len) = self.range();
                what = format!("pid {pid} DONTNEED {a:#x}+{len:#x}");
                let _ = self.s.k.madvise(pid, a, len, Advice::DontNeed);
                self.clear(pid, a, len);
            }
            59..=64 => {
                let (a, len) = self.range();
                let advice = [
                    Advice::HugePage,
                    Advice::NoHugePage,
                    Advice::PageOut,
                    Advice::Cold,
                    Advice::PopulateRead,
                    Advice::PopulateWrite,
                ][self.rng.below(6) as usize];
                what = format!("pid {pid} {advice:?} {a:#x}+{len:#x}");
                let _ = self.s.k.madvise(pid, a, len, advice);
            }
            65..=69 => {
                // Half of them on one aligned PMD range, so that collapses happen often.
                let (a, len) = if self.rng.below(2) == 0 {
                    (BASE + self.rng.below(WINDOW / PMD) * PMD, PMD)
                } else {
                    self.range()
                };
                what = format!("pid {pid} MADV_COLLAPSE {a:#x}+{len:#x}");
                // A failure in one PMD range fails the call but not the others.
                let _ = self.s.k.madvise_collapse(pid, a, len);
                {
                    // Note which kinds of memory got collapsed, to show the sequences reach
                    // every collapse path.
                    let mut h = (a + PMD - 1) & !(PMD - 1);
                    while h + PMD <= a + len {
                        let huge = matches!(
                            self.s.k.mm(pid).map(|mm| mm.page_table.pmd(h)),
                            Ok(model::page_table::Pmd::Huge(_))
                        );
                        if let (true, Some(vma)) = (huge, self.s.k.vma(pid, h)) {
                            self.collapsed.insert(match vma.backing {
                                model::vma::VmaBacking::Anon => "Anon",
                                model::vma::VmaBacking::File(_) => "File",
                                model::vma::VmaBacking::Shmem(_) => "Shmem",
                            });
                        }
                        h += PMD;
                    }
                }
            }
            70..=73 => {
                what = "khugepaged wake-up".into();
                self.s.k.khugepaged_do_scan();
            }
            74..=78 => {
                // mremap of a range inside one VMA, to a free-or-not destination in the window.
                let a = self.addr();
                let Some(vma) = self.s.k.vma(pid, a).cloned() else {
                    self.log.push(format!("pid {pid} mremap skipped"));
                    return;
                };
                let old_len = (vma.end - a).min((1 + self.rng.below(600)) * PAGE);
                let new_len = (1 + self.rng.below(600)) * PAGE;
                let dest = BASE + self.rng.below(WINDOW / PAGE) * PAGE;
                what = format!("pid {pid} mremap {a:#x}+{old_len:#x} -> {dest:#x}+{new_len:#x}");
                let overlap = dest < a + old_len && a < dest + new_len;
                match self
                    .s
                    .k
                    .mremap(pid, a, old_len, new_len, MremapFlags::MAYMOVE_FIXED, dest)
                {
                    Ok(_) => {
                        let moved: Vec<(u64, u64)> = self
                            .shadow
                            .get(&pid)
                            .map(|m| {
                                m.range(a..a + old_len.min(new_len))
                                    .map(|(k, v)| (*k, *v))
                                    .collect()
                            })
                            .unwrap_or_default();
                        self.clear(pid, a, old_len);
                        self.clear(pid, dest, new_len);
                        let m = self.shadow.entry(pid).or_default();
                        for (k, v) in moved {
                            m.insert(k - a + dest, v);
                        }
                    }
                    Err(e) => assert!(
                        overlap || e == Errno::EFAULT || e == Errno::EINVAL,
                        "mremap failed with {e}"
                    ),
                }
            }
            79..=83 => {
                what = format!("pid {pid} fork");
                if self.s.k.pids().len() < 5 {
                    let child = self.s.k.fork(pid).unwrap();
                    let copy = self.shadow.get(&pid).cloned().unwrap_or_default();
                    self.shadow.insert(child, copy);
                }
            }
            84..=86 => {
                what = format!("pid {pid} exit");
                if self.s.k.pids().len() > 1 {
                    self.s.k.exit(pid).unwrap();
                    self.shadow.remove(&pid);
                }
            }
            87..=89 => {
                let order = [2u8, 4, 9][self.rng.below(3) as usize];
                let v = [
                    ThpOrderEnabled::Always,
                    ThpOrderEnabled::Never,
                    ThpOrderEnabled::Inherit,
                    ThpOrderEnabled::Madvise,
                ][self.rng.below(4) as usize];
                what = format!("hugepages order {order} = {v}");
                self.s.k.thp.anon_orders[order as usize] = v;
            }
            90..=92 => {
                let (path, vals): (&str, &[&str]) = match self.rng.below(4) {
                    0 => ("enabled", &["always", "madvise", "never"]),
                    1 => ("khugepaged/max_ptes_shared", &["0", "256", "511"]),
                    2 => ("khugepaged/max_ptes_none", &["0", "255", "511"]),
                    _ => ("use_zero_page", &["0", "1"]),
                };
                let v = vals[self.rng.below(vals.len() as u64) as usize];
                what = format!("sysfs {path} = {v}");
                self.s.k.sysfs_write(path, v).unwrap();
            }
            _ => {
                // A whole-area write, to make THPs and full ranges common.
                let a = BASE + self.rng.below(WINDOW / PMD) * PMD;
                what = format!("pid {pid} fill {a:#x}");
                let base = self.rng.next();
                let keys: Vec<Option<(u32, u64)>> = (0..512)
                    .map(|i| self.shared_key(pid, a + i * PAGE))
                    .collect();
                // A partial fill stops at the first page that cannot be written.
                let written = match self.s.k.write_pages(pid, a, 512, |i| base ^ (i + 1)) {
                    Ok(()) => 512,
                    Err((i, _)) => i,
                };
                for (i, key) in (0..written).zip(keys) {
                    let addr = a + i * PAGE;
                    let v = base ^ (i + 1);
                    match key {
                        Some(k) => {
                            self.shared.insert(k, v);
                        }
                        None => {
                            self.shadow.entry(pid).or_default().insert(addr, v);
                        }
                    }
                }
            }
        }
        self.log.push(what);
        if let Err(v) = self.s.k.check_invariants() {
            let tail: Vec<&String> = self.log.iter().rev().take(25).collect();
            panic!(
                "{}, after step {} {:?}: {v}\nlast operations (newest first):\n{tail:#?}",
                self.log[0],
                self.log.len() - 1,
                self.log.last()
            );
        }
    }
}

fn world(profile: KernelProfile, seed: u64) -> World {
    let label = format!("profile {}, seed {seed}", profile.name);
    let mut s = Sys::new(profile);
    s.k.swapon(1 << 16).unwrap();
    s.k.sysfs_write("shmem_enabled", "advise").unwrap();
    let p = s.p;
    s.mmap_anon(p, BASE, ANON);
    let fd = s.k.memfd_create();
    s.k.ftruncate(fd, SHARED - ANON).unwrap();
    let kind = model::mmap::MapKind::Shared(fd);
    s.k.mmap(
        p,
        BASE + ANON,
        SHARED - ANON,
        model::mmap::Prot::READ_WRITE,
        kind,
        0,
        true,
    )
    .unwrap();
    // Odd seeds let khugepaged and MADV_COLLAPSE take the regular file's pages too.
    s.k.read_only_thp_for_fs = seed % 2 == 1;
    let contents: Vec<u64> = (0..(WINDOW - SHARED) / PAGE)
        .map(|i| (seed << 32) | (i + 1))
        .collect();
    let file = s.k.create_file(&contents);
    let kind = model::mmap::MapKind::Private(file);
    let rw = model::mmap::Prot::READ_WRITE;
    s.k.mmap(p, BASE + SHARED, FILE_RO - SHARED, rw, kind, 0, true)
        .unwrap();
    let ro = model::mmap::Prot::READ;
    let offset = FILE_RO - SHARED;
    s.k.mmap(p, BASE + FILE_RO, WINDOW - FILE_RO, ro, kind, offset, true)
        .unwrap();
    World {
        s,
        shadow: BTreeMap::new(),
        shared: BTreeMap::new(),
        rng: Rng(seed.max(1)),
        log: vec![label],
        collapsed: Default::default(),
    }
}

fn run(profile: KernelProfile, seed: u64, ops: usize) -> std::collections::BTreeSet<&'static str> {
    let mut w = world(profile, seed);
    for _ in 0..ops {
        w.step();
    }
    w.collapsed
}

#[test]
fn random_operation_sequences_keep_invariants_and_contents() {
    // RANDOM_OPS_SEEDS=N and RANDOM_OPS_STEPS=N make a longer fuzzing session.
    let env = |name: &str, default: u64| match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected a whole number")),
        Err(_) => default,
    };
    let (seeds, steps) = (env("RANDOM_OPS_SEEDS", 20), env("RANDOM_OPS_STEPS", 300));
    let mut collapsed = std::collections::BTreeSet::new();
    // Three of the distinct behaviours per seed, rotating, so every era gets seeds at the cost
    // three profiles had.
    let eras = KernelProfile::eras();
    for seed in 1..=seeds {
        for k in 0..3 {
            let profile = eras[(seed as usize + k * 3) % eras.len()].clone();
            collapsed.extend(run(profile, seed * 7919, steps as usize));
        }
    }
    assert_eq!(
        collapsed.into_iter().collect::<Vec<_>>(),
        ["Anon", "File", "Shmem"],
        "MADV_COLLAPSE should have collapsed anonymous, file and shmem memory"
    );
}
