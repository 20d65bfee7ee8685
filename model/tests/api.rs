//! The model's API for people writing Rust: stable PFNs, smaps by any address, vmstat by
//! name, the clock, decision records returned by khugepaged and MADV_COLLAPSE, the mmap
//! builder and explicit process creation.

use model::decision::PageKind;
use model::khugepaged::CollapseStage;
use model::madvise::Advice;
use model::mmap::{Mmap, Prot};
use model::scan_result::ScanResult;
use model::{Kernel, KernelProfile, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE};

const A: u64 = 0x4000_0000;

fn thp_machine() -> (Kernel, u32) {
    let mut k = Kernel::boot(KernelProfile::v6_18());
    k.sysfs_write("enabled", "madvise").unwrap();
    k.sysfs_write("khugepaged/scan_sleep_millisecs", "10")
        .unwrap();
    let p = k.spawn();
    (k, p)
}

#[test]
fn boot_has_no_process_until_spawned() {
    let mut k = Kernel::boot(KernelProfile::v6_18());
    assert!(k.pids().is_empty());
    assert_eq!(k.spawn(), 1);
    assert_eq!(Kernel::new(KernelProfile::v6_18()).pids(), vec![1]);
}

#[test]
fn pfns_are_never_reused_and_survive_a_split() {
    let (mut k, p) = thp_machine();
    let a = Mmap::anon(4 * PAGE_SIZE).at(A).call(&mut k, p).unwrap();
    assert_eq!(a, A);
    k.write(p, a, 1).unwrap();
    let first = k.pagemap(p, a).unwrap();
    k.madvise(p, a, PAGE_SIZE, Advice::DontNeed).unwrap();
    k.write(p, a, 2).unwrap();
    let second = k.pagemap(p, a).unwrap();
    // The folio slot is reused (lowest free id first); the frame is not.
    assert_eq!(first.page.unwrap().0, second.page.unwrap().0);
    assert_ne!(first.pfn.unwrap(), second.pfn.unwrap());

    let b = Mmap::anon(HPAGE_PMD_SIZE)
        .at(A + HPAGE_PMD_SIZE)
        .call(&mut k, p)
        .unwrap();
    k.madvise(p, b, HPAGE_PMD_SIZE, Advice::HugePage).unwrap();
    k.write(p, b, 1).unwrap();
    let before: Vec<u64> = (0..HPAGE_PMD_NR as u64)
        .map(|i| k.pagemap(p, b + i * PAGE_SIZE).unwrap().pfn.unwrap())
        .collect();
    assert_eq!(
        before[0] % HPAGE_PMD_NR as u64,
        0,
        "a THP's frames are aligned"
    );
    // The PMD split by unmapping the last page: the other 511 are PTE-mapped pages of the
    // same folio, each at the folio's frame plus its index (a folio is physically contiguous).
    k.madvise(p, b + 511 * PAGE_SIZE, PAGE_SIZE, Advice::DontNeed)
        .unwrap();
    let (folio, _) = k.folio_at(p, b).unwrap();
    assert_eq!(k.folio(folio).order, 9);
    for (i, pfn) in before.iter().enumerate().take(511) {
        let e = k.pagemap(p, b + i as u64 * PAGE_SIZE).unwrap();
        assert!(!e.pmd_mapped);
        assert_eq!(e.pfn, Some(*pfn), "PTE-mapped page {i} of the THP");
    }
    k.split_folio(folio);
    for (i, pfn) in before.iter().enumerate().take(511) {
        let e = k.pagemap(p, b + i as u64 * PAGE_SIZE).unwrap();
        assert!(!e.pmd_mapped);
        assert_eq!(
            e.pfn,
            Some(*pfn),
            "page {i} keeps its frame across the split"
        );
    }
}

#[test]
fn smaps_by_any_address_in_the_vma() {
    let (mut k, p) = thp_machine();
    let a = Mmap::anon(8 * PAGE_SIZE)
        .at(A)
        .prot(Prot::READ_WRITE)
        .call(&mut k, p)
        .unwrap();
    k.write(p, a + 3 * PAGE_SIZE, 1).unwrap();
    let s = k.smaps_at(p, a + 5 * PAGE_SIZE).unwrap();
    assert_eq!((s.start, s.end, s.rss), (a, a + 8 * PAGE_SIZE, 4));
    // The selftest's form keeps asking for the exact start.
    assert!(k.smaps(p, a + PAGE_SIZE).is_err());
    assert_eq!(k.smaps(p, a).unwrap(), s);
    assert!(k.smaps_at(p, a + 8 * PAGE_SIZE).is_err());
}

#[test]
fn vmstat_by_name_counts_or_refuses() {
    let (mut k, p) = thp_machine();
    let a = Mmap::anon(HPAGE_PMD_SIZE).at(A).call(&mut k, p).unwrap();
    k.madvise(p, a, HPAGE_PMD_SIZE, Advice::HugePage).unwrap();
    k.write(p, a, 1).unwrap();
    assert_eq!(k.vmstat_read("thp_fault_alloc"), Some(1));
    // Unmapping half a THP queues it for deferred split.
    k.munmap(p, a, HPAGE_PMD_SIZE / 2).unwrap();
    assert_eq!(k.vmstat_read("thp_split_pmd"), Some(1));
    assert_eq!(k.vmstat_read("thp_deferred_split_page"), Some(1));
    for name in model::kernel::VMSTAT_NAMES {
        assert!(k.vmstat_read(name).is_some(), "{name}");
    }
    assert_eq!(
        k.vmstat_read("thp_fault_fallback"),
        None,
        "not counted: refused"
    );

    // A shmem THP at fault is thp_file_alloc; an mTHP fault counts no THP event at all.
    k.sysfs_write("shmem_enabled", "always").unwrap();
    let inode = k.memfd_create();
    k.ftruncate(inode, HPAGE_PMD_SIZE).unwrap();
    let m = Mmap::shared(inode, HPAGE_PMD_SIZE)
        .at(A + 4 * HPAGE_PMD_SIZE)
        .call(&mut k, p)
        .unwrap();
    k.write(p, m, 1).unwrap();
    assert!(k.pagemap(p, m).unwrap().pmd_mapped);
    k.sysfs_write("hugepages-16kB/enabled", "always").unwrap();
    let s = Mmap::anon(HPAGE_PMD_SIZE)
        .at(A + 8 * HPAGE_PMD_SIZE)
        .call(&mut k, p)
        .unwrap();
    k.write(p, s, 1).unwrap();
    let (f, _) = k.folio_at(p, s).unwrap();
    assert_eq!(k.folio(f).order, 2);
    assert_eq!(
        k.vmstat.anon_fault_alloc[2], 1,
        "the 16 KiB size's own stat"
    );
    assert_eq!(k.vmstat_read("thp_file_alloc"), Some(1));
    assert_eq!(
        k.vmstat_read("thp_fault_alloc"),
        Some(1),
        "only the anonymous PMD fault"
    );

    // Splitting the huge zero page's PMD is a PMD split too.
    k.sysfs_write("use_zero_page", "1").unwrap();
    let z = Mmap::anon(HPAGE_PMD_SIZE)
        .at(A + 12 * HPAGE_PMD_SIZE)
        .call(&mut k, p)
        .unwrap();
    k.madvise(p, z, HPAGE_PMD_SIZE, Advice::HugePage).unwrap();
    k.read(p, z).unwrap();
    assert!(k.pagemap(p, z).unwrap().zero_page);
    assert!(k.pagemap(p, z).unwrap().pmd_mapped);
    k.madvise(p, z, PAGE_SIZE, Advice::DontNeed).unwrap();
    assert_eq!(k.vmstat_read("thp_split_pmd"), Some(2));
}

#[test]
fn sleeping_gives_khugepaged_one_wake_up_per_period() {
    let (mut k, p) = thp_machine();
    let a = Mmap::anon(HPAGE_PMD_SIZE).at(A).call(&mut k, p).unwrap();
    k.madvise(p, a, HPAGE_PMD_SIZE, Advice::HugePage).unwrap();
    k.madvise(p, a, HPAGE_PMD_SIZE, Advice::NoHugePage).unwrap();
    k.write(p, a, 1).unwrap();
    k.madvise(p, a, HPAGE_PMD_SIZE, Advice::HugePage).unwrap();
    assert_eq!(k.khugepaged_state.wakeups, 0);
    assert!(
        k.sleep_ms(9).is_empty(),
        "less than scan_sleep_millisecs: no wake-up"
    );
    assert_eq!(k.khugepaged_state.wakeups, 0);
    let recs = k.sleep_ms(1).to_vec();
    assert_eq!(k.khugepaged_state.wakeups, 1);
    assert_eq!(k.now_us(), 10_000);
    assert!(recs.iter().any(|r| r.addr == a && r.pid == p));
    k.sleep_ms(35);
    assert_eq!(k.khugepaged_state.wakeups, 4, "45 ms of sleep: 4 wake-ups");
    k.sleep_ms(5);
    assert_eq!(k.khugepaged_state.wakeups, 5, "the remainder carries over");
}

#[test]
fn khugepaged_run_until_stops_on_the_condition_and_returns_records() {
    let (mut k, p) = thp_machine();
    let a = Mmap::anon(HPAGE_PMD_SIZE).at(A).call(&mut k, p).unwrap();
    k.write(p, a, 1).unwrap(); // small pages: no advice yet
    k.madvise(p, a, HPAGE_PMD_SIZE, Advice::HugePage).unwrap();
    let run = k.khugepaged_run_until(8, 1000, |k, _| k.pagemap(p, a).is_ok_and(|e| e.pmd_mapped));
    assert!(run.met);
    assert_eq!(run.wakeups, 1);
    let stages: Vec<(CollapseStage, ScanResult)> =
        run.records.iter().map(|r| (r.stage, r.result)).collect();
    assert_eq!(
        stages,
        vec![
            (CollapseStage::ScanPmd, ScanResult::Succeed),
            (CollapseStage::CollapseHugePage, ScanResult::Succeed)
        ]
    );
    let last = run.records.last().unwrap();
    assert_eq!(
        last.before.pages[0],
        PageKind::Pte {
            file: false,
            large: false,
            shared: false
        }
    );
    assert_eq!(last.before.pages[1], PageKind::None);
    assert!(last
        .after
        .pages
        .iter()
        .all(|&k| k == PageKind::Pmd { file: false }));
    assert_eq!(last.folios.len(), 1);
    assert_eq!(last.folios[0].shared_ptes, 0);

    // A condition that never holds: the full-scan budget ends the run.
    let run = k.khugepaged_run_until(2, 1000, |_, _| false);
    assert!(!run.met);
    assert_eq!(run.full_scans, 2);
}

#[test]
fn madvise_collapse_returns_its_records() {
    let (mut k, p) = thp_machine();
    let a = Mmap::anon(HPAGE_PMD_SIZE).at(A).call(&mut k, p).unwrap();
    k.write(p, a, 1).unwrap();
    let child = k.fork(p).unwrap();
    let (r, recs) = k.madvise_collapse_explained(p, a, HPAGE_PMD_SIZE);
    assert_eq!(r, Ok(()));
    let scan = &recs[0];
    assert_eq!(scan.stage, CollapseStage::ScanPmd);
    // The one page is shared with the child: the predicate says so, MADV_COLLAPSE ignores
    // max_ptes_shared.
    assert_eq!((scan.shared, scan.folios[0].shared_ptes), (1, 1));
    assert_eq!(
        scan.before.pages[0],
        PageKind::Pte {
            file: false,
            large: false,
            shared: true
        }
    );
    assert_eq!(
        recs.last().unwrap().after.pages[0],
        PageKind::Pmd { file: false }
    );
    assert!(k.pagemap(child, a).unwrap().present);
}

#[test]
fn the_invariant_checker_refuses_shared_or_misaligned_frames() {
    let (mut k, p) = thp_machine();
    let a = Mmap::anon(HPAGE_PMD_SIZE).at(A).call(&mut k, p).unwrap();
    k.madvise(p, a, HPAGE_PMD_SIZE, Advice::HugePage).unwrap();
    k.write(p, a, 1).unwrap(); // a THP
    let b = Mmap::anon(PAGE_SIZE)
        .at(A + 2 * HPAGE_PMD_SIZE)
        .call(&mut k, p)
        .unwrap();
    k.write(p, b, 1).unwrap(); // a small page
    k.check_invariants().unwrap();
    let (thp, _) = k.folio_at(p, a).unwrap();
    let (small, _) = k.folio_at(p, b).unwrap();
    let thp_pfn = k.folio(thp).pfn;
    let mut bad = k.clone();
    bad.folios.folio_mut(small).pfn = thp_pfn + 7;
    let e = bad.check_invariants().unwrap_err().to_string();
    assert!(e.contains("share page frames"), "{e}");
    let mut bad = k.clone();
    bad.folios.folio_mut(thp).pfn = thp_pfn + 1;
    let e = bad.check_invariants().unwrap_err().to_string();
    assert!(e.contains("not aligned"), "{e}");
}
