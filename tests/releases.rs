//! Release profiles in the harness: `--profile`, `--across-releases`, and the kernel-era
//! behaviour of `-s` and regular-file collapse.

use std::process::Command;

use harness::across::{across, Cause};
use harness::catalogue::{test_table, DirKind, Env, FileInfo, TestEntry};
use harness::extras::extra_table;
use harness::model_backend::ModelBackend;
use harness::runner::{run_case, run_case_traced, Case, Outcome};
use model::{KernelProfile, Switch};

fn khugepaged(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_khugepaged"))
        .args(args)
        .output()
        .expect("run khugepaged");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn test(name: &str, context: &str, mem: &str) -> TestEntry {
    test_table()
        .into_iter()
        .find(|e| e.name == name && e.context.name() == context && e.mem.name() == mem)
        .unwrap_or_else(|| panic!("no test {context}:{mem}/{name}"))
}

fn profile(r: &str) -> KernelProfile {
    KernelProfile::for_release(r).unwrap()
}

#[test]
fn profile_takes_release_numbers_and_strings_and_lists_switches() {
    let (code, stdout, stderr) = khugepaged(&["--profile", "6.12.48+deb13-amd64", "madvise:anon"]);
    assert_eq!(code, 0, "{stderr}");
    // The model runs the newest selftest (7.3's) under any profile unless told otherwise.
    assert!(
        stdout.ends_with(" fail:0 xfail:0 xpass:0 skip:0 error:0\n"),
        "{stdout}"
    );

    let (code, _, stderr) = khugepaged(&["--profile", "5.15"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("older than 6.1") && stderr.contains("6.1 … 7.3"),
        "{stderr}"
    );
    let (code, _, stderr) = khugepaged(&["--profile", "7.4"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a release the model knows"), "{stderr}");

    let (code, stdout, _) = khugepaged(&["--profile", "list"]);
    assert_eq!(code, 0);
    for &s in Switch::ALL {
        assert!(stdout.contains(s.name()), "{} missing", s.name());
    }
    assert!(stdout.contains(
        "6.10  folio_likely_mapped_shared mm/khugepaged: replace page_mapcount() check by folio_likely_mapped_shared()"
    ));
    assert!(stdout.contains(
        "6.8   yes                        mm: thp: introduce multi-size THP sysfs interface"
    ));
}

#[test]
fn s_option_on_a_kernel_without_mthp_faults_order_0_pages() {
    // Before 6.8 there are no hugepages-<N>kB directories: -s 2 changes nothing and anonymous
    // faults stay order 0, as on a real 6.1 kernel.
    let entry = test("collapse_max_ptes_none", "khugepaged", "anon");
    let env = Env {
        anon_order: 2,
        finfo: None,
        ..Env::default()
    };
    for (release, order2, settings16) in [
        ("6.1", false, false),
        ("6.7", false, false),
        ("6.8", true, true),
        ("6.18", true, true),
    ] {
        let p = profile(release);
        let mut b = ModelBackend::new(p.clone());
        let r = run_case_traced(&mut b, &env, &Case::Test(entry), p.name);
        assert_eq!(r.outcome, Outcome::Pass, "{release}: {:?}", r.steps);
        let trace = r.trace.unwrap();
        let first_map = trace
            .lines()
            .find(|l| l.trim_start().starts_with("map("))
            .unwrap();
        assert_eq!(first_map.contains(" o2 "), order2, "{release}: {first_map}");
        assert_eq!(
            first_map.contains(" o0 "),
            !order2,
            "{release}: {first_map}"
        );
        let settings = trace.lines().find(|l| l.starts_with("settings:")).unwrap();
        assert_eq!(
            settings.contains("16kB="),
            settings16,
            "{release}: {settings}"
        );
    }
}

#[test]
fn regular_file_collapse_runs_on_a_disk_dir_from_7_2() {
    let entry = test("collapse_full", "madvise", "file");
    let env = Env {
        anon_order: 0,
        finfo: Some(FileInfo::new(
            "/model-disk",
            DirKind::Disk {
                read_ahead_kb_path: None,
            },
        )),
        ..Env::default()
    };
    for (release, runs) in [
        ("6.1", false),
        ("6.18", false),
        ("7.1", false),
        ("7.2", true),
        ("7.3", true),
    ] {
        let mut b = ModelBackend::new(profile(release));
        b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
        let r = run_case(&mut b, &env, &Case::Test(entry));
        match (&r.outcome, runs) {
            (Outcome::Pass, true) => {}
            (Outcome::Skip(why), false) => {
                assert!(
                    why.contains("CONFIG_READ_ONLY_THP_FOR_FS"),
                    "{release}: {why}"
                )
            }
            (o, _) => panic!("{release}: {o:?}"),
        }
    }
}

#[test]
fn across_releases_names_the_sharing_switch_for_the_linux_mm_case() {
    let entry = extra_table()
        .into_iter()
        .find(|e| e.name == "collapse_shared_thp_first_page_unmapped")
        .unwrap();
    let mut model = |p: &KernelProfile| ModelBackend::new(p.clone());
    let a = across(&Case::Extra(entry), &Env::default(), &mut model);
    assert_eq!(a.rows.len(), model::profile::RELEASES.len());
    let changes: Vec<(String, Cause)> = a
        .changes
        .iter()
        .map(|c| (c.release.to_string(), c.cause.clone()))
        .collect();
    assert_eq!(
        changes,
        [
            (
                "6.10".to_string(),
                Cause::Alone(vec![Switch::KhugepagedSharing])
            ),
            (
                "6.15".to_string(),
                Cause::Alone(vec![Switch::KhugepagedSharing])
            ),
        ]
    );
    let text = harness::across::render(&Case::Extra(entry), &a);
    assert!(text.contains(
        "at 6.15: changed by\n    khugepaged_sharing = folio_maybe_mapped_shared (mm: convert folio_likely_mapped_shared() to folio_maybe_mapped_shared())"
    ), "{text}");

    let (code, stdout, stderr) = khugepaged(&[
        "--extras",
        "--across-releases",
        "--only",
        "collapse_shared_thp_first_page_unmapped",
        "khugepaged:anon",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("at 6.10: changed by\n    khugepaged_sharing"),
        "{stdout}"
    );
}

#[test]
fn across_releases_finds_when_disk_files_start_collapsing() {
    // A regular file on a disk filesystem: skipped without CONFIG_READ_ONLY_THP_FOR_FS until
    // 7.2, collapsed from 7.2.
    let entry = test("collapse_full", "madvise", "file");
    let env = Env {
        anon_order: 0,
        finfo: Some(FileInfo::new(
            "/model-disk",
            DirKind::Disk {
                read_ahead_kb_path: None,
            },
        )),
        ..Env::default()
    };
    let mut model = |p: &KernelProfile| {
        let mut b = ModelBackend::new(p.clone());
        b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
        b
    };
    let a = across(&Case::Test(entry), &env, &mut model);
    let at: Vec<String> = a.changes.iter().map(|c| c.release.to_string()).collect();
    assert_eq!(at, ["7.2"], "{:#?}", a.changes);
    assert_eq!(
        a.changes[0].cause,
        Cause::Alone(vec![Switch::FileThpWithoutReadOnlyConfig])
    );
}

#[test]
fn across_releases_with_s_2_finds_the_mthp_sysfs_change() {
    // The end state is the same PMD THP everywhere; the faults before the collapse are order 0
    // until 6.8 and 16 KiB mTHPs from 6.8. From 7.2 khugepaged's scan also considers the
    // enabled 16 KiB size: the none limit of the scan is lifted and mthp_collapse steps over
    // the blocks that already are 16 KiB folios (SCAN_PTE_MAPPED_HUGEPAGE) before the second
    // half-filled range collapses at PMD order as before.
    let entry = test("collapse_max_ptes_none", "khugepaged", "anon");
    let env = Env {
        anon_order: 2,
        finfo: None,
        ..Env::default()
    };
    let mut model = |p: &KernelProfile| ModelBackend::new(p.clone());
    let a = across(&Case::Test(entry), &env, &mut model);
    let changes: Vec<(String, Cause)> = a
        .changes
        .iter()
        .map(|c| (c.release.to_string(), c.cause.clone()))
        .collect();
    assert_eq!(
        changes,
        [
            ("6.8".to_string(), Cause::Alone(vec![Switch::AnonMthp])),
            (
                "7.2".to_string(),
                Cause::Alone(vec![Switch::KhugepagedMthpCollapse])
            )
        ]
    );
    let text = harness::across::render(&Case::Test(entry), &a);
    assert!(text.contains("  6.8   pass\n        page map 1 of 2 differs: map(0x40000000+512): 0-3 pte f0[0..] o2"), "{text}");
    assert!(
        text.contains("khugepaged collapse_huge_page SCAN_PTE_MAPPED_HUGEPAGE ×63"),
        "{text}"
    );
}
