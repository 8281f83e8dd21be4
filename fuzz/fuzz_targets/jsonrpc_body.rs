//! The layer's JSON-RPC body peek: `parse_body`, `request_id`, `requirement_of`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcp_oauth::__fuzz::jsonrpc_body(data);
});
