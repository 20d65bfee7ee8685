//! Wall time of the whole khugepaged.c catalogue (all contexts, all memory types, file tests
//! on a tmpfs directory) on the model, in one process. `cargo bench -p harness`.

use std::time::{Duration, Instant};

use harness::catalogue::{Env, FileInfo, MemType};
use harness::cli::{select_cases, Options};
use harness::model_backend::ModelBackend;
use harness::runner::{run_case, Outcome};
use model::KernelProfile;

fn run_all(env: &Env, opts: &Options) -> (Duration, usize, usize) {
    let start = Instant::now();
    let (mut pass, mut other) = (0, 0);
    for case in select_cases(opts) {
        let mut b = ModelBackend::new(KernelProfile::v6_18());
        b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
        match run_case(&mut b, env, &case).outcome {
            Outcome::Pass => pass += 1,
            _ => other += 1,
        }
    }
    (start.elapsed(), pass, other)
}

fn per_case(env: &Env, opts: &Options) {
    let mut v: Vec<(Duration, String)> = select_cases(opts)
        .into_iter()
        .map(|case| {
            let mut b = ModelBackend::new(KernelProfile::v6_18());
            b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
            let t = Instant::now();
            run_case(&mut b, env, &case);
            (t.elapsed(), case.id())
        })
        .collect();
    v.sort();
    for (t, id) in v.iter().rev().take(14) {
        println!("  slowest: {id:<55} {:.2} ms", t.as_secs_f64() * 1e3);
    }
}

fn main() {
    harness::tune_allocator();
    let opts = Options {
        mems: MemType::ALL.to_vec(),
        ..Options::default()
    };
    let env = Env {
        anon_order: 0,
        finfo: Some(FileInfo::model_tmpfs("advise")),
        ..Env::default()
    };
    let mut times = Vec::new();
    let mut counts = (0, 0);
    for _ in 0..20 {
        let (t, pass, other) = run_all(&env, &opts);
        times.push(t);
        counts = (pass, other);
    }
    times.sort();
    per_case(&env, &opts);
    let cases = select_cases(&opts).len();
    println!(
        "whole catalogue on the model ({cases} cases: {} passed, {} skipped by the selftest): \
         min {:.2} ms, median {:.2} ms, max {:.2} ms over {} runs",
        counts.0,
        counts.1,
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}
