//! Reading `strace -f` logs, with or without `-tt`/`-ttt`/`-T`/`-y` and pid
//! prefixes (`1234 ` from `-o` with `-f`, `[pid 1234] ` on a terminal);
//! `<unfinished ...>`/`<... resumed>` pairs are joined. Only what `replay`
//! and `profile` need is kept: the syscall, its path and flags, the result,
//! the errno, the time spent (`-T`).

use std::collections::HashMap;
use std::time::Duration;

/// One completed system call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub pid: Option<u32>,
    pub name: String,
    /// The arguments as strace printed them, split at top-level commas.
    pub args: Vec<String>,
    pub result: Option<i64>,
    pub errno: Option<String>,
    /// `-T`: time spent in the call.
    pub duration: Option<Duration>,
}

/// What a lookup-type call asked, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub kind: LookupKind,
    /// Absolute when it could be resolved (`-y` shows directory fds).
    pub path: Vec<u8>,
    /// `AT_SYMLINK_NOFOLLOW` or `lstat`.
    pub nofollow: bool,
    /// `O_DIRECTORY` on an open.
    pub directory: bool,
    /// A stat whose result says it is a directory.
    pub is_dir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LookupKind {
    Stat,
    Open,
    Access,
    Readlink,
    Getdents,
}

/// Parses a whole log.
pub fn parse(text: &str) -> Vec<Call> {
    let mut pending: HashMap<Option<u32>, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let (pid, rest) = split_pid(line.trim_end());
        let rest = skip_timestamp(rest);
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, head.trim_end().to_string());
            continue;
        }
        let joined;
        let rest = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some(after) = resumed.split_once(" resumed>").map(|(_, after)| after) else {
                continue;
            };
            let Some(head) = pending.remove(&pid) else {
                continue;
            };
            joined = format!("{head}{after}");
            joined.as_str()
        } else {
            rest
        };
        if let Some(call) = parse_call(pid, rest) {
            calls.push(call);
        }
    }
    calls
}

/// `1234 rest`, `[pid 1234] rest`, or no pid.
fn split_pid(line: &str) -> (Option<u32>, &str) {
    if let Some(rest) = line.strip_prefix("[pid ") {
        if let Some((pid, rest)) = rest.split_once(']') {
            return (pid.trim().parse().ok(), rest.trim_start());
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && line[digits..].starts_with(' ') {
        let after = line[digits..].trim_start();
        // A bare -ttt timestamp is digits '.' digits: not a pid.
        if !line[digits..].starts_with('.') {
            return (line[..digits].parse().ok(), after);
        }
    }
    (None, line)
}

/// Drops a `-t`/`-tt` (`12:34:56[.123456]`) or `-ttt` (`1700000000.123456`) stamp.
fn skip_timestamp(rest: &str) -> &str {
    let stamp_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b':' || *b == b'.')
        .count();
    if stamp_len > 0 && rest[stamp_len..].starts_with(' ') {
        rest[stamp_len..].trim_start()
    } else {
        rest
    }
}

fn parse_call(pid: Option<u32>, text: &str) -> Option<Call> {
    let open = text.find('(')?;
    let name = &text[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None; // "+++ exited", "--- SIGCHLD", and the like
    }
    let (args, after) = split_args(&text[open + 1..])?;
    let after = after.trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let (result_text, rest) = after.split_once(' ').unwrap_or((after, ""));
    let result = result_text.parse().ok();
    let errno = rest
        .split_whitespace()
        .next()
        .filter(|word| {
            word.starts_with('E')
                && word
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
        .map(str::to_string);
    let duration = rest
        .rfind('<')
        .and_then(|at| rest[at + 1..].strip_suffix('>'))
        .and_then(|secs| secs.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    Some(Call {
        pid,
        name: name.to_string(),
        args,
        result,
        errno,
        duration,
    })
}

/// Splits `a, "b,c", {x, y})` at top-level commas up to the closing paren;
/// returns the arguments and what follows the paren.
fn split_args(text: &str) -> Option<(Vec<String>, &str)> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '(' | '{' | '[' | '<' => depth += 1,
            '}' | ']' | '>' => depth = depth.saturating_sub(1),
            ')' if depth == 0 => {
                let last = text[start..at].trim();
                if !last.is_empty() {
                    args.push(last.to_string());
                }
                return Some((args, &text[at + 1..]));
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                args.push(text[start..at].trim().to_string());
                start = at + 1;
            }
            _ => {}
        }
    }
    None
}

/// The bytes of a strace string literal (`"..."`, with C escapes; a
/// trailing `...` for truncation is ignored).
pub fn unquote(text: &str) -> Option<Vec<u8>> {
    let inner = text.strip_prefix('"')?;
    let end = inner.rfind('"')?;
    let inner = &inner.as_bytes()[..end];
    let mut out = Vec::with_capacity(inner.len());
    let mut at = 0;
    while at < inner.len() {
        let byte = inner[at];
        at += 1;
        if byte != b'\\' || at >= inner.len() {
            out.push(byte);
            continue;
        }
        let escape = inner[at];
        at += 1;
        match escape {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'x' => {
                let hex = std::str::from_utf8(inner.get(at..at + 2)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                at += 2;
            }
            b'0'..=b'7' => {
                let digits = inner[at - 1..]
                    .iter()
                    .take(3)
                    .take_while(|b| (b'0'..=b'7').contains(*b))
                    .count();
                let octal = std::str::from_utf8(&inner[at - 1..at - 1 + digits]).ok()?;
                out.push(u8::from_str_radix(octal, 8).ok()?);
                at += digits - 1;
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// The directory a `-y`-decorated fd argument names: `AT_FDCWD</cwd>` or
/// `3</dir>`; `None` without decoration.
fn fd_path(arg: &str) -> Option<Vec<u8>> {
    let open = arg.find('<')?;
    let inner = arg[open + 1..].strip_suffix('>')?;
    Some(inner.as_bytes().to_vec())
}

fn resolve(base: Option<&str>, path: Vec<u8>) -> Option<Vec<u8>> {
    if path.starts_with(b"/") {
        return Some(without_dots(&path));
    }
    let mut joined = fd_path(base?)?;
    if !path.is_empty() {
        joined.push(b'/');
        joined.extend(path);
    }
    Some(without_dots(&joined))
}

/// `a/./b` as `a/b`, and no trailing `/.` (`..` is left to the kernel).
fn without_dots(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    for (at, component) in path.split(|&b| b == b'/').enumerate() {
        if component == b"." || (component.is_empty() && at > 0) {
            continue;
        }
        if at > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(component);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

impl Call {
    fn arg(&self, at: usize) -> Option<&str> {
        self.args.get(at).map(String::as_str)
    }

    fn has_flag(&self, at: usize, flag: &str) -> bool {
        self.arg(at)
            .is_some_and(|flags| flags.split('|').any(|f| f.trim() == flag))
    }

    pub fn is_enoent(&self) -> bool {
        self.errno.as_deref() == Some("ENOENT")
    }

    /// The lookup this call made, when it is one (a stat of a path, an
    /// open, an access check, a readlink or a getdents64).
    pub fn lookup(&self) -> Option<Lookup> {
        let lookup = |kind, dir: Option<&str>, path_at: usize| -> Option<Lookup> {
            let path = unquote(self.arg(path_at)?)?;
            Some(Lookup {
                kind,
                path: resolve(dir, path)?,
                nofollow: false,
                directory: false,
                is_dir: self.args.iter().any(|a| a.contains("S_IFDIR")),
            })
        };
        match self.name.as_str() {
            "stat" | "stat64" | "lstat" | "lstat64" => Some(Lookup {
                nofollow: self.name.starts_with('l'),
                ..lookup(LookupKind::Stat, None, 0)?
            }),
            "newfstatat" | "fstatat64" | "statx" => {
                let flags_at = if self.name == "statx" { 2 } else { 3 };
                if self.arg(1) == Some("\"\"") {
                    return None; // AT_EMPTY_PATH: an fstat of an open file
                }
                Some(Lookup {
                    nofollow: self.has_flag(flags_at, "AT_SYMLINK_NOFOLLOW"),
                    ..lookup(LookupKind::Stat, self.arg(0), 1)?
                })
            }
            "open" => Some(Lookup {
                directory: self.has_flag(1, "O_DIRECTORY"),
                ..lookup(LookupKind::Open, None, 0)?
            }),
            "openat" => Some(Lookup {
                directory: self.has_flag(2, "O_DIRECTORY"),
                ..lookup(LookupKind::Open, self.arg(0), 1)?
            }),
            "access" => lookup(LookupKind::Access, None, 0),
            "faccessat" | "faccessat2" => lookup(LookupKind::Access, self.arg(0), 1),
            "readlink" => lookup(LookupKind::Readlink, None, 0),
            "readlinkat" => lookup(LookupKind::Readlink, self.arg(0), 1),
            "getdents64" | "getdents" => Some(Lookup {
                kind: LookupKind::Getdents,
                path: fd_path(self.arg(0)?).unwrap_or_default(),
                nofollow: false,
                directory: true,
                is_dir: true,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_form_parses() {
        let lines = [
            r#"newfstatat(AT_FDCWD, "/usr/lib/python3.11", {st_mode=S_IFDIR|0755, st_size=4096, ...}, 0) = 0"#,
            r#"1234 newfstatat(AT_FDCWD, "/usr/lib/python3.11", {st_mode=S_IFDIR|0755, st_size=4096, ...}, 0) = 0"#,
            r#"[pid  1234] 12:34:56.123456 newfstatat(AT_FDCWD</tmp>, "/usr/lib/python3.11", {st_mode=S_IFDIR|0755, ...}, 0) = 0 <0.000012>"#,
            r#"1234 1700000000.123456 newfstatat(AT_FDCWD, "/usr/lib/python3.11", {st_mode=S_IFDIR|0755}, 0) = 0"#,
        ];
        for line in lines {
            let calls = parse(line);
            assert_eq!(calls.len(), 1, "{line}");
            let lookup = calls[0].lookup().expect("a lookup");
            assert_eq!(lookup.path, b"/usr/lib/python3.11");
            assert!(lookup.is_dir);
        }
        assert_eq!(parse(lines[1])[0].pid, Some(1234));
        assert_eq!(parse(lines[2])[0].duration, Some(Duration::from_micros(12)));
    }

    #[test]
    fn errors_relative_paths_and_resumed_calls() {
        let log = r#"7 openat(3</usr/lib/python3.11>, "json", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY <unfinished ...>
8 stat("/nope", 0x7ffd) = -1 ENOENT (No such file or directory)
7 <... openat resumed>) = 4</usr/lib/python3.11/json>
9 newfstatat(3</x>, "", {st_mode=S_IFREG|0644, ...}, AT_EMPTY_PATH) = 0
9 lstat("caf\303\251", 0x1) = -1 ENOENT (No such file or directory)
9 +++ exited with 0 +++"#;
        let calls = parse(log);
        assert_eq!(calls.len(), 4);
        assert!(calls[0].is_enoent());
        let open = calls[1].lookup().expect("openat");
        assert_eq!(open.path, b"/usr/lib/python3.11/json");
        assert!(open.directory && open.kind == LookupKind::Open);
        assert_eq!(calls[2].lookup(), None, "an fstat is not a lookup");
        assert_eq!(calls[3].lookup(), None, "relative without -y: unresolvable");
        assert_eq!(without_dots(b"/a/./b/."), b"/a/b");
        assert_eq!(without_dots(b"/"), b"/");
        assert_eq!(
            unquote(r#""caf\303\251""#),
            Some("café".as_bytes().to_vec())
        );
        assert_eq!(unquote(r#""a\x41\"b""#), Some(b"aA\"b".to_vec()));
    }
}
