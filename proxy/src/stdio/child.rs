//! One child process and its pipes: how it is started (its own process group, stdin and
//! stdout piped, stderr drained into a bounded ring, `kill_on_drop`, the proxy's environment
//! minus `MCP_OAUTH_*`), how its stdout is read (newline-delimited, each line bounded), and
//! how it is stopped (`SIGTERM` to its group, `SIGKILL` after a grace).

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// The prefix of the proxy's own settings in the environment (some hold passwords): no child
/// inherits a variable whose name begins with it.
pub const SECRET_ENV_PREFIX: &str = "MCP_OAUTH_";

/// How long one stderr line may be before it is cut (the rest of the line is dropped).
const STDERR_LINE_MAX: usize = 2048;

/// Starts `command` (program and arguments) with piped stdio, in its own process group where
/// the platform has them, with the proxy's environment minus every `MCP_OAUTH_*` variable.
pub fn spawn(command: &[String]) -> std::io::Result<Child> {
    let (program, args) = command.split_first().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command to start")
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.to_ascii_uppercase().starts_with(SECRET_ENV_PREFIX))
        {
            cmd.env_remove(&name);
        }
    }
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.spawn()
}

/// Sends `signal` to the process group led by `pid` (the child was started as its leader).
/// Errors (the group is gone) are ignored.
#[cfg(unix)]
pub fn signal_group(pid: u32, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, signal);
}

/// `SIGTERM`.
#[cfg(unix)]
pub const TERM: rustix::process::Signal = rustix::process::Signal::TERM;
/// `SIGKILL`.
#[cfg(unix)]
pub const KILL: rustix::process::Signal = rustix::process::Signal::KILL;

/// A human description of an exit status: `status 3`, `signal 9`.
pub fn describe(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            return format!("signal {sig}");
        }
    }
    status.to_string()
}

/// The last lines a child wrote to stderr (bounded in count and line length).
#[derive(Debug, Clone, Default)]
pub struct StderrRing {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl StderrRing {
    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drains `stderr` until EOF, keeping the last `keep` lines: the child can never block on
    /// a full stderr pipe.
    pub fn drain(&self, stderr: ChildStderr, keep: usize) -> tokio::task::JoinHandle<()> {
        let lines = self.lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match read_line_bounded(&mut reader, &mut buf, STDERR_LINE_MAX).await {
                    Ok(Line::Eof) | Err(_) => break,
                    Ok(Line::Complete | Line::TooLong) => {
                        let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        if let Ok(mut l) = lines.lock() {
                            if l.len() >= keep.max(1) {
                                l.pop_front();
                            }
                            l.push_back(text);
                        }
                    }
                }
            }
        })
    }
}

/// What [`read_line_bounded`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A whole line (without its newline) is in the buffer.
    Complete,
    /// The line was longer than the bound: the buffer holds its first `max` bytes, the rest
    /// was read and dropped.
    TooLong,
    /// End of file with nothing buffered.
    Eof,
}

/// Reads one `\n`-terminated line into `buf` (without the terminator), keeping at most `max`
/// bytes of it: a line without end cannot make the proxy buffer without bound.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if !read_any {
                Line::Eof
            } else if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
        read_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            too_long = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            if buf.last() == Some(&b'\r') && !too_long {
                buf.pop();
            }
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// The id of the JSON-RPC response whose first bytes are `prefix` (a line cut short): the
/// top-level members are read in order until the value of `result` or `error` starts, and
/// the `id` must have been complete before it. `None` when the prefix shows no complete
/// string or integer id before that point, or shows a `method` (a request or notification).
pub fn peek_response_id(prefix: &[u8]) -> Option<serde_json::Value> {
    let mut p = Peek { s: prefix, i: 0 };
    p.ws();
    p.eat(b'{')?;
    let mut id: Option<serde_json::Value> = None;
    loop {
        p.ws();
        let key = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        match key.as_str() {
            "method" => return None,
            "result" | "error" => break,
            "id" if id.is_some() => return None,
            _ => {}
        }
        let start = p.i;
        p.skip_value()?;
        if key == "id" {
            id = Some(serde_json::from_slice(&prefix[start..p.i]).ok()?);
        }
        p.ws();
        p.eat(b',')?;
    }
    id.filter(|v| v.is_string() || v.is_i64() || v.is_u64())
}

/// A cursor over the first bytes of a JSON text; every step is `None` at the end.
struct Peek<'a> {
    s: &'a [u8],
    i: usize,
}

impl Peek<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (*self.s.get(self.i)? == b).then(|| self.i += 1)
    }

    /// Past a string (with its quotes), returning it decoded.
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        self.skip_string()?;
        serde_json::from_slice(&self.s[start..self.i]).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    /// Past one value (object and array nesting, strings with escapes, scalars).
    fn skip_value(&mut self) -> Option<()> {
        match *self.s.get(self.i)? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.s.get(self.i)? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                // A number or a literal: ends at a delimiter, which must be in the prefix.
                while !matches!(*self.s.get(self.i)?, b',' | b'}' | b']')
                    && !self.s[self.i].is_ascii_whitespace()
                {
                    self.i += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_the_rest_of_a_long_line_is_dropped() {
        let data = b"short\r\n0123456789abcdef\nnext\nlast-without-newline".as_slice();
        let mut r = BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            buf.clear();
            let l = read_line_bounded(&mut r, &mut buf, 8).await.unwrap();
            if l == Line::Eof {
                break;
            }
            got.push((l, String::from_utf8(buf.clone()).unwrap()));
        }
        assert_eq!(
            got,
            [
                (Line::Complete, "short".to_owned()),
                (Line::TooLong, "01234567".to_owned()),
                (Line::Complete, "next".to_owned()),
                (Line::TooLong, "last-wit".to_owned()),
            ]
        );
    }

    #[test]
    fn the_id_of_a_cut_response_is_read_from_its_first_bytes() {
        let id = |s: &str| peek_response_id(s.as_bytes());
        let big = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"text":"aaaa"#;
        assert_eq!(id(big), Some(serde_json::json!(7)));
        assert_eq!(
            id(r#" { "id" : "a\"b" , "jsonrpc":"2.0", "error": {"code"#),
            Some(serde_json::json!("a\"b"))
        );
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","x":{"y":["}",1]},"id":12345,"result":"#),
            Some(serde_json::json!(12345))
        );
        // The id after the result, or cut short itself: unknown.
        assert_eq!(id(r#"{"jsonrpc":"2.0","result":{"id":1,"pad":"xx"#), None);
        assert_eq!(id(r#"{"jsonrpc":"2.0","id":123"#), None);
        assert_eq!(id(r#"{"jsonrpc":"2.0","id":"ab"#), None);
        // A request (or notification) is no response, whatever its id.
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"#),
            None
        );
        assert_eq!(id(r#"{"method":"x","id":1,"result":{"#), None);
        // Ids that are not ids, two ids, not an object.
        assert_eq!(id(r#"{"id":null,"result":{"a"#), None);
        assert_eq!(id(r#"{"id":1.5,"result":{"a"#), None);
        assert_eq!(id(r#"{"id":1,"id":2,"result":{"a"#), None);
        assert_eq!(id(r#"[{"id":1,"result":{"a"#), None);
        assert_eq!(id(""), None);
    }
}
