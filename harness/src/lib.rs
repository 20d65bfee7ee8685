//! The khugepaged selftest harness: the catalogue of tools/testing/selftests/mm/khugepaged.c
//! written once against a [`backend::Backend`], a model backend, a host backend, the runner
//! and the reports.

pub mod backend;
pub mod catalogue;
pub mod cli;
pub mod crosscheck;
pub mod host;
pub mod model_backend;
pub mod page_map;
pub mod report;
pub mod runner;
pub mod steps;
pub mod thp_settings;
pub mod trace;
