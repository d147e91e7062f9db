//! `.dockerignore`-style path filtering (moby's `patternmatcher`, as fsutil applies it).
//!
//! A pattern is a slash-separated path glob: `*`, `?` and `[...]` (Go `filepath.Match`
//! syntax, `\` escapes) match within one segment, `**` matches any number of segments. A path
//! matches a pattern when the path itself or any of its ancestor directories does. Patterns are
//! applied in order; a pattern starting with `!` is an exception that re-includes what earlier
//! patterns excluded.

use crate::Error;
use regex::Regex;

/// Which paths of a directory tree to send: `include` (empty = everything) and `exclude`
/// patterns, both in `.dockerignore` syntax.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Filter {
    /// The patterns of a `.dockerignore` file, in order: a UTF-8 BOM is dropped, lines starting
    /// with `#` are comments, lines are trimmed, blank ones skipped, and each pattern is cleaned
    /// (leading `/` and `./` removed) with a `!` prefix kept.
    pub fn from_ignore_file(text: &str) -> Vec<String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (invert, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let mut pattern = if rest.is_empty() {
                String::new()
            } else {
                clean_pattern(rest)
            };
            if invert {
                pattern.insert(0, '!');
            }
            patterns.push(pattern);
        }
        patterns
    }
}

/// Go's `filepath.Clean` for slash paths, without the leading `/` (the context root is `/`).
fn clean_pattern(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    if out.is_empty() {
        // "/" or "." — a pattern that names the root itself, which is never a walked path.
        return if rooted { "/".into() } else { ".".into() };
    }
    out.join("/")
}

/// Compiled patterns (`.dockerignore` syntax, exceptions included), to ask whether a path —
/// or one of its ancestors — matches them, as [`crate::walk`] decides what to send.
#[derive(Debug)]
pub struct Patterns(Matcher);

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns, Error> {
        Matcher::new(patterns).map(Patterns)
    }

    pub fn matches(&self, path: &str) -> bool {
        self.0.matches(path)
    }
}

/// One compiled pattern.
#[derive(Debug)]
struct Pattern {
    exception: bool,
    regex: Regex,
    /// Per path segment: `None` for a segment containing `**` (matches any depth), else a
    /// regex for that single segment.
    segments: Vec<Option<Regex>>,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    /// Whether this pattern, or one of `path`'s ancestors, matches `path`.
    fn matches_or_parent_matches(&self, path: &str) -> bool {
        if self.matches(path) {
            return true;
        }
        path.match_indices('/')
            .any(|(i, _)| self.matches(&path[..i]))
    }

    /// Whether this pattern could match some path strictly below directory `dir` (conservative:
    /// may say yes when nothing will match, never no when something could).
    fn could_match_below(&self, dir: &str) -> bool {
        let dir_segments: Vec<&str> = dir.split('/').collect();
        for (i, seg) in self.segments.iter().enumerate() {
            let Some(seg) = seg else { return true };
            let Some(name) = dir_segments.get(i) else {
                return true;
            };
            if !seg.is_match(name) {
                return false;
            }
        }
        false
    }
}

/// An ordered list of patterns (moby's `PatternMatcher`).
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    pub(crate) fn new(patterns: &[String]) -> Result<Self, Error> {
        let mut out = Vec::new();
        for raw in patterns {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let (exception, p) = match p.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, p),
            };
            if p.is_empty() {
                return Err(Error::Pattern {
                    pattern: raw.clone(),
                    reason: "illegal exclusion pattern \"!\"".into(),
                });
            }
            let text = clean_pattern(p);
            let bad = |reason: String| Error::Pattern {
                pattern: raw.clone(),
                reason,
            };
            let regex = compile(&text, true).map_err(&bad)?;
            let segments = text
                .split('/')
                .map(|seg| {
                    if seg.contains("**") {
                        Ok(None)
                    } else {
                        compile(seg, false).map(Some)
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(&bad)?;
            out.push(Pattern {
                exception,
                regex,
                segments,
            });
        }
        Ok(Self { patterns: out })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// moby's `MatchesOrParentMatches`: the last applicable pattern decides; exceptions undo.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion can't change an already-matched path, nor an exception an unmatched one.
            if p.exception != matched {
                continue;
            }
            if p.matches_or_parent_matches(path) {
                matched = !p.exception;
            }
        }
        matched
    }

    /// Whether a non-exception pattern could match something strictly below `dir`.
    pub(crate) fn could_match_below(&self, dir: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| !p.exception && p.could_match_below(dir))
    }

    /// Whether an exception (`!`) pattern could match something strictly below `dir`.
    pub(crate) fn exception_could_match_below(&self, dir: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| p.exception && p.could_match_below(dir))
    }
}

/// Translates a glob into an anchored regex (moby's translation, but with every literal
/// escaped). With `multi_segment`, `**` spans segments; otherwise the glob is one segment.
fn compile(glob: &str, multi_segment: bool) -> Result<Regex, String> {
    let chars: Vec<char> = glob.chars().collect();
    let mut re = String::from("(?s)^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if multi_segment && chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is treated as `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    push_literal(&mut re, next);
                }
                None => return Err("trailing backslash".into()),
            },
            '[' => i = class(&chars, i, &mut re)?,
            c => push_literal(&mut re, c),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| e.to_string())
}

fn push_literal(re: &mut String, c: char) {
    re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
}

/// A Go `filepath.Match` character class starting after `[` at `i`; returns the index after `]`.
fn class(chars: &[char], mut i: usize, re: &mut String) -> Result<usize, String> {
    let unclosed = || "unterminated character class".to_string();
    re.push('[');
    if chars.get(i) == Some(&'^') {
        re.push('^');
        i += 1;
    }
    let mut n = 0;
    loop {
        match chars.get(i) {
            None => return Err(unclosed()),
            Some(']') if n > 0 => {
                i += 1;
                break;
            }
            _ => {}
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        re.push_str(&format!("\\x{{{:x}}}", lo as u32));
        if chars.get(i) == Some(&'-') {
            let (hi, next) = class_char(chars, i + 1)?;
            i = next;
            if hi < lo {
                return Err("bad character range".into());
            }
            re.push_str(&format!("-\\x{{{:x}}}", hi as u32));
        }
        n += 1;
    }
    re.push(']');
    Ok(i)
}

/// Go's `getEsc`: one (possibly escaped) class character; `-` and `]` must be escaped.
fn class_char(chars: &[char], i: usize) -> Result<(char, usize), String> {
    match chars.get(i) {
        None => Err("unterminated character class".into()),
        Some('-' | ']') => Err("bad character class".into()),
        Some('\\') => match chars.get(i + 1) {
            Some(&c) => Ok((c, i + 2)),
            None => Err("unterminated character class".into()),
        },
        Some(&c) => Ok((c, i + 1)),
    }
}
