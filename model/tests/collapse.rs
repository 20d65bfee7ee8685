//! khugepaged and MADV_COLLAPSE: every result code reached through user operations, the
//! selftest scenarios (reference §10.2) built with model operations, and the linux-mm case.

mod common;
use common::*;
use model::khugepaged::{CollapseContext, CollapseStage};
use model::madvise::Advice;
use model::mmap::{MapKind, Prot};
use model::scan_result::ScanResult;
use model::{Errno, KernelProfile, Pid};

/// The settings khugepaged.c's main() pushes.
fn selftest_settings(s: &mut Sys) {
    for (path, v) in [
        ("enabled", "madvise"),
        ("defrag", "always"),
        ("shmem_enabled", "advise"),
        ("use_zero_page", "0"),
        ("khugepaged/scan_sleep_millisecs", "10"),
        ("khugepaged/alloc_sleep_millisecs", "10"),
    ] {
        s.k.sysfs_write(path, v).unwrap();
    }
}

fn new(profile: KernelProfile) -> Sys {
    let mut s = Sys::new(profile);
    selftest_settings(&mut s);
    s
}

fn huge(s: &Sys, pid: Pid, p: u64, nr: u64) -> bool {
    let sm = s.k.smaps(pid, p).unwrap();
    sm.anon_huge_pages + sm.shmem_pmd_mapped + sm.file_pmd_mapped == nr * 2048
}

/// The selftest's khugepaged context: MADV_HUGEPAGE, then wait for the collapse or for two
/// more full scans. Returns whether the range ended up huge.
fn khugepaged_collapse(s: &mut Sys, pid: Pid, p: u64, nr: u64) -> bool {
    s.madvise(pid, p, nr * PMD, Advice::HugePage).unwrap();
    let target = s.k.khugepaged_state.full_scans + 2;
    for _ in 0..64 {
        if huge(s, pid, p, nr) || s.k.khugepaged_state.full_scans >= target {
            break;
        }
        s.step("khugepaged wake-up", |k| {
            k.khugepaged_do_scan();
        });
    }
    huge(s, pid, p, nr)
}

/// The selftest's madvise context: stop khugepaged, MADV_HUGEPAGE, MADV_COLLAPSE (retried
/// once on EAGAIN).
fn madvise_collapse(s: &mut Sys, pid: Pid, p: u64, nr: u64) -> Result<(), Errno> {
    s.k.sysfs_write("enabled", "never").unwrap();
    s.k.sysfs_write("shmem_enabled", "never").unwrap();
    s.madvise(pid, p, nr * PMD, Advice::HugePage).unwrap();
    let mut r = s.step("MADV_COLLAPSE", |k| k.madvise_collapse(pid, p, nr * PMD));
    if r == Err(Errno::EAGAIN) {
        r = s.step("MADV_COLLAPSE", |k| k.madvise_collapse(pid, p, nr * PMD));
    }
    s.k.sysfs_write("enabled", "madvise").unwrap();
    s.k.sysfs_write("shmem_enabled", "advise").unwrap();
    r
}

fn last_scan(s: &Sys) -> ScanResult {
    s.k.collapse_log()
        .iter()
        .rev()
        .find(|r| r.stage == CollapseStage::ScanPmd)
        .expect("a scan happened")
        .result
}

/// `hpage_collapse_scan_pmd` and `__collapse_huge_page_isolate` count one
/// THP_SCAN_EXCEED_{NONE,SWAP,SHARE}_PTE event each time they give up on that limit: every
/// counter equals the number of PMD-order reports with its result.
fn exceed_events_match_reports(s: &Sys) {
    for (name, result) in [
        ("thp_scan_exceed_none_pte", ScanResult::ExceedNonePte),
        ("thp_scan_exceed_swap_pte", ScanResult::ExceedSwapPte),
        ("thp_scan_exceed_share_pte", ScanResult::ExceedSharedPte),
    ] {
        let reports =
            s.k.collapse_log()
                .iter()
                .filter(|r| r.result == result && r.order == model::HPAGE_PMD_ORDER)
                .count() as u64;
        assert_eq!(s.k.vmstat_read(name), Some(reports), "{name}");
    }
}

fn anon_area(s: &mut Sys, nr: u64) -> u64 {
    let p = s.p;
    s.mmap_anon(p, BASE, nr * PMD)
}

// ---- result codes ----

#[test]
fn scan_succeed_collapses_a_full_range_with_contents() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = anon_area(&mut s, 4);
    s.fill(s.p, p, 0, 4 * PMD);
    assert!(khugepaged_collapse(&mut s, me, p, 4));
    assert_eq!(s.k.khugepaged_state.pages_collapsed, 4);
    s.validate(s.p, p, 0, 4 * PMD);
    let f = s.folio(s.p, p);
    assert!(f.pages[0].anon_exclusive && f.folio_entire_mapcount() == 1);
    assert_eq!(s.k.folios.len(), 4, "the 2048 small folios were freed");
}

#[test]
fn exceed_none_pte_then_collapse_when_within_max_ptes_none() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    s.k.sysfs_write("khugepaged/max_ptes_none", "256").unwrap();
    let p = anon_area(&mut s, 1);
    s.fill(s.p, p, 0, (512 - 256 - 1) * PAGE);
    assert!(!khugepaged_collapse(&mut s, me, p, 1));
    assert_eq!(last_scan(&s), ScanResult::ExceedNonePte);
    assert!(
        s.k.collapse_stats.thp_scan_exceed_none_pte >= 2,
        "once per full scan"
    );
    exceed_events_match_reports(&s);
    s.fill(s.p, p, 0, (512 - 256) * PAGE);
    assert!(khugepaged_collapse(&mut s, me, p, 1));
    s.validate(s.p, p, 0, (512 - 256) * PAGE);
}

#[test]
fn madvise_collapse_ignores_max_ptes_none() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    s.k.sysfs_write("khugepaged/max_ptes_none", "0").unwrap();
    let p = anon_area(&mut s, 1);
    s.fill(s.p, p, 0, PAGE);
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Ok(()));
    assert!(huge(&s, s.p, p, 1));
}

#[test]
fn exceed_swap_pte_then_swapin_collapse() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    let p = anon_area(&mut s, 1);
    s.fill(s.p, p, 0, PMD);
    s.madvise(s.p, p, 65 * PAGE, Advice::PageOut).unwrap();
    assert!(!khugepaged_collapse(&mut s, me, p, 1));
    assert_eq!(last_scan(&s), ScanResult::ExceedSwapPte);
    assert!(s.k.vmstat_read("thp_scan_exceed_swap_pte").unwrap() > 0);
    exceed_events_match_reports(&s);
    s.fill(s.p, p, 0, PMD);
    s.madvise(s.p, p, 64 * PAGE, Advice::PageOut).unwrap();
    assert!(khugepaged_collapse(&mut s, me, p, 1));
    s.validate(s.p, p, 0, PMD);
    assert_eq!(s.k.smaps(s.p, p).unwrap().swap, 0);
    assert_eq!(
        s.k.swap_device().unwrap().in_use(),
        0,
        "swap cache freed after the collapse"
    );
}

#[test]
fn lack_referenced_page_after_cold_and_too_few_young_with_swap() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = anon_area(&mut s, 1);
    s.fill(s.p, p, 0, PMD);
    s.madvise(s.p, p, PMD, Advice::Cold).unwrap();
    assert!(!khugepaged_collapse(&mut s, me, p, 1));
    assert_eq!(last_scan(&s), ScanResult::LackReferencedPage);
    // MADV_COLLAPSE does not look at young bits.
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Ok(()));
}

#[test]
fn lack_referenced_with_a_swap_pte_needs_256_young() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    let p = anon_area(&mut s, 1);
    s.fill(s.p, p, 0, PMD);
    s.madvise(s.p, p, PMD, Advice::Cold).unwrap();
    // 255 pages young again, one swapped: 255 < 256 referenced.
    for i in 1..256 {
        s.read(s.p, p + i * PAGE);
    }
    s.madvise(s.p, p, PAGE, Advice::PageOut).unwrap();
    assert!(!khugepaged_collapse(&mut s, me, p, 1));
    assert_eq!(last_scan(&s), ScanResult::LackReferencedPage);
    s.read(s.p, p + 256 * PAGE);
    assert!(khugepaged_collapse(&mut s, me, p, 1));
}

#[test]
fn exceed_shared_pte_then_collapse_with_256_shared() {
    // collapse_max_ptes_shared.
    let mut s = new(KernelProfile::v6_18());
    let p = anon_area(&mut s, 1);
    s.thp_at(s.p, p);
    let parent = s.p;
    let child = s.fork(parent);
    for i in 0..255 {
        s.write(child, p + i * PAGE, i + 0xdead_0000);
    }
    assert!(!khugepaged_collapse(&mut s, child, p, 1));
    assert_eq!(last_scan(&s), ScanResult::ExceedSharedPte);
    assert!(s.k.vmstat_read("thp_scan_exceed_share_pte").unwrap() > 0);
    exceed_events_match_reports(&s);
    assert_eq!(
        s.k.collapse_log()
            .iter()
            .rev()
            .find(|r| r.stage == CollapseStage::ScanPmd)
            .unwrap()
            .shared,
        257
    );
    s.write(child, p + 255 * PAGE, 255 + 0xdead_0000);
    assert!(khugepaged_collapse(&mut s, child, p, 1));
    s.validate(child, p, 0, PMD);
    assert!(huge(&s, parent, p, 1), "the parent keeps its THP");
}

#[test]
fn madvise_collapse_ignores_max_ptes_shared() {
    let mut s = new(KernelProfile::v6_18());
    let p = anon_area(&mut s, 1);
    s.thp_at(s.p, p);
    let child = s.fork(s.p);
    s.write(child, p, 0xdead_0000);
    assert_eq!(madvise_collapse(&mut s, child, p, 1), Ok(()));
    assert!(huge(&s, child, p, 1));
}

/// All PTEs read-only and unshared: the parent after fork once the child has exited.
fn read_only_range(profile: KernelProfile) -> (Sys, u64) {
    let mut s = new(profile);
    let p = anon_area(&mut s, 1);
    s.fill(s.p, p, 0, PMD);
    let child = s.fork(s.p);
    s.step("exit", |k| k.exit(child)).unwrap();
    (s, p)
}

#[test]
fn page_ro_up_to_6_17_and_collapse_on_6_18() {
    for profile in [KernelProfile::v6_1(), KernelProfile::v6_12()] {
        let (mut s, p) = read_only_range(profile);
        let me = s.p;
        assert!(!khugepaged_collapse(&mut s, me, p, 1));
        assert_eq!(last_scan(&s), ScanResult::PageRo);
        assert_eq!(madvise_collapse(&mut s, me, p, 1), Err(Errno::EINVAL));
    }
    let (mut s, p) = read_only_range(KernelProfile::v6_18());
    let me = s.p;
    assert!(khugepaged_collapse(&mut s, me, p, 1));
}

#[test]
fn pmd_mapped_range_is_not_collapsed_again() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = anon_area(&mut s, 1);
    s.thp_at(s.p, p);
    let before = s.k.khugepaged_state.pages_collapsed;
    s.madvise(me, p, PMD, Advice::HugePage).unwrap();
    s.step("full scan", |k| k.khugepaged_run_full_scans(1, 16));
    assert_eq!(last_scan(&s), ScanResult::PmdMapped);
    assert_eq!(s.k.khugepaged_state.pages_collapsed, before, "not counted");
    // madvise_collapse_existing_thps: success, twice.
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Ok(()));
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Ok(()));
}

#[test]
fn pmd_null_and_pmd_none() {
    let mut s = new(KernelProfile::v6_18());
    let p = anon_area(&mut s, 2);
    // Fault then zap the second block: the first has never had a table.
    s.write(s.p, p + PMD, 1);
    s.madvise(s.p, p + PMD, PMD, Advice::DontNeed).unwrap();
    let r = s.step("collapse", |k| k.madvise_collapse(s_pid(k), p, PMD));
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(
        s.k.collapse_log().last().unwrap().result,
        ScanResult::PmdNone
    );
    let mut s = new(KernelProfile::v6_18());
    let p = anon_area(&mut s, 2);
    s.write(s.p, p + PMD, 1);
    s.step("munmap", |k| k.munmap(s_pid(k), p + PMD, PMD))
        .unwrap();
    s.write(s.p, p + PAGE, 1); // gives the VMA an anon_vma, in the same PUD range
    s.step("zap", |k| k.madvise(s_pid(k), p, PMD, Advice::DontNeed))
        .unwrap();
    let far = 64 * PMD * 512; // a different 1 GiB range, never touched
    s.step("mmap far", |k| {
        k.mmap(
            s_pid(k),
            far,
            PMD,
            Prot::READ_WRITE,
            MapKind::PrivateAnon,
            0,
            false,
        )
    })
    .unwrap();
    s.write(s.p, far, 1);
    s.step("zap far", |k| k.munmap(s_pid(k), far, PMD)).unwrap();
    assert_eq!(
        s.k.hpage_collapse_scan_pmd(s.p, p + 4 * PMD * 512, CollapseContext::Madvise),
        ScanResult::PmdNull
    );
}

/// 6.19 folds SCAN_PMD_NONE and SCAN_PMD_NULL into SCAN_NO_PTE_TABLE, which MADV_COLLAPSE
/// steps over: a never-faulted first range no longer stops the call before the second.
#[test]
fn pmd_none_stops_madvise_collapse_until_6_19() {
    for (release, first, second_huge) in [
        ("6.18", ScanResult::PmdNone, false),
        ("6.19", ScanResult::NoPteTable, true),
    ] {
        let mut s = new(KernelProfile::for_release(release).unwrap());
        let me = s.p;
        let p = anon_area(&mut s, 2);
        s.write(me, p + PMD, 1); // a PTE table in the second range only
        assert_eq!(madvise_collapse(&mut s, me, p, 2), Err(Errno::EINVAL));
        let scans: Vec<ScanResult> =
            s.k.collapse_log()
                .iter()
                .filter(|r| r.stage == CollapseStage::ScanPmd)
                .map(|r| r.result)
                .collect();
        assert_eq!(scans[0], first, "{release}");
        // AnonHugePages of the whole area: 2048 kB once the second range collapsed.
        assert_eq!(huge(&s, me, p, 1), second_huge, "{release}: {scans:?}");
    }
}

fn s_pid(k: &model::Kernel) -> Pid {
    k.pids()[0]
}

#[test]
fn collapse_empty_is_einval_for_madvise_and_ignored_by_khugepaged() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = anon_area(&mut s, 1);
    assert!(!khugepaged_collapse(&mut s, me, p, 1));
    assert!(
        s.k.khugepaged_mm_list().is_empty(),
        "no anon_vma: MADV_HUGEPAGE does not register"
    );
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Err(Errno::EINVAL));
}

#[test]
fn madvise_collapse_on_nohugepage_vma_is_einval() {
    let mut s = new(KernelProfile::v6_18());
    let p = anon_area(&mut s, 1);
    s.fill(s.p, p, 0, PMD);
    s.madvise(s.p, p, PMD, Advice::NoHugePage).unwrap();
    assert_eq!(s.k.madvise_collapse(s.p, p, PMD), Err(Errno::EINVAL));
}

// ---- shmem / file ----

/// What the selftest's first test, alloc_at_fault, leaves behind: an MM registered with
/// khugepaged (a THP fault registers it). The shmem khugepaged cases rely on it, because
/// MADV_HUGEPAGE on a memfd does not register the MM.
fn alloc_at_fault_prologue(s: &mut Sys) {
    let me = s.p;
    s.k.sysfs_write("enabled", "always").unwrap();
    let a = s.mmap_anon(me, BASE + 64 * PMD, PMD);
    s.write(me, a, 1);
    s.step("munmap", |k| k.munmap(me, a, PMD)).unwrap();
    s.k.sysfs_write("enabled", "madvise").unwrap();
    assert_eq!(s.k.khugepaged_mm_list(), &[me]);
}

#[test]
fn madv_hugepage_on_memfd_does_not_register_the_mm() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = shmem_area(&mut s, 1);
    s.fill(me, p, 0, PMD);
    s.madvise(me, p, PMD, Advice::HugePage).unwrap();
    assert!(s.k.khugepaged_mm_list().is_empty());
    s.step("scan", |k| k.khugepaged_run_full_scans(2, 16));
    assert_eq!(
        s.k.khugepaged_state.full_scans, 0,
        "khugepaged has nothing to scan"
    );
    // An anonymous VMA advised after a fault registers it.
    let a = s.mmap_anon(me, BASE + 8 * PMD, PMD);
    s.write(me, a, 1);
    s.madvise(me, a, PMD, Advice::HugePage).unwrap();
    assert_eq!(s.k.khugepaged_mm_list(), &[me]);
}

fn shmem_area(s: &mut Sys, nr: u64) -> u64 {
    let fd = s.step("memfd", |k| k.memfd_create());
    s.step("ftruncate", |k| k.ftruncate(fd, nr * PMD)).unwrap();
    let pid = s.p;
    s.step("mmap", |k| {
        k.mmap(
            pid,
            BASE,
            nr * PMD,
            Prot::READ_WRITE,
            MapKind::Shared(fd),
            0,
            false,
        )
    })
    .unwrap()
}

#[test]
fn shmem_khugepaged_collapse_retracts_and_refault_maps_pmd() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    alloc_at_fault_prologue(&mut s);
    let p = shmem_area(&mut s, 1);
    s.fill(s.p, p, 0, PMD);
    // khugepaged retracts the table: the range is not mapped until it is touched again.
    assert!(!khugepaged_collapse(&mut s, me, p, 1));
    assert_eq!(s.k.smaps(s.p, p).unwrap().rss, 0);
    s.validate(s.p, p, 0, PMD);
    assert!(
        huge(&s, s.p, p, 1),
        "the refault maps the page-cache THP with a PMD"
    );
    // An already collapsed shmem THP counts again in pages_collapsed on every pass (seen on a
    // 6.18 host too: +1 per full scan).
    let before = s.k.khugepaged_state.pages_collapsed;
    s.step("full scans", |k| k.khugepaged_run_full_scans(2, 16));
    assert!(s.k.khugepaged_state.pages_collapsed >= before + 2);
}

#[test]
fn shmem_madvise_collapse_installs_pmd_and_single_pte_entry() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = shmem_area(&mut s, 1);
    s.fill(s.p, p, 0, PAGE);
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Ok(()));
    assert!(huge(&s, s.p, p, 1));
    s.validate(s.p, p, 0, PAGE);
    assert_eq!(s.read(s.p, p + 5 * PAGE), 0, "holes are zero-filled");
    assert_eq!(
        madvise_collapse(&mut s, me, p, 1),
        Ok(()),
        "existing THP: success again"
    );
}

/// A PMD-mapped shmem THP, filled, whose PMD a VMA split (MADV_NOHUGEPAGE on one page, then
/// on the whole range, which merges the VMA back) cleared: the THP stays in the page cache,
/// mapped nowhere. Returns the mapping's address.
fn shmem_thp_unmapped(s: &mut Sys) -> u64 {
    let p = shmem_area(s, 1);
    s.madvise(s.p, p, PMD, Advice::HugePage).unwrap();
    s.fill(s.p, p, 0, PMD);
    assert!(huge(s, s.p, p, 1));
    s.madvise(s.p, p, PAGE, Advice::NoHugePage).unwrap();
    s.madvise(s.p, p, PMD, Advice::NoHugePage).unwrap();
    p
}

#[test]
fn shmem_full_of_compound_hits_pte_mapped_hugepage() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = shmem_thp_unmapped(&mut s);
    assert!(!huge(&s, s.p, p, 1));
    assert_eq!(
        s.k.smaps(s.p, p).unwrap().rss,
        0,
        "a shmem PMD split clears it"
    );
    s.fill(s.p, p, 0, PMD);
    assert_eq!(s.folio(s.p, p).order, 9, "PTE-mapped page-cache THP");
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Ok(()));
    let r: Vec<ScanResult> = s.k.collapse_log().iter().map(|r| r.result).collect();
    assert!(r.contains(&ScanResult::PteMappedHugepage));
    assert!(huge(&s, s.p, p, 1));
}

/// The decision record of `collapse_pte_mapped_thp` (no tracepoint; `--explain` shows it)
/// counts the range as its page table holds it: the PTEs of the THP that are none, and the
/// writable ones among those mapped.
#[test]
fn pte_mapped_thp_record_counts_none_and_writable_ptes() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    let p = shmem_thp_unmapped(&mut s);
    // A fault maps the whole shmem folio (finish_fault, 6.11+) with writable PTEs (a shared
    // writable shmem mapping wants no write notification); MADV_DONTNEED leaves 212 none.
    s.fill(s.p, p, 0, PAGE);
    s.madvise(s.p, p + 300 * PAGE, 212 * PAGE, Advice::DontNeed)
        .unwrap();
    assert_eq!(s.folio(s.p, p).order, 9, "PTE-mapped page-cache THP");
    assert_eq!(madvise_collapse(&mut s, me, p, 1), Ok(()));
    let r =
        s.k.collapse_log()
            .iter()
            .find(|r| r.stage == CollapseStage::PteMappedThp)
            .expect("collapse_pte_mapped_thp ran");
    assert_eq!(r.result, ScanResult::Succeed);
    assert_eq!((r.none_or_zero, r.writable), (212, 300));
}

#[test]
fn shmem_empty_range_is_truncated_and_max_ptes_none_applies_to_page_cache() {
    let mut s = new(KernelProfile::v6_18());
    let me = s.p;
    alloc_at_fault_prologue(&mut s);
    let p = shmem_area(&mut s, 1);
    s.k.sysfs_write("enabled", "never").unwrap();
    let r = s.step("collapse", |k| k.madvise_collapse(s_pid(k), p, PMD));
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(
        s.k.collapse_log().last().unwrap().result,
        ScanResult::Truncated
    );
    s.k.sysfs_write("enabled", "madvise").unwrap();
    s.k.sysfs_write("khugepaged/max_ptes_none", "256").unwrap();
    s.fill(s.p, p, 0, 255 * PAGE);
    assert!(!khugepaged_collapse(&mut s, me, p, 1));
    let file_scan =
        s.k.collapse_log()
            .iter()
            .rev()
            .find(|r| r.stage == CollapseStage::ScanFile)
            .unwrap();
    assert_eq!(
        (file_scan.result, file_scan.present),
        (ScanResult::ExceedNonePte, 255)
    );
}

#[test]
fn private_cow_page_in_shmem_mapping_makes_pte_mapped_thp_fail() {
    let mut s = new(KernelProfile::v6_18());
    let fd = s.step("memfd", |k| k.memfd_create());
    s.step("ftruncate", |k| k.ftruncate(fd, PMD)).unwrap();
    let pid = s.p;
    let p = s
        .step("mmap", |k| {
            k.mmap(
                pid,
                BASE,
                PMD,
                Prot::READ_WRITE,
                MapKind::Private(fd),
                0,
                false,
            )
        })
        .unwrap();
    s.read(pid, p + PAGE);
    s.write(pid, p, 5); // a COW copy: the VMA now has an anon_vma
    s.k.sysfs_write("enabled", "never").unwrap();
    let r = s.step("collapse", |k| k.madvise_collapse(pid, p, PMD));
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(s.k.collapse_log().last().unwrap().result, ScanResult::Fail);
}

#[test]
fn regular_file_is_vma_check_without_read_only_thp_for_fs() {
    let mut s = new(KernelProfile::v6_18());
    let contents: Vec<u64> = (0..512).collect();
    let ino = s.step("create", |k| k.create_file(&contents));
    let pid = s.p;
    let p = s
        .step("mmap", |k| {
            k.mmap(pid, BASE, PMD, Prot::READ, MapKind::Private(ino), 0, false)
        })
        .unwrap();
    s.madvise(pid, p, PMD, Advice::PopulateRead).unwrap();
    assert!(!khugepaged_collapse(&mut s, pid, p, 1));
    assert_eq!(madvise_collapse(&mut s, pid, p, 1), Err(Errno::EINVAL));
    // With the config, the page cache is collapsed and MADV_COLLAPSE maps it.
    s.k.read_only_thp_for_fs = true;
    assert_eq!(madvise_collapse(&mut s, pid, p, 1), Ok(()));
    assert_eq!(s.k.smaps(pid, p).unwrap().file_pmd_mapped, 2048);
    for i in 0..512 {
        assert_eq!(s.read(pid, p + i * PAGE), i);
    }
}

// ---- the remaining selftest scenarios ----

#[test]
fn collapse_single_pte_entry_and_swapin_single_pte() {
    for ctx in [CollapseContext::Khugepaged, CollapseContext::Madvise] {
        let mut s = new(KernelProfile::v6_18());
        s.step("swapon", |k| k.swapon(4096)).unwrap();
        let p = anon_area(&mut s, 1);
        s.fill(s.p, p, 0, PAGE);
        assert!(run(&mut s, ctx, p));
        s.validate(s.p, p, 0, PAGE);
        let p = BASE + 8 * PMD;
        s.mmap_anon(s.p, p, PMD);
        s.fill(s.p, p, 0, PMD);
        s.madvise(s.p, p, PAGE, Advice::PageOut).unwrap();
        assert_eq!(s.k.smaps(s.p, p).unwrap().swap, 4);
        assert!(run(&mut s, ctx, p));
        s.validate(s.p, p, 0, PMD);
    }
}

fn run(s: &mut Sys, ctx: CollapseContext, p: u64) -> bool {
    match ctx {
        CollapseContext::Khugepaged => khugepaged_collapse(s, s.p, p, 1),
        CollapseContext::Madvise => madvise_collapse(s, s.p, p, 1).is_ok() && huge(s, s.p, p, 1),
    }
}

#[test]
fn collapse_compound_scenarios_copy_into_a_new_thp() {
    for ctx in [CollapseContext::Khugepaged, CollapseContext::Madvise] {
        // collapse_single_pte_entry_compound
        let mut s = new(KernelProfile::v6_18());
        let p = anon_area(&mut s, 1);
        s.thp_at(s.p, p);
        let (old, _) = s.folio_at(s.p, p);
        s.madvise(s.p, p, PMD, Advice::NoHugePage).unwrap();
        s.madvise(s.p, p + PAGE, PMD - PAGE, Advice::DontNeed)
            .unwrap();
        assert!(run(&mut s, ctx, p));
        assert_ne!(s.folio_at(s.p, p).0, old, "a new THP");
        s.validate(s.p, p, 0, PAGE);
        // collapse_full_of_compound
        let mut s = new(KernelProfile::v6_18());
        let p = anon_area(&mut s, 1);
        s.thp_at(s.p, p);
        s.madvise(s.p, p, PAGE, Advice::NoHugePage).unwrap();
        s.madvise(s.p, p, PMD, Advice::NoHugePage).unwrap();
        assert!(run(&mut s, ctx, p));
        s.validate(s.p, p, 0, PMD);
        assert_eq!(s.k.folios.len(), 1, "the old THP is freed");
    }
}

#[test]
fn collapse_fork_and_fork_compound_collapse_in_the_child() {
    for ctx in [CollapseContext::Khugepaged, CollapseContext::Madvise] {
        let mut s = new(KernelProfile::v6_18());
        let p = anon_area(&mut s, 1);
        let parent = s.p;
        s.fill(parent, p, 0, PAGE);
        let child = s.fork(parent);
        s.fill(child, p, PAGE, 2 * PAGE);
        s.p = child;
        assert!(run(&mut s, ctx, p));
        s.validate(child, p, 0, 2 * PAGE);
        assert!(!huge(&s, parent, p, 1), "the parent keeps its small page");
        s.validate(parent, p, 0, PAGE);

        let mut s = new(KernelProfile::v6_18());
        let p = anon_area(&mut s, 1);
        let parent = s.p;
        s.thp_at(parent, p);
        let child = s.fork(parent);
        s.madvise(child, p, PAGE, Advice::NoHugePage).unwrap();
        s.madvise(child, p, PMD, Advice::NoHugePage).unwrap();
        s.fill(child, p, 0, PAGE);
        s.k.sysfs_write("khugepaged/max_ptes_shared", "511")
            .unwrap();
        s.p = child;
        assert!(run(&mut s, ctx, p));
        s.validate(child, p, 0, PMD);
        assert!(huge(&s, parent, p, 1));
    }
}

// ---- the linux-mm case ----

/// Builds the linux-mm case (see linux_mm_case.rs) with max_ptes_shared=0, max_ptes_none=255,
/// runs khugepaged and returns (collapsed, last scan result, pages in use before, after).
fn linux_mm_case_khugepaged(profile: KernelProfile) -> (bool, ScanResult, usize, usize) {
    let mut s = new(profile);
    s.k.sysfs_write("khugepaged/max_ptes_shared", "0").unwrap();
    s.k.sysfs_write("khugepaged/max_ptes_none", "255").unwrap();
    let p = anon_area(&mut s, 1);
    let parent = s.p;
    s.thp_at(parent, p);
    let child = s.fork(parent);
    for pid in [parent, child] {
        s.madvise(pid, p, PAGE, Advice::DontNeed).unwrap();
        s.madvise(pid, p + 257 * PAGE, 255 * PAGE, Advice::DontNeed)
            .unwrap();
    }
    s.write(parent, p, 1);
    let pages = |s: &Sys| s.k.folios.iter().map(|(_, f)| f.nr_pages()).sum::<usize>();
    let before = pages(&s);
    let collapsed = khugepaged_collapse(&mut s, parent, p, 1);
    let result =
        s.k.collapse_log()
            .iter()
            .find(|r| r.stage == CollapseStage::ScanPmd)
            .unwrap()
            .result;
    (collapsed, result, before, pages(&s))
}

#[test]
fn linux_mm_case_collapses_only_under_the_6_12_false_negative() {
    let (collapsed, result, before, after) = linux_mm_case_khugepaged(KernelProfile::v6_12());
    assert!(collapsed);
    assert_eq!(result, ScanResult::Succeed);
    // Before: the 512-page THP (still allocated, partly mapped) + the parent's small page.
    // After: a new 512-page THP in the parent; the child still maps 256 pages of the old one,
    // which stays allocated whole until the deferred-split shrinker runs.
    assert_eq!((before, after), (513, 1024));
    for profile in [KernelProfile::v6_1(), KernelProfile::v6_18()] {
        let (collapsed, result, before, after) = linux_mm_case_khugepaged(profile);
        assert!(!collapsed);
        assert_eq!(result, ScanResult::ExceedSharedPte);
        assert_eq!(before, after);
    }
}
