//! Caller numbers to E.164, and the allow/deny patterns that match them.
//!
//! Why not the `phonenumber` crate: it validates against libphonenumber's full
//! metadata with regular expressions, which costs several microseconds per
//! number and pulls megabytes of metadata into the binary; our whole INVITE
//! budget is 5 µs. Screening needs only *canonical digits* to look numbers up in
//! reputation data that is itself keyed by E.164, so a table of calling code,
//! international (IDD) prefix and trunk prefix per country is enough: it turns
//! every dialling form real trunks send (`+`, `00`/`011`, national with trunk
//! prefix, NANP 10/11 digits, visual separators, `tel:` numbers) into E.164
//! without allocating more than the result.

use std::fmt;

/// E.164 allows at most 15 digits after the `+`.
pub const E164_MAX_DIGITS: usize = 15;
/// Shorter numbers are service codes or junk, not callers we can look up.
pub const E164_MIN_DIGITS: usize = 7;

/// Dialling facts of one country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country {
    pub iso: &'static str,
    /// Country calling code, without `+`.
    pub calling_code: &'static str,
    /// International call prefix dialled before a calling code.
    pub idd: &'static str,
    /// National trunk prefix dropped when the calling code is added ("" = none).
    pub trunk: &'static str,
}

macro_rules! countries {
    ($($iso:literal $cc:literal $idd:literal $trunk:literal),* $(,)?) => {
        const COUNTRIES: &[Country] = &[$(Country { iso: $iso, calling_code: $cc, idd: $idd, trunk: $trunk }),*];
    };
}

// The NANP, the larger European markets, and every country the Hiya Protect
// cache supports (docs/providers.md).
countries! {
    "US" "1" "011" "1", "CA" "1" "011" "1", "GB" "44" "00" "0", "FR" "33" "00" "0",
    "DE" "49" "00" "0", "ES" "34" "00" "", "IT" "39" "00" "", "NL" "31" "00" "0",
    "BE" "32" "00" "0", "CH" "41" "00" "0", "AT" "43" "00" "0", "IE" "353" "00" "0",
    "PT" "351" "00" "", "SE" "46" "00" "0", "NO" "47" "00" "", "DK" "45" "00" "",
    "PL" "48" "00" "", "AU" "61" "0011" "0", "NZ" "64" "00" "0", "MX" "52" "00" "",
    "RU" "7" "810" "8", "CN" "86" "00" "0",
    "AF" "93" "00" "0", "BD" "880" "00" "0", "BR" "55" "00" "0", "BT" "975" "00" "",
    "DZ" "213" "00" "0", "EG" "20" "00" "0", "GH" "233" "00" "0", "HK" "852" "001" "",
    "ID" "62" "001" "0", "IL" "972" "00" "0", "IN" "91" "00" "0", "IQ" "964" "00" "0",
    "JO" "962" "00" "0", "JP" "81" "010" "0", "KE" "254" "000" "0", "KG" "996" "00" "0",
    "KH" "855" "001" "0", "KZ" "7" "810" "8", "LA" "856" "00" "0", "LB" "961" "00" "0",
    "LK" "94" "00" "0", "MA" "212" "00" "0", "MM" "95" "00" "0", "MY" "60" "00" "0",
    "NG" "234" "009" "0", "NP" "977" "00" "0", "PG" "675" "00" "", "PH" "63" "00" "0",
    "PK" "92" "00" "0", "PS" "970" "00" "0", "SA" "966" "00" "0", "SG" "65" "000" "",
    "TH" "66" "001" "0", "TN" "216" "00" "", "TR" "90" "00" "0", "TW" "886" "002" "0",
    "VN" "84" "00" "0", "YE" "967" "00" "0", "ZA" "27" "00" "0",
}

impl Country {
    pub fn from_iso(iso: &str) -> Option<Country> {
        COUNTRIES.iter().copied().find(|c| c.iso == iso)
    }

    pub fn supported_list() -> String {
        COUNTRIES
            .iter()
            .map(|c| c.iso)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a caller string is not a number we can screen by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    #[error("empty number")]
    Empty,
    #[error("{what:?} is not a phone number (only digits, '+' and visual separators are allowed)")]
    NotDigits { what: String },
    #[error("{digits} digits is not a valid E.164 length ({E164_MIN_DIGITS}–{E164_MAX_DIGITS})")]
    Length { digits: usize },
}

/// Normalises a dialled or presented number to E.164 (`+` and digits).
///
/// Visual separators (`-`, `.`, space, parentheses, and their `%20` escapes
/// are not expected: the caller decodes URIs first) are ignored; anything else
/// that is not a digit makes the input "not a number".
pub fn to_e164(raw: &str, country: &Country) -> Result<String, NumberError> {
    let raw = raw.trim();
    let (plus, rest) = match raw.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, raw),
    };
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '-' | '.' | ' ' | '(' | ')' => {}
            _ => {
                return Err(NumberError::NotDigits {
                    what: raw.chars().take(40).collect(),
                });
            }
        }
    }
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    let national_to_intl = |national: &str| -> String {
        let national = match country.trunk {
            "" => national,
            trunk => national.strip_prefix(trunk).unwrap_or(national),
        };
        format!("{}{}", country.calling_code, national)
    };
    let intl = if plus {
        digits
    } else if let Some(r) = digits.strip_prefix(country.idd) {
        r.to_string()
    } else if digits.starts_with("00") && country.idd != "00" {
        // "00" is the IDD almost everywhere; accept it even where the national
        // prefix differs, as carriers normalise to it.
        digits[2..].to_string()
    } else if country.calling_code == "1" {
        // NANP: 10-digit national numbers, or 11 digits with the leading 1.
        match digits.len() {
            10 => format!("1{digits}"),
            11 if digits.starts_with('1') => digits,
            _ => national_to_intl(&digits),
        }
    } else {
        national_to_intl(&digits)
    };
    let n = intl.len();
    if !(E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&n) {
        return Err(NumberError::Length { digits: n });
    }
    let mut out = String::with_capacity(n + 1);
    out.push('+');
    out.push_str(&intl);
    Ok(out)
}

/// An allow/deny list entry: an exact E.164 number or an E.164 prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberPattern {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; write an E.164 number such as \"+15551230000\" or a prefix such as \"+1800*\"")]
pub struct PatternError(&'static str);

impl NumberPattern {
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let digits = body
            .strip_prefix('+')
            .ok_or(PatternError("must start with '+'"))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PatternError("only digits may follow '+'"));
        }
        if digits.len() > E164_MAX_DIGITS {
            return Err(PatternError("longer than 15 digits"));
        }
        Ok(if prefix {
            NumberPattern::Prefix(body.to_string())
        } else {
            NumberPattern::Exact(body.to_string())
        })
    }

    pub fn matches(&self, e164: &str) -> bool {
        match self {
            NumberPattern::Exact(n) => n == e164,
            NumberPattern::Prefix(p) => e164.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for NumberPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberPattern::Exact(n) => f.write_str(n),
            NumberPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A set of patterns. Exact numbers are hashed; prefixes are few in practice
/// and scanned.
#[derive(Debug, Clone, Default)]
pub struct NumberSet {
    exact: std::collections::HashSet<String>,
    prefixes: Vec<String>,
}

impl NumberSet {
    /// Builds the set; entries were validated with the config.
    pub fn new(entries: &[String]) -> Result<Self, PatternError> {
        let mut set = NumberSet::default();
        for e in entries {
            match NumberPattern::parse(e)? {
                NumberPattern::Exact(n) => {
                    set.exact.insert(n);
                }
                NumberPattern::Prefix(p) => set.prefixes.push(p),
            }
        }
        Ok(set)
    }

    /// The matching entry, for the decision's explanation.
    pub fn find(&self, e164: &str) -> Option<NumberPattern> {
        if self.exact.contains(e164) {
            return Some(NumberPattern::Exact(e164.to_string()));
        }
        self.prefixes
            .iter()
            .find(|p| e164.starts_with(p.as_str()))
            .map(|p| NumberPattern::Prefix(p.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Country {
        Country::from_iso("US").unwrap()
    }

    #[test]
    fn nanp_forms_normalise_to_the_same_number() {
        for raw in [
            "+15557654321",
            "15557654321",
            "5557654321",
            "(555) 765-4321",
            "555.765.4321",
            "01115557654321",
            "+1-555-765-4321",
        ] {
            assert_eq!(to_e164(raw, &us()).unwrap(), "+15557654321", "{raw}");
        }
    }

    #[test]
    fn trunk_and_idd_prefixes_follow_the_country() {
        let gb = Country::from_iso("GB").unwrap();
        assert_eq!(to_e164("020 7946 0018", &gb).unwrap(), "+442079460018");
        assert_eq!(to_e164("0033142685300", &gb).unwrap(), "+33142685300");
        let it = Country::from_iso("IT").unwrap();
        // Italy keeps its leading 0 after the calling code.
        assert_eq!(to_e164("06 6982 0000", &it).unwrap(), "+390669820000");
        let india = Country::from_iso("IN").unwrap();
        assert_eq!(to_e164("09876543210", &india).unwrap(), "+919876543210");
        assert_eq!(to_e164("9876543210", &india).unwrap(), "+919876543210");
        // 00 works as an international prefix even where the IDD is 011.
        assert_eq!(to_e164("00442079460018", &us()).unwrap(), "+442079460018");
    }

    #[test]
    fn non_numbers_and_bad_lengths_are_errors() {
        assert!(matches!(
            to_e164("anonymous", &us()),
            Err(NumberError::NotDigits { .. })
        ));
        assert_eq!(to_e164("", &us()), Err(NumberError::Empty));
        assert!(matches!(
            to_e164("+12", &us()),
            Err(NumberError::Length { .. })
        ));
        assert!(matches!(
            to_e164("+1234567890123456", &us()),
            Err(NumberError::Length { .. })
        ));
    }

    #[test]
    fn patterns_match_exact_and_prefix() {
        let set = NumberSet::new(&["+15551230000".into(), "+1800*".into()]).unwrap();
        assert_eq!(
            set.find("+15551230000"),
            Some(NumberPattern::Exact("+15551230000".into()))
        );
        assert_eq!(
            set.find("+18005550000"),
            Some(NumberPattern::Prefix("+1800".into()))
        );
        assert_eq!(set.find("+15551230001"), None);
        assert!(NumberPattern::parse("1555").is_err());
        assert!(NumberPattern::parse("+15a5").is_err());
    }
}
