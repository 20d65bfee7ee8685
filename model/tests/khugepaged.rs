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
