//! UI tests of the macros (trybuild): what compiles, and the exact errors of what does not.
//!
//! The `.stderr` files are blessed on rustc 1.95 (the toolchain of the build machine), so the
//! test runs only there. Re-bless after a deliberate change with
//! `TRYBUILD=overwrite cargo test --all-features --test macros_ui`, and review the diff.
#![cfg(feature = "macros")]

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "the .stderr files are blessed on rustc 1.95"
)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    // The rmcp form of `#[requires_scopes]` expands to `mcp_oauth`'s rmcp glue.
    if cfg!(feature = "rmcp") {
        t.pass("tests/ui/pass_rmcp/*.rs");
    }
    t.compile_fail("tests/ui/fail/*.rs");
}
