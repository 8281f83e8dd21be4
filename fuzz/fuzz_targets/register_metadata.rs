//! DCR client metadata at `POST /register` (RFC 7591), redirect-URI checks included.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_oauth::__fuzz::{Endpoint, oauth_request};

fuzz_target!(|data: &[u8]| {
    let _ = oauth_request(Endpoint::Register, data, false);
});
