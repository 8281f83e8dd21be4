//! The `Authorization` header (and the body peek) through the resource layer:
//! `<header value>\n<body>`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcp_oauth::__fuzz::layer_request(data);
});
