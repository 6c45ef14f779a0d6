//! govalidator's `rxURL` (2020-01-08) without a regex engine. Each helper maps the set of rune
//! positions a partial match may have reached to the set reachable after one more piece of the
//! pattern (a Thompson-style simulation), so alternation and backtracking are exact and the cost
//! stays polynomial. The pattern, piece by piece:
//!
//! ```text
//! ^((ftp|tcp|udp|wss?|https?)://)?      scheme
//!  (\S+(:\S*)?@)?                        user info
//!  ( IPv4 | \[IPv6\] | hostname )        host (see the functions below)
//!  \.?(:\d{1,5})?((/|\?|#)[^\s]*)?$      trailing dot, port, path/query/fragment
//! ```
//! `\s` is RE2's ASCII class `[\t\n\f\r ]`; `\d` is `[0-9]`.
//!
//! Separate from the parse ([`super::neturl`]): govalidator runs both, and the pattern is
//! matched against the text as given.

pub(super) fn matches(s: &str) -> bool {
    let t = Text(s.chars().collect());
    let start = t.at_start();
    let mut p = start.clone();
    for scheme in ["ftp://", "tcp://", "udp://", "ws://", "wss://", "http://", "https://"] {
        or(&mut p, &t.lit(&start, scheme));
    }
    let p = t.opt(&p, |p| {
        let user = t.run(p, not_space, 1, None);
        let user = t.opt(&user, |q| t.run(&t.lit(q, ":"), not_space, 0, None));
        t.lit(&user, "@")
    });
    let mut host = ipv4(&t, &p);
    or(&mut host, &t.lit(&ipv6(&t, &t.lit(&p, "[")), "]"));
    or(&mut host, &hostname(&t, &p));
    let p = t.opt(&host, |p| t.lit(p, "."));
    let p = t.opt(&p, |p| t.run(&t.lit(p, ":"), |c| c.is_ascii_digit(), 1, Some(5)));
    let p = t.opt(&p, |p| t.run(&t.one(p, |c| matches!(c, '/' | '?' | '#')), not_space, 0, None));
    t.at_end(&p)
}

/// `([1-9]\d?|1\d\d|2[01]\d|22[0-3]|24\d|25[0-5])(\.(\d{1,2}|1\d\d|2[0-4]\d|25[0-5])){2}`
/// `(?:\.([0-9]\d?|1\d\d|2[0-4]\d|25[0-5]))` — 224-239 refused as first octet.
fn ipv4(t: &Text, from: &Pos) -> Pos {
    const FIRST: &[&[Range]] = &[
        &[('1', '9')],
        &[('1', '9'), D],
        &[one('1'), D, D],
        &[one('2'), ('0', '1'), D],
        &[one('2'), one('2'), ('0', '3')],
        &[one('2'), one('4'), D],
        &[one('2'), one('5'), ('0', '5')],
    ];
    // The last octet's `[0-9]\d?` is the same set as the middle ones' `\d{1,2}`.
    const OTHER: &[&[Range]] =
        &[&[D], &[D, D], &[one('1'), D, D], &[one('2'), ('0', '4'), D], &[one('2'), one('5'), ('0', '5')]];
    let p = t.alternatives(from, FIRST);
    t.repeat(&p, |p| t.alternatives(&t.lit(p, "."), OTHER), 3, 3)
}

/// govalidator's `IP` pattern, between the brackets (H = `[0-9a-fA-F]{1,4}`, V4 = dotted
/// quad of `25[0-5]|(2[0-4]|1{0,1}[0-9]){0,1}[0-9]`).
fn ipv6(t: &Text, from: &Pos) -> Pos {
    let h16 = |p: &Pos| t.run(p, |c| c.is_ascii_hexdigit(), 1, Some(4));
    let h16_colon = |p: &Pos| t.lit(&h16(p), ":");
    let colon_h16 = |p: &Pos| h16(&t.lit(p, ":"));
    let v4_octet = |p: &Pos| {
        t.alternatives(
            p,
            &[&[one('2'), one('5'), ('0', '5')], &[D], &[one('2'), ('0', '4'), D], &[D, D], &[one('1'), D, D]],
        )
    };
    let v4 = |p: &Pos| v4_octet(&t.repeat(p, |q| t.lit(&v4_octet(q), "."), 3, 3));
    let mut out = t.none();
    // (H:){7}H | (H:){1,7}: | (H:){1,6}:H
    or(&mut out, &h16(&t.repeat(from, h16_colon, 7, 7)));
    or(&mut out, &t.lit(&t.repeat(from, h16_colon, 1, 7), ":"));
    or(&mut out, &colon_h16(&t.repeat(from, h16_colon, 1, 6)));
    // (H:){1,5}(:H){1,2} | (H:){1,4}(:H){1,3} | (H:){1,3}(:H){1,4} | (H:){1,2}(:H){1,5}
    for k in 2..=5 {
        or(&mut out, &t.repeat(&t.repeat(from, h16_colon, 1, k), colon_h16, 1, 7 - k));
    }
    // H:((:H){1,6})
    or(&mut out, &t.repeat(&h16_colon(from), colon_h16, 1, 6));
    // :((:H){1,7}|:)
    let colon = t.lit(from, ":");
    or(&mut out, &t.repeat(&colon, colon_h16, 1, 7));
    or(&mut out, &t.lit(&colon, ":"));
    // fe80:(:[0-9a-fA-F]{0,4}){0,4}%[0-9a-zA-Z]{1,}
    let link = t.repeat(&t.lit(from, "fe80:"), |p| t.run(&t.lit(p, ":"), |c| c.is_ascii_hexdigit(), 0, Some(4)), 0, 4);
    or(&mut out, &t.run(&t.lit(&link, "%"), |c| c.is_ascii_alphanumeric(), 1, None));
    // ::(ffff(:0{1,4}){0,1}:){0,1}V4
    let mapped = t.opt(&t.lit(from, "::"), |p| {
        let q = t.opt(&t.lit(p, "ffff"), |q| t.run(&t.lit(q, ":"), |c| c == '0', 1, Some(4)));
        t.lit(&q, ":")
    });
    or(&mut out, &v4(&mapped));
    // (H:){1,4}:V4
    or(&mut out, &v4(&t.lit(&t.repeat(from, h16_colon, 1, 4), ":")));
    out
}

/// `(A|B)?NAME(?:\.([a-zA-Z\x{00a1}-\x{ffff}]{1,}))?` where
/// A = `[a-zA-Z0-9]([a-zA-Z0-9-_]+)?[a-zA-Z0-9]([-\.][a-zA-Z0-9]+)*`,
/// B = `(www\.)|([a-zA-Z0-9]+([-_\.]?[a-zA-Z0-9])*[a-zA-Z0-9]\.[a-zA-Z0-9]+)` (optional),
/// NAME = `([a-zA-Z\x{00a1}-\x{ffff}0-9]+-?-?)*[a-zA-Z\x{00a1}-\x{ffff}0-9]+`.
fn hostname(t: &Text, from: &Pos) -> Pos {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let mut prefix = from.clone();
    let a = t.one(from, alnum);
    let a = t.opt(&a, |p| t.run(p, |c| alnum(c) || c == '-' || c == '_', 1, None));
    let a = t.one(&a, alnum);
    or(&mut prefix, &t.star(&a, |p| t.run(&t.one(p, |c| c == '-' || c == '.'), alnum, 1, None)));
    or(&mut prefix, &t.lit(from, "www."));
    let b = t.run(from, alnum, 1, None);
    let b = t.star(&b, |p| t.one(&t.opt(p, |q| t.one(q, |c| matches!(c, '-' | '_' | '.'))), alnum));
    let b = t.one(&b, alnum);
    or(&mut prefix, &t.run(&t.lit(&b, "."), alnum, 1, None));
    let name = t.star(&prefix, |p| t.run(&t.run(p, name_char, 1, None), |c| c == '-', 0, Some(2)));
    let name = t.run(&name, name_char, 1, None);
    t.opt(&name, |p| t.run(&t.lit(p, "."), |c| c.is_ascii_alphabetic() || wide(c), 1, None))
}

type Range = (char, char);
const D: Range = ('0', '9');
const fn one(c: char) -> Range {
    (c, c)
}

fn not_space(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// `\x{00a1}-\x{ffff}`: most of the BMP, not the astral planes.
fn wide(c: char) -> bool {
    ('\u{a1}'..='\u{ffff}').contains(&c)
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || wide(c)
}

/// A set of positions `0..=len` (bit `i`: a partial match may stand before rune `i`).
#[derive(Clone)]
struct Pos(Vec<u64>);

impl Pos {
    fn set(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|word| word >> (i % 64) & 1 == 1)
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }

    /// The positions, ascending.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            std::iter::successors(Some(word), |&bits| Some(bits & bits.wrapping_sub(1)))
                .take_while(|&bits| bits != 0)
                .map(move |bits| w * 64 + bits.trailing_zeros() as usize)
        })
    }
}

fn or(into: &mut Pos, other: &Pos) {
    for (a, b) in into.0.iter_mut().zip(&other.0) {
        *a |= b;
    }
}

/// The text as runes; position `i` is "before rune `i`", `len` is the end.
struct Text(Vec<char>);

impl Text {
    fn none(&self) -> Pos {
        Pos(vec![0; self.0.len() / 64 + 1])
    }

    fn at_start(&self) -> Pos {
        let mut p = self.none();
        p.set(0);
        p
    }

    fn at_end(&self, p: &Pos) -> bool {
        p.has(self.0.len())
    }

    /// One rune satisfying `class`.
    fn one(&self, from: &Pos, class: impl Fn(char) -> bool) -> Pos {
        let mut to = self.none();
        for i in from.iter() {
            if self.0.get(i).is_some_and(|&c| class(c)) {
                to.set(i + 1);
            }
        }
        to
    }

    /// `class{min,max}`, unbounded when `max` is `None`.
    fn run(&self, from: &Pos, class: impl Fn(char) -> bool + Copy, min: usize, max: Option<usize>) -> Pos {
        let mut cur = from.clone();
        for _ in 0..min {
            cur = self.one(&cur, class);
        }
        let mut all = cur.clone();
        match max {
            Some(max) => {
                for _ in min..max {
                    cur = self.one(&cur, class);
                    or(&mut all, &cur);
                }
            }
            // Extend each reached position through its run; a run already covered (from an
            // earlier start, or a later start still to come) ends the walk: linear overall.
            None => {
                for start in cur.iter() {
                    let mut i = start;
                    while self.0.get(i).is_some_and(|&c| class(c)) && !all.has(i + 1) {
                        i += 1;
                        all.set(i);
                    }
                }
            }
        }
        all
    }

    fn lit(&self, from: &Pos, text: &str) -> Pos {
        text.chars().fold(from.clone(), |p, want| self.one(&p, |c| c == want))
    }

    /// Union of alternatives, each a sequence of one-rune ranges.
    fn alternatives(&self, from: &Pos, alternatives: &[&[Range]]) -> Pos {
        let mut out = self.none();
        for alternative in alternatives {
            let end = alternative.iter().fold(from.clone(), |p, &(lo, hi)| self.one(&p, |c| (lo..=hi).contains(&c)));
            or(&mut out, &end);
        }
        out
    }

    fn opt(&self, from: &Pos, piece: impl Fn(&Pos) -> Pos) -> Pos {
        let mut out = piece(from);
        or(&mut out, from);
        out
    }

    /// `(piece){min,max}`.
    fn repeat(&self, from: &Pos, piece: impl Fn(&Pos) -> Pos, min: usize, max: usize) -> Pos {
        let mut cur = from.clone();
        for _ in 0..min {
            cur = piece(&cur);
        }
        let mut all = cur.clone();
        for _ in min..max {
            cur = piece(&cur);
            or(&mut all, &cur);
        }
        all
    }

    /// `(piece)*`: only newly reached positions are fed back, until nothing new appears.
    fn star(&self, from: &Pos, piece: impl Fn(&Pos) -> Pos) -> Pos {
        let mut all = from.clone();
        let mut frontier = from.clone();
        while !frontier.is_empty() {
            frontier = piece(&frontier);
            for (new, seen) in frontier.0.iter_mut().zip(&mut all.0) {
                *new &= !*seen;
                *seen |= *new;
            }
        }
        all
    }
}
