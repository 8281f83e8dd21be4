//! JWT header and claims decoding in `JwtVerifier`: a token as received (even first byte),
//! or JSON claims signed with the verifier's own key (odd first byte).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcp_oauth::__fuzz::jwt(data);
});
