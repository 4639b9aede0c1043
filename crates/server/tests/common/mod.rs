//! The suites' helpers now live in the test kit (`crates/testkit`); this module keeps the
//! names suites written against `tests/common` use. New suites import `featherstore_testkit`.
#![allow(unused_imports)] // each test binary uses its own part of this

pub use featherstore_testkit::certs;
pub use featherstore_testkit::*;
