use std::fmt;

/// An email address as the bridge keys subscribers by it: trimmed and lower-cased, within RFC
/// 5321's limits (DESIGN 3.7), with one `@` between a local part and a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// The reason a text is not an email address the bridge accepts; it quotes at most the start of
/// the text (an address of a megabyte is not repeated back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a valid email address: {reason}", crate::excerpt(.text))]
pub struct InvalidEmail {
    /// The text as received.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// RFC 5321's limits, in octets.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_ADDRESS: usize = 254;

impl Email {
    /// Normalises and checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let email = raw.trim().to_lowercase();
        match check(&email) {
            Ok(()) => Ok(Email(email)),
            Err(reason) => Err(InvalidEmail {
                text: raw.to_string(),
                reason,
            }),
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a normalised address, if anything.
fn check(email: &str) -> Result<(), &'static str> {
    if email.chars().any(char::is_control) {
        return Err("it holds a control character");
    }
    // A quoted local part may hold an `@`, so the domain starts after the last one.
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("it has no `@`");
    };
    if local.is_empty() {
        return Err("the part before the `@` is empty");
    }
    if local.len() > MAX_LOCAL {
        return Err("the part before the `@` is longer than 64 octets");
    }
    if domain.len() > MAX_DOMAIN {
        return Err("the domain is longer than 255 octets");
    }
    if email.len() > MAX_ADDRESS {
        return Err("it is longer than 254 octets");
    }
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    let forbidden = |c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '@');
    if !quoted && local.chars().any(forbidden) {
        return Err(
            "the part before the `@` holds whitespace, `<`, `>`, `\"` or `@` outside quotes",
        );
    }
    if domain.chars().any(forbidden) {
        return Err("the domain holds whitespace, `<`, `>`, `\"` or `@`");
    }
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return Err("the domain is not a dotted name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_whitespace() {
        assert_eq!(
            Email::parse("  John.Doe@Email.COM\n").unwrap().as_str(),
            "john.doe@email.com"
        );
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "john",
            "@email.com",
            "john@",
            "john@localhost",
            "a@b@c.com",
            "jo hn@x.com",
            "john@.com",
            "<script>alert(1)</script>@example.com",
            "john@exa<mple.com",
            "jo\u{7}hn@x.com",
            "\"john\"doe@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
        let long_domain = format!("a@{}.com", "b".repeat(252));
        assert!(Email::parse(&long_domain).is_err());
        let long_address = format!(
            "{}@{}.{}.com",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(122)
        );
        assert_eq!(long_address.len(), 255);
        assert!(Email::parse(&long_address).is_err());
    }

    #[test]
    fn a_quoted_local_part_may_hold_what_a_bare_one_may_not() {
        assert!(Email::parse("\"john <doe>\"@example.com").is_ok());
        assert!(Email::parse("\"a@b\"@example.com").is_ok());
    }

    #[test]
    fn the_error_quotes_at_most_the_start_of_the_text() {
        let huge = format!("{}@example.com", "x".repeat(1_000_000));
        let message = Email::parse(&huge).unwrap_err().to_string();
        assert!(message.len() < 300, "{}", message.len());
        assert!(message.contains("64 octets"), "{message}");
    }
}
