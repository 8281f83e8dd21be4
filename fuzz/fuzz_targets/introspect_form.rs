//! The form of `POST /introspect` (RFC 7662); the first byte's low bit adds the confidential client's Basic credentials.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_oauth::__fuzz::{Endpoint, oauth_request};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, form)) = data.split_first() else {
        return;
    };
    let _ = oauth_request(Endpoint::Introspect, form, flags & 1 == 1);
});
