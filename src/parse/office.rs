//! The office's own contact details — its mailbox, phone and fax numbers —
//! which appear in every quoted notice, in forms a unit filled in over the
//! office's example, and in signatures: they are never a unit's values.

use unicode_normalization::UnicodeNormalization;

/// Digits a phone number must have to be compared (a local number).
const MIN_PHONE_DIGITS: usize = 7;

/// The office's addresses and numbers, from the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfficeContacts {
    /// Lower-case mail addresses.
    emails: Vec<String>,
    /// Digits only, at least [`MIN_PHONE_DIGITS`].
    phones: Vec<String>,
}

impl OfficeContacts {
    /// From the config's list: an item with `@` is an address (a display
    /// name around `<…>` is allowed), any other a phone or fax number.
    pub fn new<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut contacts = Self::default();
        for item in items {
            let item = item.as_ref().trim();
            if item.contains('@') {
                let address = match (item.rfind('<'), item.rfind('>')) {
                    (Some(a), Some(b)) if a < b => &item[a + 1..b],
                    _ => item,
                };
                let address = address.trim().to_lowercase();
                if !address.is_empty() && !contacts.emails.contains(&address) {
                    contacts.emails.push(address);
                }
            } else {
                let digits = digits(item);
                if digits.len() >= MIN_PHONE_DIGITS && !contacts.phones.contains(&digits) {
                    contacts.phones.push(digits);
                }
            }
        }
        contacts
    }

    pub fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.phones.is_empty()
    }

    /// Whether `value` is (or carries) one of the office's addresses or
    /// numbers; a number matches with or without its area code.
    pub fn is_office(&self, value: &str) -> bool {
        // Full-width writing (`xxdc2004＠163．com`, `６７２２１５３１`) is
        // the same address or number.
        let value: String = value.nfkc().collect();
        let value = value.as_str();
        let lower = value.to_lowercase();
        if self.emails.iter().any(|e| lower.contains(e.as_str())) {
            return true;
        }
        // Each run of digits (with the usual separators inside) on its own:
        // `67221531 / 13905771234` holds two numbers.
        numbers(value).iter().any(|n| {
            n.len() >= MIN_PHONE_DIGITS
                && self
                    .phones
                    .iter()
                    .any(|p| p == n || (p.ends_with(n.as_str()) || n.ends_with(p.as_str())))
        })
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Runs of digits joined by `-`, spaces, brackets (`(0577)67221531`,
/// `0577-6722 1531`), each as digits only.
fn numbers(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            current.push(c);
        } else if matches!(c, '-' | ' ' | '(' | ')' | '（' | '）' | '－' | '—') {
            continue;
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> OfficeContacts {
        OfficeContacts::new([
            "永嘉县人民政府办公室信息督查科 <xxdc2004@163.com>",
            "0577-67221531",
            "传真 0577-67221532",
            "12",
        ])
    }

    #[test]
    fn the_office_is_recognised_in_any_writing() {
        assert!(office().is_office("XXDC2004＠163．COM"));
        assert!(office().is_office("０５７７－６７２２１５３１"));
        let o = office();
        for value in [
            "xxdc2004@163.com",
            "XXDC2004@163.COM",
            "67221531",
            "0577-67221531",
            "(0577)67221531",
            "0577 6722 1532",
            "057767221532",
        ] {
            assert!(o.is_office(value), "{value}");
        }
    }

    #[test]
    fn units_values_are_not_the_office() {
        let o = office();
        for value in [
            "hfp@yjmz.gov.cn",
            "67121553",
            "0577-67121553",
            "13957785650",
            "601567",
            "12",
        ] {
            assert!(!o.is_office(value), "{value}");
        }
        assert!(OfficeContacts::new(Vec::<String>::new()).is_empty());
    }
}
