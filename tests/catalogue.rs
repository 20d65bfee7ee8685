//! The khugepaged.c catalogue as libtest-mimic trials: one per (backend, context, mem_type,
//! test), named like `model/khugepaged:anon/collapse_max_ptes_shared` (6.18),
//! `model@6.12/s2/...` (other profiles, `-s` orders) and
//! `host/khugepaged:anon/collapse_max_ptes_shared`; the 7.3 selftest's catalogue as
//! `model@RELEASE/7.3/...` (its mthp_khugepaged cases with `-c 4`, `-c 5` beside `-s 4`,
//! and `-c 2`). Host trials
//! run this machine's kernel (root, THP and MADV_COLLAPSE needed) in the deterministic
//! khugepaged mode, with the catalogue of its era, and are listed as ignored, with the
//! reason, elsewhere.

use harness::catalogue::{
    test_table_of, Catalogue, Context, Env, FileInfo, KhugepagedMode, SKIPPED_ON_TMPFS,
};
use harness::host::isolate::{run_case_retrying_races, HostRunOptions};
use harness::model_backend::ModelBackend;
use harness::runner::all_cases;
use harness::runner::{run_case, Case, CaseResult, Outcome};
use libtest_mimic::{Arguments, Failed, Trial};
use model::KernelProfile;

/// Whether khugepaged.c itself prints "tmpfs... Skip" for this case (file tests on tmpfs).
fn skipped_on_tmpfs(case: &Case) -> bool {
    matches!(case, Case::Test(e) if e.mem.is_file() && SKIPPED_ON_TMPFS.contains(&e.name))
}

/// Turns a case result into a trial verdict; `expect_skip` for the selftest's own skips.
fn verdict(r: &CaseResult, expect_skip: bool) -> Result<(), Failed> {
    match &r.outcome {
        Outcome::Pass if expect_skip => Err(Failed::from(
            "expected khugepaged.c's tmpfs skip, but the case ran",
        )),
        Outcome::Pass => Ok(()),
        Outcome::Skip(_) if expect_skip => Ok(()),
        Outcome::Skip(reason) => Err(Failed::from(format!("unexpected skip: {reason}"))),
        Outcome::Fail(why) => {
            let text = harness::report::kernel_case(r, false);
            Err(Failed::from(format!("{why}\n{text}")))
        }
    }
}

/// The `-s` orders the recorded fixtures use (`-s 2 all:anon`, `-s 4 all:shmem`), and none.
const ANON_ORDERS: [u8; 3] = [0, 2, 4];

/// Model trials for every case, `-s` order and khugepaged mode: `model/...` on 6.18,
/// `model@RELEASE/...` on the first release of every other distinct behaviour (the catalogue
/// must pass under every profile); `/s2/`, `/s4/` after the prefix for the mTHP orders;
/// `model-deterministic...` with khugepaged woken one pass at a time inside the waits, as the
/// host's deterministic mode runs it.
fn model_trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for profile in KernelProfile::eras() {
        let release = if profile == KernelProfile::v6_18() {
            String::new()
        } else {
            format!("@{}", profile.name)
        };
        let prefix = format!("model{release}");
        for mode in [KhugepagedMode::Selftest, KhugepagedMode::Deterministic] {
            let backend = match mode {
                KhugepagedMode::Selftest => "model",
                KhugepagedMode::Deterministic => "model-deterministic",
            };
            for anon_order in ANON_ORDERS {
                let order = match anon_order {
                    0 => String::new(),
                    n => format!("/s{n}"),
                };
                let name = format!("{backend}{release}{order}");
                let env = Env {
                    anon_order,
                    finfo: Some(FileInfo::model_tmpfs("advise")),
                    khugepaged: mode,
                    ..Env::default()
                };
                trials.extend(model_trials_for(&name, profile.clone(), &env, cases_618()));
            }
        }
        // The 7.3 selftest, in its own khugepaged mode (the CLI's default).
        for anon_order in ANON_ORDERS {
            let mut name = format!("{prefix}/7.3");
            if anon_order != 0 {
                name = format!("{name}/s{anon_order}");
            }
            let env = Env {
                anon_order,
                finfo: Some(FileInfo::model_tmpfs("advise")),
                catalogue: Catalogue::V7_3,
                // Above the -s order: faults of that size or larger are already folios at
                // least as large, which khugepaged leaves alone (SCAN_PTE_MAPPED_HUGEPAGE), in
                // C as here.
                collapse_order: 4.max(anon_order + 1),
                ..Env::default()
            };
            trials.extend(model_trials_for(
                &name,
                profile.clone(),
                &env,
                cases_of(Catalogue::V7_3),
            ));
        }
        // mthp_khugepaged at another order.
        let env = Env {
            catalogue: Catalogue::V7_3,
            collapse_order: 2,
            ..Env::default()
        };
        let mthp = cases_of(Catalogue::V7_3)
            .into_iter()
            .filter(|c| matches!(c, Case::Test(e) if e.context == Context::MthpKhugepaged))
            .collect();
        trials.extend(model_trials_for(
            &format!("{prefix}/7.3/c2"),
            profile.clone(),
            &env,
            mthp,
        ));
    }
    trials
}

/// The 6.18 catalogue's cases and this project's extras (written in its style).
fn cases_618() -> Vec<Case> {
    let mut cases = cases_of(Catalogue::V6_18);
    cases.extend(
        all_cases()
            .into_iter()
            .filter(|c| matches!(c, Case::Extra(_))),
    );
    cases
}

/// alloc_at_fault and a catalogue's TEST() list.
fn cases_of(c: Catalogue) -> Vec<Case> {
    let mut cases = vec![Case::AllocAtFault];
    cases.extend(test_table_of(c).into_iter().map(Case::Test));
    cases
}

/// The mthp_khugepaged context fails before 7.2 as such a kernel would: khugepaged never
/// builds the size; only collapse_empty, which wants nothing collapsed, passes (before 6.8
/// too, where the hugepages-<N>kB/enabled it would set does not exist and the selftest's
/// thp_write_settings leaves it out).
fn mthp_fails_on(profile: &KernelProfile, case: &Case) -> bool {
    let Case::Test(e) = case else { return false };
    e.context == Context::MthpKhugepaged
        && !profile.khugepaged_mthp_collapse
        && e.name != "collapse_empty"
}

/// The model's file tests use a tmpfs directory mounted huge=advise, as the selftest asks.
fn model_trials_for(
    prefix: &str,
    profile: KernelProfile,
    env: &Env,
    cases: Vec<Case>,
) -> Vec<Trial> {
    cases
        .into_iter()
        .map(|case| {
            let env = env.clone();
            let profile = profile.clone();
            let expect_skip = skipped_on_tmpfs(&case);
            let expect_fail = mthp_fails_on(&profile, &case);
            let trial = Trial::test(format!("{prefix}/{}", case.id()), move || {
                let mut b = ModelBackend::new(profile);
                b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
                let r = run_case(&mut b, &env, &case);
                if let Err(v) = b.k.check_invariants() {
                    return Err(Failed::from(format!(
                        "model invariants broken after the case:\n{v}"
                    )));
                }
                if expect_fail {
                    return match &r.outcome {
                        Outcome::Fail(_) => Ok(()),
                        o => Err(Failed::from(format!(
                            "a kernel without mTHP collapse must fail this case, got {o:?}"
                        ))),
                    };
                }
                verdict(&r, expect_skip)
            });
            if expect_skip {
                trial
                    .with_kind("skipped by khugepaged.c on tmpfs")
                    .with_ignored_flag(true)
            } else {
                trial
            }
        })
        .collect()
}

fn host_trials() -> Vec<Trial> {
    // What a killed run left is restored first; a journal that cannot be used makes every
    // host trial fail (with the reason) instead of hiding behind "ignored".
    let unsupported = match harness::host::isolate::preflight() {
        harness::host::isolate::Preflight::Ready(Some(msg)) => {
            eprintln!("khugepaged: {msg}");
            None
        }
        harness::host::isolate::Preflight::Ready(None) => None,
        harness::host::isolate::Preflight::SkipAll(reason) => Some(reason),
        harness::host::isolate::Preflight::Broken(e) => {
            eprintln!("khugepaged: {e}");
            None
        }
    };
    let opts = HostRunOptions {
        exe: env!("CARGO_BIN_EXE_khugepaged").into(),
        swapfile: true,
        // File cases get a private tmpfs mounted huge=advise (the selftest's tmpfs setup).
        private_tmpfs: true,
        trace: false,
    };
    // The catalogue of this kernel's era (7.3's from 7.2), its mthp_khugepaged at -c 4.
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let catalogue = Catalogue::for_kernel(KernelProfile::for_release(&release).ok().as_ref());
    let cases = match catalogue {
        Catalogue::V6_18 => cases_618(),
        c => cases_of(c),
    };
    cases
        .into_iter()
        .map(|case| {
            let opts = opts.clone();
            let expect_skip = skipped_on_tmpfs(&case);
            let trial = Trial::test(format!("host/{}", case.id()), move || {
                // khugepaged acts only inside the waits: the same answer every run.
                let env = Env {
                    khugepaged: KhugepagedMode::Deterministic,
                    catalogue,
                    collapse_order: 4,
                    ..Env::default()
                };
                let r = run_case_retrying_races(&case, &env, &opts);
                verdict(&r, expect_skip)
            });
            match (&unsupported, expect_skip) {
                (Some(reason), _) => trial
                    .with_kind(format!("host: {reason}"))
                    .with_ignored_flag(true),
                (None, true) => trial
                    .with_kind("skipped by khugepaged.c on tmpfs")
                    .with_ignored_flag(true),
                (None, false) => trial,
            }
        })
        .collect()
}

/// The model trials run each catalogue on [`KernelProfile::eras`], the first release of every
/// combination of switches. That covers every profile only while a release's profile is its
/// era's in everything but its name: this trial fails when a profile gains a field that
/// differs inside an era (then that release needs its own trials).
fn every_profile_is_run_by_its_era() -> Trial {
    Trial::test("model/profiles/every-release-runs-as-its-era", || {
        let eras = KernelProfile::eras();
        for p in KernelProfile::all() {
            let era = eras
                .iter()
                .rev()
                .find(|e| e.release <= p.release)
                .ok_or_else(|| Failed::from(format!("{}: no era at or before it", p.name)))?;
            let mut as_era = p.clone();
            as_era.name = era.name;
            as_era.release = era.release;
            if &as_era != era {
                return Err(Failed::from(format!(
                    "{}: its profile differs from its era's ({}), which the catalogue trials \
                     run instead:\n{:?}\n{:?}",
                    p.name, era.name, p, era
                )));
            }
        }
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = model_trials();
    trials.push(every_profile_is_run_by_its_era());
    trials.extend(host_trials());
    libtest_mimic::run(&args, trials).exit();
}
