//! The query of `GET /authorize` (`Params::parse` and the request checks).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_oauth::__fuzz::{Endpoint, oauth_request};

fuzz_target!(|data: &[u8]| {
    let _ = oauth_request(Endpoint::AuthorizeGet, data, false);
});
