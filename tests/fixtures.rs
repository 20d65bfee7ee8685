//! The CI gate for model changes: every trace recorded on a real kernel (fixtures/<release>/)
//! is replayed on the model with the matching profile; any difference fails with a readable
//! diff. Every replay also runs the model's invariant checker after every call and compares
//! the settings header. A fixture that says it depends on something the model does not model
//! is listed as ignored, with that reason; run with `--include-ignored` it is still compared,
//! and only the differences its unmodelled events may cause are forgiven.

use std::path::Path;

use harness::crosscheck::{list_fixtures, replay};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let trials: Vec<Trial> = list_fixtures(&root)
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(&root)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| path.display().to_string());
            // Fixtures that need something the model does not model are known up front.
            let unmodelled = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| harness::trace::parse(&t).ok())
                .map(|(h, _)| h.unmodelled)
                .unwrap_or_default();
            let trial = Trial::test(format!("fixture/{name}"), move || match replay(&path) {
                Ok(_) => Ok(()),
                Err(diff) => Err(Failed::from(diff)),
            });
            if unmodelled.is_empty() {
                trial
            } else {
                trial
                    .with_kind(format!("unmodelled: {}", unmodelled.join("; ")))
                    .with_ignored_flag(true)
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
