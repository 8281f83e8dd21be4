//! The `Mcp-Method` / `Mcp-Name` header peek (`from_headers`): `name: value` lines.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcp_oauth::__fuzz::jsonrpc_headers(data);
});
