//! Text cleaning: open_clip `_clean_lower` = `whitespace_clean(basic_clean(x)).lower()`, i.e. the
//! ftfy 6.3.1 subset described in the [module docs](super), CPython's `html.unescape` (twice),
//! Python's notion of whitespace, and lower-casing. [`clean`] gives the exact string the
//! tokenizer's regex splits.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// open_clip `_clean_lower(text)`: ftfy subset, double HTML unescape, strip, whitespace folding,
/// lower-casing. This is the exact string the regex splits.
pub fn clean(text: &str) -> String {
    // basic_clean
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    let stripped = unescaped.trim_matches(is_py_whitespace);
    // whitespace_clean: " ".join(text.split()).strip()
    let folded = stripped.split(is_py_whitespace).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    folded.to_lowercase()
}

/// Python `str.isspace()` (CPython `Py_UNICODE_ISSPACE`, Unicode 14.0): bidi class WS, B or S, or
/// category Zs. Unlike Rust's `char::is_whitespace` it includes U+001C..U+001F.
pub fn is_py_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1C}'..='\u{1F}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// Windows-1252 for 0x80..0x9F, undefined bytes kept as the C1 code point: ftfy's
/// "sloppy-windows-1252" decoding of one byte, and CPython's `html._invalid_charrefs` range.
const CP1252_C1: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2C6}', '\u{2030}',
    '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}',
    '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}',
    '\u{17E}', '\u{178}',
];

/// HTML entity names (WHATWG, as in CPython `html.entities.html5`) that are also valid without a
/// trailing semicolon: the keys of `html5` not ending in `;` (106 legacy names).
const LEGACY_ENTITIES: [&str; 106] = [
    "AElig", "AMP", "Aacute", "Acirc", "Agrave", "Aring", "Atilde", "Auml", "COPY", "Ccedil", "ETH", "Eacute", "Ecirc",
    "Egrave", "Euml", "GT", "Iacute", "Icirc", "Igrave", "Iuml", "LT", "Ntilde", "Oacute", "Ocirc", "Ograve", "Oslash",
    "Otilde", "Ouml", "QUOT", "REG", "THORN", "Uacute", "Ucirc", "Ugrave", "Uuml", "Yacute", "aacute", "acirc",
    "acute", "aelig", "agrave", "amp", "aring", "atilde", "auml", "brvbar", "ccedil", "cedil", "cent", "copy",
    "curren", "deg", "divide", "eacute", "ecirc", "egrave", "eth", "euml", "frac12", "frac14", "frac34", "gt",
    "iacute", "icirc", "iexcl", "igrave", "iquest", "iuml", "laquo", "lt", "macr", "micro", "middot", "nbsp", "not",
    "ntilde", "oacute", "ocirc", "ograve", "ordf", "ordm", "oslash", "otilde", "ouml", "para", "plusmn", "pound",
    "quot", "raquo", "reg", "sect", "shy", "sup1", "sup2", "sup3", "szlig", "thorn", "times", "uacute", "ucirc",
    "ugrave", "uml", "uuml", "yacute", "yen", "yuml",
];

/// The 93 HTML5 entities whose value is two code points. `html_escape::NAMED_ENTITIES` (0.2.15)
/// keeps only the first code point of these (e.g. `&gesl;` → U+22DB without U+FE00), CPython's
/// `html.entities.html5` keeps both; these override the crate's table.
const MULTI_CODE_POINT_ENTITIES: [(&str, &str); 93] = [
    ("NotEqualTilde", "\u{2242}\u{338}"),
    ("NotGreaterFullEqual", "\u{2267}\u{338}"),
    ("NotGreaterGreater", "\u{226B}\u{338}"),
    ("NotGreaterSlantEqual", "\u{2A7E}\u{338}"),
    ("NotHumpDownHump", "\u{224E}\u{338}"),
    ("NotHumpEqual", "\u{224F}\u{338}"),
    ("NotLeftTriangleBar", "\u{29CF}\u{338}"),
    ("NotLessLess", "\u{226A}\u{338}"),
    ("NotLessSlantEqual", "\u{2A7D}\u{338}"),
    ("NotNestedGreaterGreater", "\u{2AA2}\u{338}"),
    ("NotNestedLessLess", "\u{2AA1}\u{338}"),
    ("NotPrecedesEqual", "\u{2AAF}\u{338}"),
    ("NotRightTriangleBar", "\u{29D0}\u{338}"),
    ("NotSquareSubset", "\u{228F}\u{338}"),
    ("NotSquareSuperset", "\u{2290}\u{338}"),
    ("NotSubset", "\u{2282}\u{20D2}"),
    ("NotSucceedsEqual", "\u{2AB0}\u{338}"),
    ("NotSucceedsTilde", "\u{227F}\u{338}"),
    ("NotSuperset", "\u{2283}\u{20D2}"),
    ("ThickSpace", "\u{205F}\u{200A}"),
    ("acE", "\u{223E}\u{333}"),
    ("bne", "\u{3D}\u{20E5}"),
    ("bnequiv", "\u{2261}\u{20E5}"),
    ("caps", "\u{2229}\u{FE00}"),
    ("cups", "\u{222A}\u{FE00}"),
    ("fjlig", "\u{66}\u{6A}"),
    ("gesl", "\u{22DB}\u{FE00}"),
    ("gvertneqq", "\u{2269}\u{FE00}"),
    ("gvnE", "\u{2269}\u{FE00}"),
    ("lates", "\u{2AAD}\u{FE00}"),
    ("lesg", "\u{22DA}\u{FE00}"),
    ("lvertneqq", "\u{2268}\u{FE00}"),
    ("lvnE", "\u{2268}\u{FE00}"),
    ("nGg", "\u{22D9}\u{338}"),
    ("nGt", "\u{226B}\u{20D2}"),
    ("nGtv", "\u{226B}\u{338}"),
    ("nLl", "\u{22D8}\u{338}"),
    ("nLt", "\u{226A}\u{20D2}"),
    ("nLtv", "\u{226A}\u{338}"),
    ("nang", "\u{2220}\u{20D2}"),
    ("napE", "\u{2A70}\u{338}"),
    ("napid", "\u{224B}\u{338}"),
    ("nbump", "\u{224E}\u{338}"),
    ("nbumpe", "\u{224F}\u{338}"),
    ("ncongdot", "\u{2A6D}\u{338}"),
    ("nedot", "\u{2250}\u{338}"),
    ("nesim", "\u{2242}\u{338}"),
    ("ngE", "\u{2267}\u{338}"),
    ("ngeqq", "\u{2267}\u{338}"),
    ("ngeqslant", "\u{2A7E}\u{338}"),
    ("nges", "\u{2A7E}\u{338}"),
    ("nlE", "\u{2266}\u{338}"),
    ("nleqq", "\u{2266}\u{338}"),
    ("nleqslant", "\u{2A7D}\u{338}"),
    ("nles", "\u{2A7D}\u{338}"),
    ("notinE", "\u{22F9}\u{338}"),
    ("notindot", "\u{22F5}\u{338}"),
    ("nparsl", "\u{2AFD}\u{20E5}"),
    ("npart", "\u{2202}\u{338}"),
    ("npre", "\u{2AAF}\u{338}"),
    ("npreceq", "\u{2AAF}\u{338}"),
    ("nrarrc", "\u{2933}\u{338}"),
    ("nrarrw", "\u{219D}\u{338}"),
    ("nsce", "\u{2AB0}\u{338}"),
    ("nsubE", "\u{2AC5}\u{338}"),
    ("nsubset", "\u{2282}\u{20D2}"),
    ("nsubseteqq", "\u{2AC5}\u{338}"),
    ("nsucceq", "\u{2AB0}\u{338}"),
    ("nsupE", "\u{2AC6}\u{338}"),
    ("nsupset", "\u{2283}\u{20D2}"),
    ("nsupseteqq", "\u{2AC6}\u{338}"),
    ("nvap", "\u{224D}\u{20D2}"),
    ("nvge", "\u{2265}\u{20D2}"),
    ("nvgt", "\u{3E}\u{20D2}"),
    ("nvle", "\u{2264}\u{20D2}"),
    ("nvlt", "\u{3C}\u{20D2}"),
    ("nvltrie", "\u{22B4}\u{20D2}"),
    ("nvrtrie", "\u{22B5}\u{20D2}"),
    ("nvsim", "\u{223C}\u{20D2}"),
    ("race", "\u{223D}\u{331}"),
    ("smtes", "\u{2AAC}\u{FE00}"),
    ("sqcaps", "\u{2293}\u{FE00}"),
    ("sqcups", "\u{2294}\u{FE00}"),
    ("varsubsetneq", "\u{228A}\u{FE00}"),
    ("varsubsetneqq", "\u{2ACB}\u{FE00}"),
    ("varsupsetneq", "\u{228B}\u{FE00}"),
    ("varsupsetneqq", "\u{2ACC}\u{FE00}"),
    ("vnsub", "\u{2282}\u{20D2}"),
    ("vnsup", "\u{2283}\u{20D2}"),
    ("vsubnE", "\u{2ACB}\u{FE00}"),
    ("vsubne", "\u{228A}\u{FE00}"),
    ("vsupnE", "\u{2ACC}\u{FE00}"),
    ("vsupne", "\u{228B}\u{FE00}"),
];

struct CleanTables {
    /// `html5` keys that end in ';' (stored without it) → replacement.
    named: HashMap<&'static str, &'static str>,
    legacy: HashSet<&'static str>,
    /// CPython `html._charref`.
    charref: Regex,
    /// ftfy `HTML_ENTITY_RE`.
    ftfy_entity_re: Regex,
    /// ftfy `HTML_ENTITIES`: `"&name;"` → replacement, including derived all-caps entries.
    ftfy_entities: HashMap<String, String>,
    /// ftfy `WIDTH_MAP`.
    width: HashMap<char, String>,
    /// ftfy `ANSI_RE`.
    ansi: Regex,
}

fn tables() -> &'static CleanTables {
    static TABLES: OnceLock<CleanTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut named: HashMap<&'static str, &'static str> = html_escape::NAMED_ENTITIES
            .iter()
            .filter_map(|(name, value)| std::str::from_utf8(name).ok().map(|n| (n, *value)))
            .collect();
        named.extend(MULTI_CODE_POINT_ENTITIES);
        let legacy: HashSet<&'static str> = LEGACY_ENTITIES.iter().copied().collect();
        let charref = Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)").expect("static regex");
        let ftfy_entity_re = Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("static regex");
        let ansi = Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").expect("static regex");
        let mut tables = CleanTables {
            named,
            legacy,
            charref,
            ftfy_entity_re,
            ftfy_entities: HashMap::new(),
            width: HashMap::new(),
            ansi,
        };
        // ftfy.chardata._build_html_entities
        let mut ftfy_entities = HashMap::with_capacity(2 * tables.named.len());
        for (&name, &value) in &tables.named {
            ftfy_entities.insert(format!("&{name};"), value.to_string());
        }
        for (&name, &value) in &tables.named {
            if name == name.to_lowercase() {
                let upper = format!("&{};", name.to_uppercase());
                if html_unescape_with(&tables, &upper) == upper {
                    ftfy_entities.insert(upper, value.to_uppercase());
                }
            }
        }
        tables.ftfy_entities = ftfy_entities;
        // ftfy.chardata._build_width_map
        let mut width = HashMap::new();
        width.insert('\u{3000}', " ".to_string());
        for cp in 0xFF01..0xFFF0u32 {
            if let Some(c) = char::from_u32(cp) {
                let alt: String = std::iter::once(c).nfkc().collect();
                if alt != c.to_string() {
                    width.insert(c, alt);
                }
            }
        }
        tables.width = width;
        tables
    })
}

/// CPython 3.11 `html.unescape`: named references (with `;`, or one of the 106 legacy names
/// without it, longest-prefix rule), decimal and hexadecimal references with the HTML5
/// replacement rules.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    html_unescape_with(tables(), text)
}

fn html_unescape_with(t: &CleanTables, text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    t.charref
        .replace_all(text, |caps: &regex::Captures<'_>| -> String {
            let s = &caps[1];
            if let Some(num) = s.strip_prefix('#') {
                let (digits, radix) = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => (hex, 16),
                    None => (num, 10),
                };
                let digits = digits.trim_end_matches(';');
                // Saturate: anything beyond 0x10FFFF behaves the same.
                let mut value: u32 = 0;
                for d in digits.chars() {
                    let dv = d.to_digit(radix).unwrap_or(0);
                    value = value.saturating_mul(radix).saturating_add(dv).min(0x11_0000);
                }
                charref_to_string(value)
            } else {
                if let Some(name) = s.strip_suffix(';') {
                    if let Some(v) = t.named.get(name) {
                        return (*v).to_string();
                    }
                } else if t.legacy.contains(s) {
                    return t.named.get(s).map(|v| (*v).to_string()).unwrap_or_else(|| format!("&{s}"));
                }
                // Longest prefix (at least 2 code points, shorter than s) that is a legacy name.
                let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
                for x in (2..bounds.len()).rev() {
                    let prefix = &s[..bounds[x]];
                    if t.legacy.contains(prefix) {
                        if let Some(v) = t.named.get(prefix) {
                            return format!("{v}{}", &s[bounds[x]..]);
                        }
                    }
                }
                format!("&{s}")
            }
        })
        .into_owned()
}

/// CPython `html._replace_charref` for a numeric reference.
fn charref_to_string(num: u32) -> String {
    match num {
        0x00 => "\u{FFFD}".to_string(),
        0x0D => "\r".to_string(),
        0x80..=0x9F => CP1252_C1[(num - 0x80) as usize].to_string(),
        0xD800..=0xDFFF => "\u{FFFD}".to_string(),
        n if n > 0x10FFFF => "\u{FFFD}".to_string(),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => String::new(),
        n if (n & 0xFFFE) == 0xFFFE => String::new(), // U+xFFFE / U+xFFFF non-characters
        n => char::from_u32(n).map(String::from).unwrap_or_else(|| "\u{FFFD}".to_string()),
    }
}

/// The ftfy 6.3.1 `fix_text` subset described in the module docs (no mojibake repair).
pub fn fix_text(text: &str) -> String {
    const MAX_DECODE_LENGTH: usize = 1_000_000;
    let t = tables();
    let mut out = String::with_capacity(text.len());
    let mut unescape = true; // unescape_html="auto"
    let mut rest = text;
    while !rest.is_empty() {
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let seg_end = rest[..line_end].char_indices().nth(MAX_DECODE_LENGTH).map_or(line_end, |(i, _)| i);
        let segment = &rest[..seg_end];
        if unescape && segment.contains('<') {
            unescape = false; // sticky for the remaining segments, as in ftfy
        }
        out.push_str(&fix_segment(t, segment, unescape));
        rest = &rest[seg_end..];
    }
    out
}

/// ftfy `fix_and_explain` on one segment: the fixers in order, repeated until nothing changes.
fn fix_segment(t: &CleanTables, segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    // Every step is idempotent or shrinking, so this ends after a few rounds; the cap only
    // guards against an unforeseen cycle.
    for _ in 0..1000 {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(t, &text);
        }
        // fix_encoding: not implemented (module docs, "Known gaps" 1).
        text = map_chars(&text, |c| match c {
            '\u{80}'..='\u{9F}' => Some(Cow::Owned(CP1252_C1[c as usize - 0x80].to_string())),
            _ => None,
        });
        text = map_chars(&text, |c| latin_ligature(c).map(Cow::Borrowed));
        text = map_chars(&text, |c| t.width.get(&c).map(|s| Cow::Borrowed(s.as_str())));
        text = map_chars(&text, |c| match c {
            '\u{2BC}' | '\u{2018}'..='\u{201B}' => Some(Cow::Borrowed("'")),
            '\u{201C}'..='\u{201F}' => Some(Cow::Borrowed("\"")),
            _ => None,
        });
        text = text.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        // fix_surrogates: nothing to do for a Rust string.
        if text.contains('\u{1b}') {
            text = t.ansi.replace_all(&text, "").into_owned();
        }
        text.retain(|c| {
            !matches!(c,
                '\u{00}'..='\u{08}' | '\u{0B}' | '\u{0E}'..='\u{1F}' | '\u{7F}'
                | '\u{206A}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFC}')
        });
        text = text.nfc().collect();
        if text == orig {
            break;
        }
    }
    text
}

/// ftfy `fixes.unescape_html`.
fn ftfy_unescape_html(t: &CleanTables, text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    t.ftfy_entity_re
        .replace_all(text, |caps: &regex::Captures<'_>| -> String {
            let m = &caps[0];
            if let Some(v) = t.ftfy_entities.get(m) {
                v.clone()
            } else if m.starts_with("&#") {
                let unescaped = html_unescape_with(t, m);
                if unescaped.contains(';') {
                    m.to_string()
                } else {
                    unescaped
                }
            } else {
                m.to_string()
            }
        })
        .into_owned()
}

/// ftfy `chardata.LIGATURES`.
fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// `str.translate` with a per-char mapping (`None` keeps the char).
fn map_chars<'a>(text: &str, f: impl Fn(char) -> Option<Cow<'a, str>>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(s) => out.push_str(&s),
            None => out.push(c),
        }
    }
    out
}
