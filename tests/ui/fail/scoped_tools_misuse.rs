#![allow(dead_code)]
use mcp_oauth::scoped_tools;

struct Srv;

#[scoped_tools]
impl Srv {
    fn helper(&self) {}
}

struct Other;

#[scoped_tools(router = "tools")]
impl Other {}

fn main() {}
