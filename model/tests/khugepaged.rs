//! mm/khugepaged.c behaviours the mutation run (ci/mutants.sh) found unpinned: when the thread
//! runs, which MMs it scans, and the per-PTE rules of its scan and collapse. Each test names the
//! kernel function it mirrors and fails when the model's rule for it is bent.

mod common;
use common::*;
use model::madvise::Advice;
use model::KernelProfile;

/// An MM registered with khugepaged: MADV_HUGEPAGE under enabled=madvise on an anonymous VMA
/// that has an anon_vma (`khugepaged_enter_vma` from `hugepage_madvise`).
fn registered(profile: KernelProfile) -> Sys {
    let mut s = Sys::new(profile);
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.write(p, BASE, 1);
    s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
    assert_eq!(s.k.khugepaged_mm_list(), &[p]);
    s
}

/// Whether the khugepaged thread runs: with one registered MM of one 2 MiB VMA, a running
/// thread completes a full scan on its first wake-up; a stopped one never does.
fn thread_runs(s: &mut Sys) -> bool {
    let before = s.k.khugepaged_state.full_scans;
    s.step("khugepaged", |k| k.khugepaged_run_full_scans(1, 4));
    s.k.khugepaged_state.full_scans > before
}

/// `start_stop_khugepaged` stops the thread while `hugepage_pmd_enabled()` is false: no PMD
/// size enabled for anonymous memory (the global `enabled` through `inherit`, or the 2 MiB
/// size's own setting) and none for shmem. A registered MM is then not scanned, and
/// `full_scans` stays still.
#[test]
fn khugepaged_stops_while_no_pmd_size_is_enabled() {
    let mut s = registered(KernelProfile::v6_18());
    assert!(thread_runs(&mut s));
    s.k.sysfs_write("enabled", "never").unwrap();
    assert!(!thread_runs(&mut s));
    // The 2 MiB size's own setting counts even with the global one at never.
    s.k.sysfs_write("hugepages-2048kB/enabled", "madvise")
        .unwrap();
    assert!(thread_runs(&mut s));
    s.k.sysfs_write("hugepages-2048kB/enabled", "inherit")
        .unwrap();
    assert!(!thread_runs(&mut s));
    // So does shmem's PMD size (`shmem_hpage_pmd_enabled`).
    s.k.sysfs_write("shmem_enabled", "advise").unwrap();
    assert!(thread_runs(&mut s));
}

/// Before 7.2 `hugepage_pmd_enabled()` starts with `IS_ENABLED(CONFIG_READ_ONLY_THP_FOR_FS) &&
/// hugepage_global_enabled()`: with the config, the global setting at madvise or always keeps
/// the thread running even when the anonymous 2 MiB size is off; without it, or with the
/// global setting at never, the thread stops.
#[test]
fn the_read_only_thp_for_fs_config_keeps_khugepaged_running_before_7_2() {
    for profile in [KernelProfile::v6_12(), KernelProfile::v6_18()] {
        for config in [false, true] {
            let mut s = registered(profile.clone());
            s.k.read_only_thp_for_fs = config;
            s.k.sysfs_write("hugepages-2048kB/enabled", "never")
                .unwrap();
            assert_eq!(thread_runs(&mut s), config, "{profile} config {config}");
            s.k.sysfs_write("enabled", "always").unwrap();
            assert_eq!(thread_runs(&mut s), config, "{profile} config {config}");
            s.k.sysfs_write("enabled", "never").unwrap();
            assert!(!thread_runs(&mut s), "{profile} config {config}");
        }
    }
}

/// `khugepaged_fork` registers the child of a registered MM (dup_mmap copies MMF_VM_HUGEPAGE
/// and adds a slot), and `__khugepaged_exit` takes an exiting MM's slot off the list at once
/// when khugepaged is not scanning it at that moment.
#[test]
fn a_forked_child_joins_the_scan_list_and_leaves_it_at_exit() {
    let mut s = registered(KernelProfile::v6_18());
    let a = s.p;
    // A full scan leaves the cursor at the list head, on no MM.
    assert!(thread_runs(&mut s));
    let b = s.fork(a);
    let c = s.fork(a);
    assert_eq!(s.k.khugepaged_mm_list(), &[a, b, c]);
    s.step("exit", |k| k.exit(b)).unwrap();
    assert_eq!(s.k.khugepaged_mm_list(), &[a, c]);
    s.step("exit", |k| k.exit(a)).unwrap();
    assert_eq!(s.k.khugepaged_mm_list(), &[c]);
}

/// `__khugepaged_exit` on the MM khugepaged is in the middle of (`khugepaged_scan.mm_slot`)
/// leaves its slot on the list; the next wake-up finds the MM gone, frees the slot and goes on
/// to the next MM (`khugepaged_scan_mm_slot`'s exit path): no full scan is counted for it.
#[test]
fn an_mm_exiting_mid_scan_keeps_its_slot_until_the_scan_reaches_it() {
    for profile in [KernelProfile::v6_1(), KernelProfile::v6_18()] {
        let mut s = registered(profile);
        let a = s.p;
        let b = s.fork(a);
        let c = s.fork(a);
        // 512 pages a wake-up: the first stops in `a` after its one PMD range.
        s.k.sysfs_write("khugepaged/pages_to_scan", "512").unwrap();
        s.step("khugepaged", |k| {
            k.khugepaged_wake();
        });
        assert_eq!(s.k.khugepaged_state.cursor.map(|(p, _)| p), Some(a));
        let full_scans = s.k.khugepaged_state.full_scans;
        s.step("exit", |k| k.exit(a)).unwrap();
        assert_eq!(s.k.khugepaged_mm_list(), &[a, b, c]);
        s.step("khugepaged", |k| {
            k.khugepaged_wake();
        });
        assert_eq!(s.k.khugepaged_mm_list(), &[b, c]);
        assert_eq!(s.k.khugepaged_state.full_scans, full_scans);
        assert_eq!(s.k.khugepaged_state.cursor.map(|(p, _)| p), Some(b));
        // An MM the cursor is not on leaves at once.
        s.step("exit", |k| k.exit(c)).unwrap();
        assert_eq!(s.k.khugepaged_mm_list(), &[b]);
    }
}

/// The collapse records' contract (not a kernel behaviour: the model's own report of each
/// `hpage_collapse_scan_pmd` and `collapse_huge_page`): with `decision_detail` on, a record
/// holds the 512 pages of its range before and after the step; off, as in the harness's
/// selftest runs, it holds the result and the counts only, and no picture is taken.
#[test]
fn collapse_records_carry_pictures_only_with_decision_detail() {
    for detail in [true, false] {
        let mut s = Sys::v618();
        s.k.decision_detail = detail;
        let p = s.p;
        s.mmap_anon(p, BASE, PMD);
        s.fill(p, BASE, 0, PMD);
        s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
        s.step("khugepaged", |k| k.khugepaged_run_full_scans(1, 4));
        assert_eq!(s.k.khugepaged_state.pages_collapsed, 1);
        let log = s.k.collapse_log();
        assert_eq!(log.len(), 2, "{log:?}");
        for r in log {
            assert_eq!(r.result, model::scan_result::ScanResult::Succeed);
            let pages = if detail { 512 } else { 0 };
            assert_eq!(r.before.pages.len(), pages, "{r:?}");
            assert_eq!(r.after.pages.len(), pages, "{r:?}");
            assert_eq!(r.folios.is_empty(), !detail, "{r:?}");
        }
        if detail {
            // The scan only looks; the collapse leaves one PMD-mapped THP.
            assert_eq!(log[0].before, log[0].after);
            assert_ne!(log[1].before, log[1].after);
        }
    }
}

/// khugepaged checks the VMA (`thp_vma_allowable_order`) in `khugepaged_scan_mm_slot`, then
/// scans (`hpage_collapse_scan_pmd`, which before 7.2 asks no more about orders) and, after
/// dropping the mmap lock, revalidates in `collapse_huge_page`. THP turned off in that window
/// leaves the scan saying go and `hugepage_vma_revalidate` refusing with SCAN_VMA_CHECK; the
/// range stays as it was.
#[test]
fn thp_disabled_after_the_vma_check_fails_the_revalidation() {
    use model::khugepaged::{CollapseContext, CollapseStage};
    use model::scan_result::ScanResult;
    let mut s = Sys::v618();
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.fill(p, BASE, 0, PMD);
    s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
    s.k.sysfs_write("enabled", "never").unwrap();
    let r = s.step("scan", |k| {
        k.hpage_collapse_scan_pmd(p, BASE, CollapseContext::Khugepaged)
    });
    assert_eq!(r, ScanResult::VmaCheck);
    let stages: Vec<_> =
        s.k.collapse_log()
            .iter()
            .map(|r| (r.stage, r.result))
            .collect();
    assert_eq!(
        stages,
        [
            (CollapseStage::ScanPmd, ScanResult::Succeed),
            (CollapseStage::CollapseHugePage, ScanResult::VmaCheck)
        ]
    );
    assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 0);
    s.validate(p, BASE, 0, PMD);
}

/// With mTHP collapse (7.2+), when khugepaged may build orders other than the PMD's,
/// `collapse_scan_pmd` raises max_ptes_none to KHUGEPAGED_MAX_PTES_LIMIT (511) for its scan
/// and leaves each order's own limit to `mthp_collapse`. A page table whose 512 PTEs are all
/// none still exceeds it: SCAN_EXCEED_NONE_PTE after 512 none PTEs.
#[test]
fn with_mthp_collapse_an_empty_page_table_still_exceeds_max_ptes_none() {
    use model::khugepaged::CollapseStage;
    use model::scan_result::ScanResult;
    let mut s = Sys::new(KernelProfile::for_release("7.3").unwrap());
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.fill(p, BASE, 0, PAGE);
    s.k.sysfs_write("enabled", "never").unwrap();
    s.k.sysfs_write("hugepages-64kB/enabled", "madvise")
        .unwrap();
    s.madvise(p, BASE, PMD, Advice::HugePage).unwrap();
    s.madvise(p, BASE, PAGE, Advice::DontNeed).unwrap();
    s.step("khugepaged", |k| k.khugepaged_run_full_scans(1, 4));
    let scan =
        s.k.collapse_log()
            .iter()
            .rfind(|r| r.stage == CollapseStage::ScanPmd)
            .expect("the range was scanned");
    assert_eq!(
        (scan.result, scan.none_or_zero),
        (ScanResult::ExceedNonePte, 512)
    );
}

/// `hpage_collapse_scan_file` counts the swap entries of a shmem range (the page cache holds
/// swap entries for swapped-out shmem pages) against max_ptes_swap for khugepaged only:
/// khugepaged refuses a range with more than max_ptes_swap of them (SCAN_EXCEED_SWAP_PTE) and
/// collapses one with exactly that many; MADV_COLLAPSE collapses either, swapping them in
/// (`collapse_file`'s `shmem_get_folio`). The decision record counts present pages, swap
/// entries and holes (none) apart.
#[test]
fn shmem_swap_entries_count_against_max_ptes_swap_for_khugepaged_only() {
    use model::scan_result::ScanResult;
    for profile in [KernelProfile::v6_1(), KernelProfile::v6_18()] {
        let name = profile.name;
        // Registered with khugepaged through an anonymous VMA elsewhere (khugepaged scans
        // every VMA of a registered MM).
        let mut s = registered(profile);
        s.step("swapon", |k| k.swapon(1024)).unwrap();
        s.k.sysfs_write("khugepaged/max_ptes_swap", "1").unwrap();
        let p = s.p;
        // Two shmem ranges of small pages (shmem_enabled never), two pages of each swapped
        // out; then advised.
        let mut ranges = Vec::new();
        for n in [2u64, 4] {
            let (_, a) = s.memfd_shared(p, BASE + n * PMD, PMD);
            s.fill(p, a, 0, PMD);
            s.madvise(p, a + 8 * PAGE, 2 * PAGE, Advice::PageOut)
                .unwrap();
            ranges.push(a);
        }
        let (a, b) = (ranges[0], ranges[1]);
        assert_eq!(s.k.swap_device().unwrap().in_use(), 4, "{name}");
        s.k.sysfs_write("shmem_enabled", "advise").unwrap();
        s.madvise(p, a, PMD, Advice::HugePage).unwrap();
        s.madvise(p, b, PMD, Advice::HugePage).unwrap();
        // MADV_COLLAPSE ignores the limit.
        s.step("collapse", |k| k.madvise_collapse(p, a, PMD))
            .unwrap();
        assert_eq!(s.k.smaps(p, a).unwrap().shmem_pmd_mapped, 2048, "{name}");
        s.validate(p, a, 0, PMD);
        // khugepaged: two swap entries are more than one.
        let exceeded = s.k.vmstat_read("thp_scan_exceed_swap_pte").unwrap();
        s.step("khugepaged", |k| k.khugepaged_run_full_scans(1, 4));
        let on_b = |s: &Sys| -> Vec<_> {
            s.k.collapse_log()
                .iter()
                .filter(|r| r.addr == b)
                .map(|r| (r.result, r.present, r.swap, r.none_or_zero))
                .collect()
        };
        // The scan stops at the second swap entry: 8 pages and 2 entries counted.
        assert_eq!(on_b(&s), [(ScanResult::ExceedSwapPte, 8, 2, 502)], "{name}");
        assert_eq!(
            s.k.vmstat_read("thp_scan_exceed_swap_pte").unwrap(),
            exceeded + 1,
            "{name}"
        );
        assert_eq!(s.k.smaps(p, b).unwrap().shmem_pmd_mapped, 0, "{name}");
        // Exactly max_ptes_swap of them: collapsed.
        s.k.sysfs_write("khugepaged/max_ptes_swap", "2").unwrap();
        s.step("khugepaged", |k| k.khugepaged_run_full_scans(1, 4));
        assert_eq!(on_b(&s)[1..], [(ScanResult::Succeed, 510, 2, 0)], "{name}");
        assert_eq!(s.k.swap_device().unwrap().in_use(), 0, "{name}");
        s.validate(p, b, 0, PMD);
    }
}

/// `retract_page_tables` after `collapse_file`: every other MM mapping the file range (shared,
/// no anon_vma, the aligned 2 MiB inside the VMA) loses its emptied PTE table, so its next
/// fault there maps the new THP by a PMD (`finish_fault`/`filemap_map_pages` install a PMD
/// only where the PMD is none). MADV_COLLAPSE did that in every MM from 6.6; before, only in
/// its own (`retract_page_tables_every_mm`), so the other process refaults by PTEs.
#[test]
fn collapse_file_retracts_the_emptied_page_tables_of_other_mms() {
    use model::mmap::MapKind;
    for (profile, other_pmd_mapped, len) in [
        (KernelProfile::v6_1(), false, PMD),
        (KernelProfile::for_release("6.6").unwrap(), true, PMD),
        (KernelProfile::v6_18(), true, PMD),
        (KernelProfile::v6_18(), true, 2 * PMD),
    ] {
        let name = profile.name;
        let mut s = Sys::new(profile);
        let a = s.p;
        // One or two PMD ranges of the file mapped; the first one is collapsed.
        let (_, at) = s.memfd_shared(a, BASE, len);
        s.fill(a, at, 0, PMD);
        s.madvise(a, at, len, Advice::HugePage).unwrap();
        let b = s.fork(a);
        // The other process maps every page by PTEs too.
        for i in 0..512 {
            s.read(b, at + i * PAGE);
        }
        s.k.sysfs_write("shmem_enabled", "advise").unwrap();
        s.step("collapse", |k| k.madvise_collapse(a, at, PMD))
            .unwrap();
        assert_eq!(s.k.smaps(a, at).unwrap().shmem_pmd_mapped, 2048, "{name}");
        s.read(b, at);
        let b_pmd = s.k.smaps(b, at).unwrap().shmem_pmd_mapped == 2048;
        assert_eq!(b_pmd, other_pmd_mapped, "{name}");
        s.validate(b, at, 0, PMD);
    }
    // A private mapping of the file with an anon_vma (a page was written, COW, then dropped:
    // its PTE table is empty again) keeps its table: retract_page_tables skips VMAs with an
    // anon_vma, so the refault maps by PTEs.
    let mut s = Sys::v618();
    let a = s.p;
    let (fd, shared) = s.memfd_shared(a, BASE, PMD);
    let private = s.mmap_file(a, BASE + 2 * PMD, PMD, MapKind::Private(fd));
    s.fill(a, shared, 0, PMD);
    s.write(a, private, 7);
    s.madvise(a, private, PAGE, Advice::DontNeed).unwrap();
    s.k.sysfs_write("shmem_enabled", "advise").unwrap();
    s.madvise(a, shared, PMD, Advice::HugePage).unwrap();
    s.step("collapse", |k| k.madvise_collapse(a, shared, PMD))
        .unwrap();
    s.read(a, private);
    let sm = s.k.smaps(a, private).unwrap();
    assert_eq!(sm.file_pmd_mapped + sm.shmem_pmd_mapped, 0, "{sm:?}");
}

/// `madvise_collapse` collapses the PMD ranges inside the advised range only: of a populated
/// two-PMD VMA, MADV_COLLAPSE of the first PMD leaves the second PTE-mapped; a range shorter
/// than a PMD collapses nothing and succeeds.
#[test]
fn madvise_collapse_stays_inside_its_range() {
    for profile in [KernelProfile::v6_1(), KernelProfile::v6_18()] {
        let name = profile.name;
        let mut s = Sys::new(profile);
        let p = s.p;
        s.mmap_anon(p, BASE, 2 * PMD);
        s.fill(p, BASE, 0, 2 * PMD);
        s.step("collapse", |k| k.madvise_collapse(p, BASE, PMD))
            .unwrap();
        assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 2048, "{name}");
        s.step("collapse", |k| {
            k.madvise_collapse(p, BASE + PMD, PMD - PAGE)
        })
        .unwrap();
        assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 2048, "{name}");
        s.validate(p, BASE, 0, 2 * PMD);
    }
}

/// ScanPmd decisions per MM in `records`.
fn ranges_scanned(
    records: &[model::khugepaged::CollapseReport],
    pids: [model::Pid; 2],
) -> (usize, usize) {
    let of = |pid| {
        records
            .iter()
            .filter(|r| r.pid == pid && r.stage == model::khugepaged::CollapseStage::ScanPmd)
            .count()
    };
    (of(pids[0]), of(pids[1]))
}

/// A second registered MM after the current one: eight empty 2 MiB ranges but the first
/// page. With max_ptes_none 0 no range of either collapses, so no scan drops the mmap lock
/// and ends an MM's slot early.
fn second_mm(s: &mut Sys) -> [model::Pid; 2] {
    let a = s.p;
    let b = s.step("spawn", |k| k.spawn());
    s.mmap_anon(b, BASE, 8 * PMD);
    s.write(b, BASE, 1);
    s.madvise(b, BASE, 8 * PMD, Advice::HugePage).unwrap();
    assert_eq!(s.k.khugepaged_mm_list(), &[a, b]);
    s.k.sysfs_write("khugepaged/max_ptes_none", "0").unwrap();
    [a, b]
}

fn wake(s: &mut Sys, pages_to_scan: u32) -> Vec<model::khugepaged::CollapseReport> {
    s.k.sysfs_write("khugepaged/pages_to_scan", &pages_to_scan.to_string())
        .unwrap();
    s.step("khugepaged", |k| k.khugepaged_do_scan().to_vec())
}

/// What the first MM's slot costs of one wake-up's budget, measured through the second MM:
/// `khugepaged_do_scan` hands it `pages - cost`, and it scans ranges (1 for its slot, then
/// HPAGE_PMD_NR each) until it reaches that; so it scans three ranges exactly when
/// `pages_to_scan >= cost + 1026`. `setup` builds a fresh machine with both MMs registered,
/// the cursor where the measured wake-up starts.
fn first_mm_cost(setup: impl Fn() -> (Sys, [model::Pid; 2])) -> u32 {
    let b_ranges = |pages| {
        let (mut s, pids) = setup();
        ranges_scanned(&wake(&mut s, pages), pids).1
    };
    let (mut lo, mut hi) = (1026, 1026 + 4096);
    assert!(b_ranges(lo) < 3 && b_ranges(hi) >= 3);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if b_ranges(mid) >= 3 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi - 1026
}

/// `khugepaged_do_scan` spends one budget of `pages_to_scan` per wake-up across MMs: what the
/// first MM's slot used (`khugepaged_scan_mm_slot`: 1 for the slot, HPAGE_PMD_NR a range) is
/// taken off what the next one may scan (`pages - progress`), and the pass goes on to the next
/// MM until the budget is spent, the cursor carrying on from there at the next wake-up.
#[test]
fn one_wakeup_spends_pages_to_scan_across_mms() {
    let mut s = registered(KernelProfile::v6_18());
    let pids = second_mm(&mut s);
    // A: 513. B may use 1535: three ranges (1 + 3 * 512 >= 1535).
    assert_eq!(ranges_scanned(&wake(&mut s, 2048), pids), (1, 3));
    // B's next four ranges (1 + 4 * 512 >= 2048).
    assert_eq!(ranges_scanned(&wake(&mut s, 2048), pids), (0, 4));
    let one_range = || {
        let mut s = registered(KernelProfile::v6_18());
        let pids = second_mm(&mut s);
        (s, pids)
    };
    assert_eq!(first_mm_cost(one_range), 513);
}

/// A VMA khugepaged may not collapse (here MADV_NOHUGEPAGE) costs one page of the budget in
/// `khugepaged_scan_mm_slot`.
#[test]
fn a_vma_khugepaged_skips_costs_one_page_of_the_budget() {
    let cost = first_mm_cost(|| {
        let mut s = registered(KernelProfile::v6_18());
        let a = s.p;
        s.mmap_anon(a, BASE + 4 * PMD, PAGE);
        s.madvise(a, BASE + 4 * PMD, PAGE, Advice::NoHugePage)
            .unwrap();
        let pids = second_mm(&mut s);
        (s, pids)
    });
    assert_eq!(cost, 1 + 512 + 1);
}

/// A cursor left at the end of a VMA's last whole range (the VMA goes on for a page) is not
/// past it (`khugepaged_scan.address > hend` is false), so that VMA costs nothing at the next
/// wake-up: the slot costs 1.
#[test]
fn a_cursor_at_the_end_of_a_vmas_last_range_costs_nothing() {
    let cost = first_mm_cost(|| {
        let mut s = Sys::new(KernelProfile::v6_18());
        let a = s.p;
        s.mmap_anon(a, BASE, PMD + PAGE);
        s.write(a, BASE, 1);
        s.madvise(a, BASE, PMD + PAGE, Advice::HugePage).unwrap();
        let pids = second_mm(&mut s);
        // The budget ends with A's range: the cursor stays in A, at BASE + PMD.
        assert_eq!(ranges_scanned(&wake(&mut s, 513), pids), (1, 0));
        (s, pids)
    });
    assert_eq!(cost, 1);
}

/// From 7.2 a range costs khugepaged's budget only the PTEs its scan looked at, 1 without a
/// PTE table (`cc->progress` in hpage_collapse_scan_pmd), so one wake-up of pages_to_scan P
/// visits about P empty ranges. And khugepaged also collapses mTHPs, so a VMA without a whole
/// PMD range can be one it may collapse: the walk costs nothing there but moves the cursor up
/// to the VMA's first aligned PMD (`hstart`), here past the next VMA, which is then skipped
/// as already passed (`khugepaged_scan.address > hend`), at 1. The slot (1) and that skip (1)
/// leave P - 2 for the empty ranges of the last VMA.
#[test]
fn from_7_2_an_empty_range_costs_one_page_of_the_budget() {
    let mut s = Sys::new(KernelProfile::for_release("7.2").unwrap());
    let a = s.p;
    s.k.sysfs_write("hugepages-64kB/enabled", "always").unwrap();
    // Whole 64 KiB blocks but no whole PMD in either; the first's hstart is past the second.
    // Each with an anon_vma (khugepaged passes over an anonymous VMA without one).
    for (start, len) in [(PAGE, 32 * PAGE), (40 * PAGE, 32 * PAGE)] {
        s.mmap_anon(a, BASE + start, len);
        s.write(a, BASE + start, 1);
    }
    // Eight ranges, the last one populated (its anon_vma registers the MM).
    let last = BASE + 2 * PMD + 7 * PMD;
    s.mmap_anon(a, BASE + 2 * PMD, 8 * PMD);
    s.write(a, last, 1);
    s.madvise(a, BASE + 2 * PMD, 8 * PMD, Advice::HugePage)
        .unwrap();
    assert_eq!(s.k.khugepaged_mm_list(), &[a]);
    let records = wake(&mut s, 6);
    let ranges: Vec<u64> = records
        .iter()
        .filter(|r| r.stage == model::khugepaged::CollapseStage::ScanPmd)
        .map(|r| (r.addr - BASE) / PMD)
        .collect();
    assert_eq!(ranges, [2, 3, 4, 5]);
}

/// From 7.2 a page-cache range that is already a THP costs khugepaged's budget 1
/// (hpage_collapse_scan_file: SCAN_PTE_MAPPED_HUGEPAGE), not HPAGE_PMD_NR as before. A file
/// range always drops the mmap lock, so the slot ends after it and the next slot costs 1: of
/// pages_to_scan 7, four empty anonymous ranges remain on 7.2 and none on 6.18.
#[test]
fn from_7_2_a_page_cache_thp_costs_one_page_of_the_budget() {
    for (release, want) in [("7.2", &[2u64, 3, 4, 5][..]), ("6.18", &[][..])] {
        let mut s = Sys::new(KernelProfile::for_release(release).unwrap());
        let a = s.p;
        s.k.sysfs_write("shmem_enabled", "advise").unwrap();
        s.memfd_shared(a, BASE, PMD);
        s.madvise(a, BASE, PMD, Advice::HugePage).unwrap();
        s.write(a, BASE, 1);
        assert_eq!(s.k.smaps(a, BASE).unwrap().shmem_pmd_mapped, 2048);
        s.mmap_anon(a, BASE + 2 * PMD, 8 * PMD);
        s.write(a, BASE + 9 * PMD, 1);
        s.madvise(a, BASE + 2 * PMD, 8 * PMD, Advice::HugePage)
            .unwrap();
        let records = wake(&mut s, 7);
        let file_scans: Vec<model::scan_result::ScanResult> = records
            .iter()
            .filter(|r| r.stage == model::khugepaged::CollapseStage::ScanFile)
            .map(|r| r.result)
            .collect();
        assert_eq!(
            file_scans,
            [model::scan_result::ScanResult::PteMappedHugepage]
        );
        let ranges: Vec<u64> = records
            .iter()
            .filter(|r| r.stage == model::khugepaged::CollapseStage::ScanPmd)
            .map(|r| (r.addr - BASE) / PMD)
            .collect();
        assert_eq!(ranges, want, "{release}");
    }
}

/// A scan that says go drops the mmap lock for the collapse, whatever the collapse then
/// does (hpage_collapse_scan_pmd sets lock_dropped once mthp_collapse was called), and the
/// slot ends there; the next slot of the same MM costs 1 more. Here 7.2's mTHP walk collapses
/// nothing (the one 64 KiB folio is already an mTHP, max_ptes_none 0 refuses the rest), so
/// the range costs its 512 PTEs, the new slot 1, and of pages_to_scan 518 four empty ranges
/// of the next VMA remain.
#[test]
fn a_scan_that_said_go_ends_the_slot_even_when_nothing_collapsed() {
    let mut s = Sys::new(KernelProfile::for_release("7.2").unwrap());
    let a = s.p;
    s.k.sysfs_write("hugepages-64kB/enabled", "always").unwrap();
    s.k.sysfs_write("khugepaged/max_ptes_none", "0").unwrap();
    s.mmap_anon(a, BASE, PMD);
    s.write(a, BASE, 1);
    s.mmap_anon(a, BASE + 2 * PMD, 8 * PMD);
    s.write(a, BASE + 9 * PMD, 1);
    s.madvise(a, BASE, PMD, Advice::HugePage).unwrap();
    assert_eq!(s.folio(a, BASE).order, 4);
    let records = wake(&mut s, 518);
    let scans: Vec<(u64, model::scan_result::ScanResult)> = records
        .iter()
        .filter(|r| r.stage == model::khugepaged::CollapseStage::ScanPmd)
        .map(|r| ((r.addr - BASE) / PMD, r.result))
        .collect();
    assert_eq!(scans[0], (0, model::scan_result::ScanResult::Succeed));
    assert_eq!(s.folio(a, BASE).order, 4, "nothing collapsed");
    let ranges: Vec<u64> = scans.iter().map(|&(r, _)| r).collect();
    assert_eq!(ranges, [0, 2, 3, 4, 5]);
}

/// `khugepaged_run_full_scans` (the model's form of the selftest's wait for full scans) gives
/// up after exactly `max_wakeups` wake-ups when no full scan can complete (thread stopped).
#[test]
fn waiting_for_full_scans_stops_after_max_wakeups() {
    let mut s = registered(KernelProfile::v6_18());
    s.k.sysfs_write("enabled", "never").unwrap();
    let used = s.step("khugepaged", |k| k.khugepaged_run_full_scans(1, 3));
    assert_eq!(used, 3);
    // A running thread finishes its one-range MM's full scan on the first wake-up.
    s.k.sysfs_write("enabled", "madvise").unwrap();
    let used = s.step("khugepaged", |k| k.khugepaged_run_full_scans(1, 3));
    assert_eq!(used, 1);
}
