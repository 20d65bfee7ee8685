//! Scenario files: a kernel developer's own cases as plain text (one user-level operation a
//! line), parsed and validated completely, then run on a backend. The language is documented
//! in fixtures/scenarios/README.md.

pub mod command;
pub mod parse;
pub mod record;
pub mod run;

pub use command::main;

pub use parse::{parse_file, parse_str, ParseError, Scenario};
pub use run::{run_model, run_on, Outcome, ScenarioExt};
