//! A rule's regular expression. IIS's rules are ECMAScript expressions,
//! and ported ones use what the `regex` crate leaves out on purpose:
//! look-around (`^(?!api/).*$`, the usual "everything but" of a
//! single-page application's fallback) and back-references (`(\w)\1`).
//! A pattern the `regex` crate takes is matched by it, in linear time; only
//! one that needs those is matched by fancy-regex, which backtracks, with a
//! limit on its steps per match.

use std::fmt;

/// Backtracking steps one match may take (a tenth of fancy-regex's
/// default, under two milliseconds): a pattern and input that need more make
/// the match fail with an error rather than take the worker's time (see
/// [`Pattern::captures`]); a client's URL could otherwise make every such
/// rule cost that much on every request.
pub(super) const BACKTRACK_LIMIT: usize = 100_000;

/// The same for a rule over a whole body, whose one search may try every
/// start position of up to 8 MiB of text (fancy-regex counts the steps of
/// all of them against the limit): with URL's limit, a look-ahead rule gave
/// up on any page of 100 KB. A body's rules also have a time limit.
pub(super) const BODY_BACKTRACK_LIMIT: usize = 5_000_000;

/// A compiled rule, condition or outbound pattern.
#[derive(Debug)]
pub(super) enum Pattern {
    /// The `regex` crate's: linear in the input.
    Linear(regex::Regex),
    /// fancy-regex's, for look-around and back-references.
    Backtracking(fancy_regex::Regex),
}

/// The groups of a match: `get(0)` is the whole match.
pub(super) enum Groups<'h> {
    Linear(regex::Captures<'h>),
    Backtracking(fancy_regex::Captures<'h, str>),
}

/// A backtracking match gave up at [`BACKTRACK_LIMIT`]: nobody can tell
/// whether the pattern matches.
#[derive(Debug)]
pub(super) struct GaveUp;

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the pattern needs more backtracking steps on this input than its limit ({BACKTRACK_LIMIT} for a URL or a value, {BODY_BACKTRACK_LIMIT} for a whole body)"
        )
    }
}

/// `expression`, written in ECMAScript's syntax, in the `regex` crate's,
/// where the two read the same text differently:
///
/// - `\<` and `\>` are `<` and `>` in ECMAScript (and in mod_rewrite's
///   PCRE, whence the widespread `(\<|%3C).*script.*(\>|%3E)` rule comes),
///   word boundaries in `regex`, which made that rule refuse
///   `?sort=description`;
/// - `\d`, `\w` and `\b` are ASCII in ECMAScript, Unicode in `regex`: a
///   rule's `^product/(\d+)$` let Arabic-Indic digits through to the
///   application, and `^[\w-]{1,255}$` did not even compile (a Unicode
///   class repeated 255 times passes the compiled size limit). They are
///   written out as ASCII classes (and `\b` as the ASCII word boundary);
///   `\s` is Unicode's white space in both;
/// - inside a class, `[` is a literal in ECMAScript and opens a nested
///   class in `regex`, and `&&`, `~~` and `--` are set operations there:
///   they are escaped; `\b` there is the backspace.
///
/// `backtracking`: for fancy-regex, which has no `(?-u:…)`: the ASCII
/// word boundary is written with look-around there.
fn ecmascript_syntax(expression: &str, backtracking: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| matches!(c, '\\' | '[');
    if !expression.contains(special) {
        return expression.into();
    }
    const WORD: &str = "0-9A-Za-z_";
    let mut out = String::with_capacity(expression.len() + 16);
    let mut in_class = false;
    let mut chars = expression.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                // A class escape in a class is no end of a range: a `-`
                // after it is the character (`[\w-.]`).
                Some(class @ ('d' | 'w' | 's' | 'D' | 'W' | 'S')) if in_class => {
                    match class {
                        'd' => out.push_str("0-9"),
                        'w' => out.push_str(WORD),
                        'D' => out.push_str("[^0-9]"),
                        'W' => out.push_str("[^0-9A-Za-z_]"),
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        out.push_str("\\-");
                    }
                }
                Some(literal @ ('<' | '>')) => out.push(literal),
                Some('b') if in_class => out.push_str("\\x08"),
                Some('d') => out.push_str("[0-9]"),
                Some('w') => out.push_str("[0-9A-Za-z_]"),
                Some('D') => out.push_str("[^0-9]"),
                Some('W') => out.push_str("[^0-9A-Za-z_]"),
                Some('b') if backtracking => out.push_str(
                    "(?:(?<=[0-9A-Za-z_])(?![0-9A-Za-z_])|(?<![0-9A-Za-z_])(?=[0-9A-Za-z_]))",
                ),
                Some('B') if backtracking => out.push_str(
                    "(?:(?<=[0-9A-Za-z_])(?=[0-9A-Za-z_])|(?<![0-9A-Za-z_])(?![0-9A-Za-z_]))",
                ),
                Some('b') => out.push_str("(?-u:\\b)"),
                Some('B') => out.push_str("(?-u:\\B)"),
                Some(escaped) => {
                    out.push('\\');
                    out.push(escaped);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` first (after any `^`) is a member in `regex`:
                // ECMAScript's `[]` (nothing) and `[^]` (anything) are
                // left for `regex` to refuse, not read as something else.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
            }
            '[' => out.push_str("\\["),
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' | '-' if in_class && chars.peek() == Some(&c) => {
                // `&&`, `~~`, `--`: two literals, not a set operation.
                chars.next();
                out.push('\\');
                out.push(c);
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out.into()
}

impl Pattern {
    /// The groups the pattern has, besides the whole match (`{R:0}`).
    pub(super) fn group_count(&self) -> usize {
        match self {
            Pattern::Linear(r) => r.captures_len() - 1,
            Pattern::Backtracking(r) => r.captures_len() - 1,
        }
    }

    /// Compiles `expression`. Only a pattern the `regex` crate refuses for
    /// look-around or a back-reference goes to fancy-regex (whose other
    /// extensions, such as `\K`, are not ECMAScript's and stay refused); an
    /// error is the message of the engine the pattern is for.
    /// `backtrack_limit` is the steps one backtracking match may take.
    pub(super) fn with_backtrack_limit(
        expression: &str,
        ignore_case: bool,
        backtrack_limit: usize,
    ) -> Result<Self, String> {
        let source = expression;
        let expression = &*ecmascript_syntax(source, false);
        let refused = match regex::RegexBuilder::new(expression)
            .case_insensitive(ignore_case)
            .build()
        {
            Ok(linear) => return Ok(Pattern::Linear(linear)),
            Err(refused) => refused,
        };
        use regex_syntax::ast::ErrorKind;
        let needs_backtracking = regex_syntax::ast::parse::Parser::new()
            .parse(expression)
            .is_err_and(|e| {
                matches!(
                    e.kind(),
                    ErrorKind::UnsupportedLookAround | ErrorKind::UnsupportedBackreference
                )
            });
        if !needs_backtracking {
            return Err(refused.to_string());
        }
        fancy_regex::RegexBuilder::new(&ecmascript_syntax(source, true))
            .case_insensitive(ignore_case)
            .backtrack_limit(backtrack_limit)
            .build()
            .map(Pattern::Backtracking)
            .map_err(|e| e.to_string())
    }

    /// Whether the pattern matches somewhere in `haystack`.
    pub(super) fn is_match(&self, haystack: &str) -> Result<bool, GaveUp> {
        match self {
            Pattern::Linear(re) => Ok(re.is_match(haystack)),
            Pattern::Backtracking(re) => re.is_match(haystack).map_err(|_| GaveUp),
        }
    }

    /// The groups of the first match in `haystack`, if any.
    pub(super) fn captures<'h>(&self, haystack: &'h str) -> Result<Option<Groups<'h>>, GaveUp> {
        match self {
            Pattern::Linear(re) => Ok(re.captures(haystack).map(Groups::Linear)),
            Pattern::Backtracking(re) => re
                .captures(haystack)
                .map(|c| c.map(Groups::Backtracking))
                .map_err(|_| GaveUp),
        }
    }

    /// The groups of the first match in `haystack` at or after byte
    /// `start` (a char boundary), if any; `^` and look-behind still see
    /// the text before `start`.
    pub(super) fn captures_at<'h>(
        &self,
        haystack: &'h str,
        start: usize,
    ) -> Result<Option<Groups<'h>>, GaveUp> {
        match self {
            Pattern::Linear(re) => Ok(re.captures_at(haystack, start).map(Groups::Linear)),
            Pattern::Backtracking(re) => re
                .captures_from_pos(haystack, start)
                .map(|c| c.map(Groups::Backtracking))
                .map_err(|_| GaveUp),
        }
    }
}

impl<'h> Groups<'h> {
    /// Where the whole match is in the haystack.
    pub(super) fn span(&self) -> std::ops::Range<usize> {
        let whole = match self {
            Groups::Linear(c) => c.get(0).map(|m| m.range()),
            Groups::Backtracking(c) => c.get(0).map(|m| m.range()),
        };
        // Group 0 always takes part in a match.
        whole.unwrap_or_default()
    }

    /// Group `i`'s text, if the group took part in the match.
    pub(super) fn get(&self, i: usize) -> Option<&'h str> {
        match self {
            Groups::Linear(c) => c.get(i).map(|m| m.as_str()),
            Groups::Backtracking(c) => c.get(i).map(|m| m.as_str()),
        }
    }

    /// Every group's text, in order, the whole match first.
    pub(super) fn to_vec(&self) -> Vec<Option<String>> {
        let len = match self {
            Groups::Linear(c) => c.len(),
            Groups::Backtracking(c) => c.len(),
        };
        (0..len).map(|i| self.get(i).map(str::to_owned)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_around_and_back_references_use_the_backtracking_engine() {
        let plain = Pattern::with_backtrack_limit("^(a+)/(.*)$", false, BACKTRACK_LIMIT).unwrap();
        assert!(matches!(plain, Pattern::Linear(_)));
        let but_api =
            Pattern::with_backtrack_limit("^(?!api/)(.*)$", true, BACKTRACK_LIMIT).unwrap();
        assert!(matches!(but_api, Pattern::Backtracking(_)));
        assert!(!but_api.is_match("API/users").unwrap());
        let groups = but_api.captures("app/route").unwrap().unwrap();
        assert_eq!(groups.get(1), Some("app/route"));
        assert_eq!(
            groups.to_vec(),
            [Some("app/route".into()), Some("app/route".into())]
        );
        let doubled = Pattern::with_backtrack_limit(r"^(\w)\1", false, BACKTRACK_LIMIT).unwrap();
        assert!(doubled.is_match("xxy").unwrap() && !doubled.is_match("xyx").unwrap());
        // What neither takes is the error of the engine it is for.
        let err = Pattern::with_backtrack_limit("^(a", false, BACKTRACK_LIMIT).unwrap_err();
        assert!(err.contains("unclosed group"), "{err}");
        let err = Pattern::with_backtrack_limit("^(?!api/)(a", false, BACKTRACK_LIMIT).unwrap_err();
        assert!(!err.contains("look-around"), "{err}");
        // fancy-regex's own extensions are not ECMAScript's.
        assert!(Pattern::with_backtrack_limit(r"a\Kb", false, BACKTRACK_LIMIT).is_err());
    }

    /// `\<` and `\>` are the characters, as ECMAScript reads them, not
    /// the `regex` crate's word boundaries: the Joomla rule against
    /// `<script>` in a query lets `?sort=description` through.
    #[test]
    fn angle_escapes_are_the_characters_as_in_ecmascript() {
        let joomla =
            Pattern::with_backtrack_limit(r"(\<|%3C).*script.*(\>|%3E)", true, BACKTRACK_LIMIT)
                .unwrap();
        for innocent in [
            "sort=description",
            "q=javascript+tutorial",
            "tab=subscriptions",
        ] {
            assert!(!joomla.is_match(innocent).unwrap(), "{innocent}");
        }
        assert!(joomla.is_match("q=<script>").unwrap());
        assert!(joomla.is_match("q=%3Cscript%3E").unwrap());
        // An escaped backslash before `<` stays an escaped backslash.
        let escaped = Pattern::with_backtrack_limit(r"a\\<", false, BACKTRACK_LIMIT).unwrap();
        assert!(escaped.is_match(r"a\<").unwrap());
        // In the backtracking engine too.
        let ahead = Pattern::with_backtrack_limit(r"^(?!x)\<b\>", false, BACKTRACK_LIMIT).unwrap();
        assert!(ahead.is_match("<b>").unwrap());
    }

    /// `\d`, `\w` and `\b` are ASCII, as in ECMAScript; in a class `[`
    /// and doubled `&`, `~`, `-` are characters; `[\w-.]` has a `-`.
    #[test]
    fn classes_read_as_ecmascript_reads_them() {
        let p = |e: &str| Pattern::with_backtrack_limit(e, false, BACKTRACK_LIMIT).unwrap();
        let id = p(r"^product/(\d+)$");
        assert!(id.is_match("product/42").unwrap());
        assert!(!id.is_match("product/\u{663}\u{664}").unwrap());
        let slug = p(r"^[\w-]{1,255}$");
        assert!(slug.is_match("a-b_c9").unwrap() && !slug.is_match("caf\u{e9}").unwrap());
        assert!(p(r"^\w{1,1000}$").is_match("abc").unwrap());
        assert!(p(r"^[\w-.]+$").is_match("a-b.c").unwrap());
        assert!(p(r"^[\d-z]+$").is_match("1-z").unwrap());
        assert!(p(r"^\W$").is_match("\u{e9}").unwrap());
        assert!(p(r"^[^\W]$").is_match("a").unwrap() && !p(r"^[^\W]$").is_match("\u{e9}").unwrap());
        // An ASCII word boundary: `é` is no word character.
        let word = p(r"\bfoo\b");
        assert!(word.is_match("a foo b").unwrap() && word.is_match("\u{e9}foo\u{e9}").unwrap());
        assert!(!word.is_match("afoo").unwrap());
        assert!(p(r"^[\b]$").is_match("\u{8}").unwrap());
        // `[` in a class, `&&` and `--` are characters.
        assert!(p(r"^[[]$").is_match("[").unwrap());
        assert!(p(r"^[a&&]+$").is_match("a&&").unwrap());
        // `\s` stays Unicode's white space, as in ECMAScript.
        assert!(p(r"^\s$").is_match("\u{a0}").unwrap());
        // Case-insensitively too; and in the backtracking engine.
        let insensitive =
            Pattern::with_backtrack_limit(r"^(\w+)\1$", true, BACKTRACK_LIMIT).unwrap();
        assert!(insensitive.is_match("abAB").unwrap());
        assert!(!insensitive.is_match("\u{e9}\u{e9}").unwrap());
        let ahead = p(r"^(?!api)\b\w+\b$");
        assert!(ahead.is_match("app").unwrap() && !ahead.is_match("api").unwrap());
    }

    #[test]
    fn a_runaway_backtracking_match_gives_up() {
        // A look-ahead inside a repetition keeps it in the backtracking
        // engine: the nested repetitions then try every split of the input.
        let runaway =
            Pattern::with_backtrack_limit(r"^((?!x)a+)+b", false, BACKTRACK_LIMIT).unwrap();
        let input = "a".repeat(40);
        assert!(runaway.is_match(&input).is_err());
        assert!(runaway.captures(&input).is_err());
        assert!(runaway.is_match("aab").unwrap());
    }
}
