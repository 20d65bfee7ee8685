//! The khugepaged.c catalogue as libtest-mimic trials: one per (backend, context, mem_type,
//! test), named like `model/khugepaged:anon/collapse_max_ptes_shared`.

use harness::catalogue::{DirKind, Env, FileInfo, MemType, SKIPPED_ON_TMPFS};
use harness::cli::{select_cases, Options};
use harness::model_backend::ModelBackend;
use harness::report::Format;
use harness::runner::{run_case, Case, Outcome};
use libtest_mimic::{Arguments, Failed, Trial};
use model::KernelProfile;

fn model_trials() -> Vec<Trial> {
    let opts = Options {
        anon_order: 0,
        contexts: harness::catalogue::Context::ALL.to_vec(),
        mems: harness::catalogue::MemType::ALL.to_vec(),
        dir: None,
        backend: harness::cli::BackendChoice::Model,
        profile: None,
        format: Format::Kernel,
        read_only_thp_for_fs: false,
        swapfile: true,
    };
    // The model's file tests use a tmpfs directory mounted huge=advise, as the selftest asks.
    let env = Env {
        anon_order: 0,
        finfo: Some(FileInfo::new(
            "/model-tmpfs",
            DirKind::Tmpfs {
                huge: "advise".into(),
            },
        )),
    };
    select_cases(&opts)
        .into_iter()
        .map(|case| {
            let env = env.clone();
            // The selftest itself skips these on tmpfs: list them as ignored, with the reason.
            let skipped = matches!(case, Case::Test(e) if e.mem == MemType::File && SKIPPED_ON_TMPFS.contains(&e.name));
            let trial = Trial::test(format!("model/{}", case.id()), move || {
                let mut b = ModelBackend::new(KernelProfile::v6_18());
                b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
                let r = run_case(&mut b, &env, &case);
                if let Err(v) = b.k.check_invariants() {
                    return Err(Failed::from(format!(
                        "model invariants broken after the case:\n{v}"
                    )));
                }
                match &r.outcome {
                    Outcome::Pass if skipped => Err(Failed::from("expected khugepaged.c's tmpfs skip, but the case ran")),
                    Outcome::Pass => Ok(()),
                    Outcome::Skip(_) if skipped => Ok(()),
                    Outcome::Skip(reason) => Err(Failed::from(format!("unexpected skip: {reason}"))),
                    Outcome::Fail(why) => {
                        let text = harness::report::kernel_case(&r, false);
                        Err(Failed::from(format!("{why}\n{text}")))
                    }
                }
            });
            if skipped {
                trial.with_kind("skipped by khugepaged.c on tmpfs").with_ignored_flag(true)
            } else {
                trial
            }
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    libtest_mimic::run(&args, model_trials()).exit();
}
