//! TLS SNI patterns (`*` wildcard, `|` alternation) and DNS domain patterns.
//!
//! Names are DNS names: ASCII letters, digits, `-` and `.`, at most 253 bytes, compared
//! case-insensitively; a trailing dot is ignored.

/// Longest DNS name, in bytes (without the trailing dot).
const MAX_NAME_LEN: usize = 253;

/// One byte-level element of an SNI alternative.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SniPart {
    /// Exactly this (lower-case) byte.
    Byte(u8),
    /// `*`: any run of characters, dots included, possibly empty.
    Star,
}

/// A parsed `sni_pattern`: the name matches when any alternative matches it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SniPattern {
    pub alternatives: Vec<Vec<SniPart>>,
}

/// Checks an `sni_pattern`.
pub fn validate_sni_pattern(p: &str) -> Result<(), String> {
    SniPattern::parse(p).map(|_| ())
}

impl SniPattern {
    /// Parses `a|b|*.c`; each alternative is a DNS name that may contain `*`.
    pub fn parse(p: &str) -> Result<Self, String> {
        let alternatives = p
            .split('|')
            .map(parse_alternative)
            .collect::<Result<_, _>>()?;
        Ok(SniPattern { alternatives })
    }

    /// Whether the server name `name` matches (case-insensitive, trailing dot ignored).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.alternatives
            .iter()
            .any(|alt| wildcard_match(alt, name.as_bytes()))
    }
}

fn parse_alternative(alt: &str) -> Result<Vec<SniPart>, String> {
    let name = alt.strip_suffix('.').unwrap_or(alt);
    if name.is_empty() {
        return Err("empty alternative in SNI pattern".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("SNI pattern `{alt}` is longer than 253 bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*'))
    {
        return Err(format!(
            "invalid character `{c}` in SNI pattern `{alt}` (DNS names, `*` and `|` only)"
        ));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!("empty label in SNI pattern `{alt}`"));
    }
    Ok(name
        .bytes()
        .map(|b| match b {
            b'*' => SniPart::Star,
            b => SniPart::Byte(b.to_ascii_lowercase()),
        })
        .collect())
}

/// Classic wildcard match with star backtracking; `*` may cross dots.
fn wildcard_match(pattern: &[SniPart], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(SniPart::Star) => {
                star = Some((p, t));
                p += 1;
            }
            Some(SniPart::Byte(b)) if *b == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|x| *x == SniPart::Star)
}

/// Checks a `domains` entry: an exact DNS name or `*.suffix`.
pub fn validate_domain(d: &str) -> Result<(), String> {
    let name = d.strip_suffix('.').unwrap_or(d);
    let suffix = name.strip_prefix("*.").unwrap_or(name);
    if suffix.is_empty() {
        return Err(format!("`{d}` is not a domain name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("domain `{d}` is longer than 253 bytes"));
    }
    if suffix.contains('*') {
        return Err(format!(
            "domain `{d}`: `*` is only allowed as a whole first label (`*.example.com`)"
        ));
    }
    if let Some(c) = suffix
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(format!("invalid character `{c}` in domain `{d}`"));
    }
    for label in suffix.split('.') {
        if label.is_empty() {
            return Err(format!("empty label in domain `{d}`"));
        }
        if label.len() > 63 {
            return Err(format!(
                "label `{label}` of domain `{d}` is longer than 63 bytes"
            ));
        }
    }
    Ok(())
}

/// Whether `name` matches the domain pattern `pattern` (exact, or `*.suffix` = any name
/// strictly below `suffix`), case-insensitive, trailing dots ignored.
pub fn domain_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
    let name = name.strip_suffix('.').unwrap_or(name);
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let (name, suffix) = (name.as_bytes(), suffix.as_bytes());
            name.len() > suffix.len() + 1
                && name[name.len() - suffix.len() - 1] == b'.'
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sni(p: &str, name: &str) -> bool {
        SniPattern::parse(p).unwrap().matches(name)
    }

    #[test]
    fn sni_star_crosses_dots_but_needs_the_dot() {
        assert!(sni("*.openai.com", "api.openai.com"));
        assert!(sni("*.openai.com", "a.b.openai.com"));
        assert!(!sni("*.openai.com", "openai.com"));
        assert!(!sni("*.openai.com", "api.openai.com.evil.net"));
        assert!(sni("*", "anything.example"));
        assert!(sni("API.Example.COM.", "api.example.com"));
        assert!(sni("api.example.com", "API.EXAMPLE.COM."));
    }

    #[test]
    fn sni_alternation() {
        let p = SniPattern::parse("api.anthropic.com|*.openai.com").unwrap();
        assert!(p.matches("api.anthropic.com"));
        assert!(p.matches("chat.openai.com"));
        assert!(!p.matches("anthropic.com"));
    }

    #[test]
    fn invalid_sni_patterns() {
        for bad in ["", "a||b", "a|", "a b", "a..b", ".a", "a/b", "é.com"] {
            assert!(validate_sni_pattern(bad).is_err(), "{bad:?}");
        }
        assert!(validate_sni_pattern(&"a".repeat(254)).is_err());
        assert!(validate_sni_pattern("*").is_ok());
    }

    #[test]
    fn domains_respect_label_boundaries() {
        assert!(domain_matches("*.x.com", "a.x.com"));
        assert!(domain_matches("*.x.com", "a.b.X.com."));
        assert!(!domain_matches("*.x.com", "x.com"));
        assert!(!domain_matches("*.x.com", "evilx.com"));
        assert!(domain_matches("api.x.com.", "API.x.com"));
        assert!(!domain_matches("api.x.com", "b.api.x.com"));
        assert!(!domain_matches("*.é.com", "aé.com"));
    }

    #[test]
    fn domain_validation() {
        for ok in ["api.x.com", "*.x.com", "x.com.", "localhost"] {
            assert!(validate_domain(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "a*.b.com",
            "*.*.b.com",
            "a..b",
            ".a",
            "a_b.com",
            "a b",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad:?}");
        }
        assert!(validate_domain(&format!("{}.com", "a".repeat(64))).is_err());
    }
}
