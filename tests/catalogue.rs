//! The khugepaged.c catalogue as libtest-mimic trials: one per (backend, context, mem_type,
//! test), named like `model/khugepaged:anon/collapse_max_ptes_shared` (6.18),
//! `model@6.12/s2/...` (other profiles, `-s` orders) and
//! `host/khugepaged:anon/collapse_max_ptes_shared`. Host trials run this machine's kernel
//! (root, THP and MADV_COLLAPSE needed) in the deterministic khugepaged mode, and are listed
//! as ignored, with the reason, elsewhere.

use harness::catalogue::{Env, FileInfo, KhugepagedMode, MemType, SKIPPED_ON_TMPFS};
use harness::host::isolate::{run_case_retrying_races, HostRunOptions};
use harness::model_backend::ModelBackend;
use harness::runner::all_cases;
use harness::runner::{run_case, Case, CaseResult, Outcome};
use libtest_mimic::{Arguments, Failed, Trial};
use model::KernelProfile;

/// Whether khugepaged.c itself prints "tmpfs... Skip" for this case (file tests on tmpfs).
fn skipped_on_tmpfs(case: &Case) -> bool {
    matches!(case, Case::Test(e) if e.mem == MemType::File && SKIPPED_ON_TMPFS.contains(&e.name))
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
        let prefix = if profile == KernelProfile::v6_18() {
            "model".to_string()
        } else {
            format!("model@{}", profile.name)
        };
        for mode in [KhugepagedMode::Selftest, KhugepagedMode::Deterministic] {
            for anon_order in ANON_ORDERS {
                let mut name = prefix.clone();
                if mode == KhugepagedMode::Deterministic {
                    name = name.replacen("model", "model-deterministic", 1);
                }
                if anon_order != 0 {
                    name = format!("{name}/s{anon_order}");
                }
                trials.extend(model_trials_for(&name, profile.clone(), anon_order, mode));
            }
        }
    }
    trials
}

fn model_trials_for(
    prefix: &str,
    profile: KernelProfile,
    anon_order: u8,
    khugepaged: KhugepagedMode,
) -> Vec<Trial> {
    // The model's file tests use a tmpfs directory mounted huge=advise, as the selftest asks.
    let env = Env {
        anon_order,
        finfo: Some(FileInfo::model_tmpfs("advise")),
        khugepaged,
    };
    all_cases()
        .into_iter()
        .map(|case| {
            let env = env.clone();
            let profile = profile.clone();
            let expect_skip = skipped_on_tmpfs(&case);
            let trial = Trial::test(format!("{prefix}/{}", case.id()), move || {
                let mut b = ModelBackend::new(profile);
                b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
                let r = run_case(&mut b, &env, &case);
                if let Err(v) = b.k.check_invariants() {
                    return Err(Failed::from(format!(
                        "model invariants broken after the case:\n{v}"
                    )));
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
    all_cases()
        .into_iter()
        .map(|case| {
            let opts = opts.clone();
            let expect_skip = skipped_on_tmpfs(&case);
            let trial = Trial::test(format!("host/{}", case.id()), move || {
                // khugepaged acts only inside the waits: the same answer every run.
                let env = Env {
                    khugepaged: KhugepagedMode::Deterministic,
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

fn main() {
    let args = Arguments::from_args();
    let mut trials = model_trials();
    trials.extend(host_trials());
    libtest_mimic::run(&args, trials).exit();
}
