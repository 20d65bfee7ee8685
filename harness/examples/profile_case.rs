//! Runs one catalogue case many times on the model, for profiling: `cargo run --release
//! -p harness --example profile_case -- <case id> [iterations]`.

use harness::catalogue::{Env, FileInfo, MemType};
use harness::cli::{select_cases, Options};
use harness::model_backend::ModelBackend;
use harness::runner::run_case;
use model::KernelProfile;

fn main() {
    harness::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(id) = args.first() else {
        eprintln!("usage: profile_case <case id, e.g. khugepaged:anon/collapse_full, or all> [iterations]");
        std::process::exit(2);
    };
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let opts = Options {
        mems: MemType::ALL.to_vec(),
        ..Options::default()
    };
    let env = Env {
        anon_order: 0,
        finfo: Some(FileInfo::model_tmpfs("advise")),
        ..Env::default()
    };
    let cases: Vec<_> = select_cases(&opts)
        .into_iter()
        .filter(|c| id == "all" || &c.id() == id)
        .collect();
    if cases.is_empty() {
        eprintln!("no case {id}");
        std::process::exit(2);
    }
    for _ in 0..n {
        for case in &cases {
            let mut b = ModelBackend::new(KernelProfile::v6_18());
            b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
            run_case(&mut b, &env, case);
        }
    }
}
