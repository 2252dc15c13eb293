//! Path globs (SPEC §6): syntax, `~/` expansion and the reference matcher.
//!
//! `*` matches within one segment, `**` (a whole segment) any number of segments including
//! zero, `?` one byte other than `/`, `[abc]`, `[a-z]`, `[!a]` one byte of a class (never `/`).
//! A bare `*` or `**` matches everything. A trailing `/` means `/**`. Patterns are absolute;
//! `~/` stands for the home directory of any local user (see [`Homes`]).
//!
//! The kernel-table compiler builds its automaton from the same [`Glob`] segments; the matcher
//! here is the independent reference the property tests compare it against.

use std::fmt;

/// One byte-level element of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// Exactly this byte (never `/`).
    Byte(u8),
    /// `?`: any one byte except `/`.
    AnyByte,
    /// `*`: any run (possibly empty) of bytes except `/`.
    Star,
    /// `[...]`: one byte of the set; `/` is never a member.
    Class(ByteSet),
}

/// A set of bytes, as a 256-bit mask.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ByteSet(pub [u64; 4]);

impl ByteSet {
    /// Adds `b`.
    pub fn insert(&mut self, b: u8) {
        self.0[(b >> 6) as usize] |= 1u64 << (b & 63);
    }
    /// Whether `b` is a member.
    pub fn contains(&self, b: u8) -> bool {
        self.0[(b >> 6) as usize] & (1u64 << (b & 63)) != 0
    }
    /// The complement.
    pub fn negated(&self) -> ByteSet {
        ByteSet([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }
}

impl fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((0..=255u8).filter(|b| self.contains(*b)))
            .finish()
    }
}

/// One `/`-separated segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// `**`: zero or more whole segments.
    GlobStar,
    /// A segment made of literal bytes and wildcards.
    Parts(Vec<Part>),
}

/// A parsed glob with no `~`: either everything, or an absolute pattern.
///
/// For an absolute pattern, `segments` are the pieces after the leading `/`: the pattern
/// `/a/*/b` is `[a, *, b]`, and `/` alone is one empty segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Glob {
    /// A bare `*` or `**`.
    All,
    Absolute(Vec<Segment>),
}

/// The home directories that `~/` expands to, each itself an absolute glob prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Homes(pub Vec<String>);

impl Default for Homes {
    /// Any local user: `/root` and `/home/*`.
    fn default() -> Self {
        Homes(vec!["/root".into(), "/home/*".into()])
    }
}

/// Why a glob is invalid; `offset` is a byte offset into the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

/// Longest accepted pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;

fn err(offset: usize, message: impl Into<String>) -> GlobError {
    GlobError {
        offset,
        message: message.into(),
    }
}

/// Checks the syntax of `pattern` (with `~/` allowed) without expanding it.
pub fn validate(pattern: &str) -> Result<(), GlobError> {
    expand(pattern, &Homes(vec!["/home/x".into()])).map(|_| ())
}

/// Parses `pattern` into the globs it stands for: one, or one per home directory for `~/`.
pub fn expand(pattern: &str, homes: &Homes) -> Result<Vec<Glob>, GlobError> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(err(MAX_PATTERN_LEN, "pattern longer than 4096 bytes"));
    }
    if let Some(rest) = pattern.strip_prefix("~/") {
        let mut out = Vec::with_capacity(homes.0.len());
        for home in &homes.0 {
            let home = home.trim_end_matches('/');
            let mut glob = parse(&format!("{home}/{rest}")).map_err(|e| {
                // Report offsets relative to the pattern the operator wrote.
                let shift = home.len() + 1;
                err(e.offset.saturating_sub(shift) + 2, e.message)
            })?;
            if matches!(glob, Glob::All) {
                glob = Glob::Absolute(vec![Segment::GlobStar]);
            }
            out.push(glob);
        }
        return Ok(out);
    }
    if pattern.starts_with('~') {
        return Err(err(
            0,
            "`~` is only allowed as `~/` at the start of a pattern",
        ));
    }
    parse(pattern).map(|g| vec![g])
}

/// Parses a pattern without `~`.
pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
    if pattern == "*" || pattern == "**" {
        return Ok(Glob::All);
    }
    if pattern.is_empty() {
        return Err(err(0, "empty pattern"));
    }
    let Some(body) = pattern.strip_prefix('/') else {
        return Err(err(
            0,
            format!("patterns are absolute paths; to match anywhere write `**/{pattern}`"),
        ));
    };
    if pattern.contains('\0') {
        return Err(err(pattern.find('\0').unwrap_or(0), "NUL byte in pattern"));
    }
    // A trailing `/` means "this directory and everything below it".
    let (body, trailing) = match body.strip_suffix('/') {
        Some(b) if !b.is_empty() => (b, true),
        _ => (body, false),
    };
    let mut segments = Vec::new();
    let mut offset = 1;
    for raw in body.split('/') {
        segments.push(parse_segment(raw, offset, body.is_empty())?);
        offset += raw.len() + 1;
    }
    if trailing && segments.last() != Some(&Segment::GlobStar) {
        segments.push(Segment::GlobStar);
    }
    Ok(Glob::Absolute(segments))
}

fn parse_segment(raw: &str, offset: usize, root: bool) -> Result<Segment, GlobError> {
    if raw == "**" {
        return Ok(Segment::GlobStar);
    }
    if raw.is_empty() && !root {
        return Err(err(offset, "empty path segment (`//`)"));
    }
    if raw == "." || raw == ".." {
        return Err(err(
            offset,
            format!("`{raw}` segment: patterns match normalised paths"),
        ));
    }
    let bytes = raw.as_bytes();
    let mut parts = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' => {
                if bytes.get(i + 1) == Some(&b'*') {
                    return Err(err(
                        offset + i,
                        "`**` must be a whole path segment (`a/**/b`); use `*` within a segment",
                    ));
                }
                parts.push(Part::Star);
                i += 1;
            }
            b'?' => {
                parts.push(Part::AnyByte);
                i += 1;
            }
            b'[' => {
                let (set, len) = parse_class(&bytes[i..], offset + i)?;
                parts.push(Part::Class(set));
                i += len;
            }
            b'\\' => match bytes.get(i + 1) {
                Some(&b) if b != b'/' => {
                    parts.push(Part::Byte(b));
                    i += 2;
                }
                _ => return Err(err(offset + i, "dangling `\\` escape")),
            },
            b => {
                parts.push(Part::Byte(b));
                i += 1;
            }
        }
    }
    Ok(Segment::Parts(parts))
}

/// Parses `[...]` at the start of `bytes`; returns the set and the bytes consumed.
fn parse_class(bytes: &[u8], offset: usize) -> Result<(ByteSet, usize), GlobError> {
    let mut i = 1;
    let negate = matches!(bytes.get(1), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut set = ByteSet::default();
    let mut first = true;
    loop {
        let Some(&b) = bytes.get(i) else {
            return Err(err(offset, "unclosed `[` character class"));
        };
        if b == b']' && !first {
            i += 1;
            break;
        }
        first = false;
        if !b.is_ascii() {
            return Err(err(
                offset + i,
                "character classes take ASCII characters only",
            ));
        }
        if bytes.get(i + 1) == Some(&b'-') && bytes.get(i + 2).is_some_and(|&c| c != b']') {
            let hi = bytes[i + 2];
            if !hi.is_ascii() {
                return Err(err(
                    offset + i,
                    "character classes take ASCII characters only",
                ));
            }
            if hi < b {
                return Err(err(
                    offset + i,
                    format!("reversed range `{}-{}`", b as char, hi as char),
                ));
            }
            for c in b..=hi {
                set.insert(c);
            }
            i += 3;
        } else {
            set.insert(b);
            i += 1;
        }
    }
    if negate {
        set = set.negated();
    }
    // `/` separates segments: a class never matches it.
    set.0[0] &= !(1u64 << b'/');
    if set == ByteSet::default() {
        return Err(err(offset, "character class matches nothing"));
    }
    Ok((set, i))
}

impl Glob {
    /// The reference matcher: does the normalised absolute `path` match?
    pub fn matches(&self, path: &[u8]) -> bool {
        match self {
            Glob::All => true,
            Glob::Absolute(segments) => {
                let Some(rest) = path.strip_prefix(b"/") else {
                    return false;
                };
                if !segments.contains(&Segment::GlobStar) {
                    // One segment of pattern per path segment: no backtracking, no allocation.
                    let mut parts = rest.split(|&b| b == b'/');
                    return segments.iter().all(|s| match (s, parts.next()) {
                        (Segment::Parts(p), Some(text)) => match_parts(p, text),
                        _ => false,
                    }) && parts.next().is_none();
                }
                let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
                let mut memo = vec![None; (segments.len() + 1) * (parts.len() + 1)];
                match_segments(segments, &parts, 0, 0, &mut memo)
            }
        }
    }
}

fn match_segments(
    segs: &[Segment],
    parts: &[&[u8]],
    si: usize,
    pi: usize,
    memo: &mut [Option<bool>],
) -> bool {
    let key = si * (parts.len() + 1) + pi;
    if let Some(done) = memo[key] {
        return done;
    }
    let result = match segs.get(si) {
        None => pi == parts.len(),
        // `**` swallows zero or more segments; after a trailing `**` the path may end at
        // the directory itself (`/a/**` matches `/a`).
        Some(Segment::GlobStar) => {
            (pi..=parts.len()).any(|k| match_segments(segs, parts, si + 1, k, memo))
        }
        Some(Segment::Parts(p)) => {
            pi < parts.len()
                && match_parts(p, parts[pi])
                && match_segments(segs, parts, si + 1, pi + 1, memo)
        }
    };
    memo[key] = Some(result);
    result
}

/// Wildcard match of one segment (no `/` inside), with the classic star backtracking.
fn match_parts(pattern: &[Part], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let ok = match pattern.get(p) {
            Some(Part::Byte(b)) => *b == text[t],
            Some(Part::AnyByte) => true,
            Some(Part::Class(set)) => set.contains(text[t]),
            Some(Part::Star) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            None => false,
        };
        if ok {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|x| matches!(x, Part::Star))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        expand(pattern, &Homes::default())
            .unwrap()
            .iter()
            .any(|g| g.matches(path.as_bytes()))
    }

    #[test]
    fn globstar_matches_zero_or_more_segments() {
        assert!(m("/a/**", "/a"));
        assert!(m("/a/**", "/a/b"));
        assert!(m("/a/**", "/a/b/c"));
        assert!(!m("/a/**", "/ab"));
        assert!(m("/a/**/b", "/a/b"));
        assert!(m("/a/**/b", "/a/x/y/b"));
        assert!(!m("/a/**/b", "/a/xb"));
        assert!(m("/**/.env*", "/srv/app/.env.local"));
        assert!(m("/**/.env*", "/.env"));
    }

    #[test]
    fn star_question_and_classes_stay_in_one_segment() {
        assert!(m("/a/*", "/a/b"));
        assert!(!m("/a/*", "/a/b/c"));
        assert!(m("/a/*.rs", "/a/.rs"));
        assert!(m("/a/?", "/a/x"));
        assert!(!m("/a/?", "/a/xy"));
        assert!(m("/a/[bc]", "/a/c"));
        assert!(m("/a/[a-z]x", "/a/qx"));
        assert!(!m("/a/[!a]", "/a/a"));
        assert!(m("/a/[!a]", "/a/b"));
        assert!(!m("/a[!x]b", "/a/b"));
    }

    #[test]
    fn bare_stars_match_everything() {
        assert!(m("*", "/x/y/z"));
        assert!(m("**", "/"));
    }

    #[test]
    fn tilde_means_any_home() {
        assert!(m("~/.ssh/**", "/home/alice/.ssh/id_rsa"));
        assert!(m("~/.ssh/**", "/root/.ssh"));
        assert!(!m("~/.ssh/**", "/srv/.ssh/id_rsa"));
        assert!(!m("~/.ssh/**", "/home/a/b/.ssh/id_rsa"));
    }

    #[test]
    fn trailing_slash_means_subtree() {
        assert!(m("/a/.claude/", "/a/.claude"));
        assert!(m("/a/.claude/", "/a/.claude/settings.json"));
    }

    #[test]
    fn invalid_globs_are_errors() {
        for bad in [
            "", "rel/path", "/a/[bc", "/a/b**", "/a//b", "/a/../b", "/[z-a]", "~x", "/a\\",
        ] {
            assert!(
                expand(bad, &Homes::default()).is_err(),
                "{bad:?} should be invalid"
            );
        }
    }
}
