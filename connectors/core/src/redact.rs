//! Connection strings never reach logs or `status` whole: passwords, keys
//! and tokens are replaced by `***`.
//!
//! Three shapes are handled: URLs (`postgres://user:secret@host/db`,
//! `mongodb+srv://…`, with `?password=` style query parameters too),
//! `key=value;` strings (ADO.NET / ODBC / Cosmos DB: `Password=…;`, `Pwd=…;`,
//! `AccountKey=…;`) and libpq's `key=value key='quoted value'` form.

const SECRET_KEYS: &[&str] = &[
    "password",
    "pwd",
    "accountkey",
    "sharedaccesskey",
    "secret",
    "token",
    "apikey",
    "api_key",
    "sslpassword",
    "access_token",
];

fn is_secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k == *s)
}

/// The connection string with every secret replaced by `***`.
pub fn redact(conn: &str) -> String {
    // A URL starts with its scheme; a key=value string may hold a URL value.
    match conn.find("://") {
        Some(scheme_end)
            if conn[..scheme_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            redact_url(conn, scheme_end)
        }
        // Both readings: whichever form it is, each secret's value is
        // hidden by one (a libpq password may hold `;`, an ODBC value
        // spaces); hiding more than a value is harmless.
        _ => redact_words(&redact_pairs(conn)),
    }
}

/// libpq's keyword form: pairs apart by white space, a value quoted in
/// `'…'` (with `\'` inside) or braced, or running to the next space.
fn redact_words(conn: &str) -> String {
    redact_each_pair(conn, |value| match value.chars().next() {
        Some('\'') => {
            let mut escaped = false;
            value
                .char_indices()
                .skip(1)
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(value.len(), |(i, _)| i + 1)
        }
        Some('{') => value.find('}').map_or(value.len(), |i| i + 1),
        _ => value.find(char::is_whitespace).unwrap_or(value.len()),
    })
}

fn redact_url(conn: &str, scheme_end: usize) -> String {
    let rest_start = scheme_end + 3;
    let rest = &conn[rest_start..];
    // userinfo ends at the last '@' that is not in the query (`?user=a@b`:
    // a '=' between the '?' before it and it): a password may hold '@',
    // '/' or '?' (hiding a part of a path by mistake is harmless).
    let mut end = rest.len();
    let at = loop {
        let Some(last) = rest[..end].rfind('@') else {
            break None;
        };
        let in_query = rest[..last]
            .rfind('?')
            .is_some_and(|q| rest[q..last].contains('='));
        if !in_query {
            break Some(last);
        }
        end = last;
    };
    let mut out = conn[..rest_start].to_string();
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            at
        }
        None => 0,
    };
    let rest = &rest[after_userinfo..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    out.push_str(&rest[..authority_end]);
    let tail = &rest[authority_end..];
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let params: Vec<String> = tail[q + 1..]
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// `key=value;` pairs; values may be braced (`Pwd={a;b}`).
fn redact_pairs(conn: &str) -> String {
    redact_each_pair(conn, |value| {
        if value.starts_with('{') {
            value.find('}').map_or(value.len(), |i| i + 1)
        } else {
            value.find(';').unwrap_or(value.len())
        }
    })
}

/// Walks `key=value` pairs, `value_len(value)` saying where each value
/// ends (the text from the first non-space after `=`); what lies between
/// pairs (`;`, spaces) is kept as it is, a secret key's value becomes `***`.
fn redact_each_pair(conn: &str, value_len: impl Fn(&str) -> usize) -> String {
    let mut out = String::new();
    let mut rest = conn;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let key = &rest[..eq];
        let after = &rest[eq + 1..];
        let value = after.trim_start();
        let len = value_len(value);
        out.push_str(key);
        out.push('=');
        out.push_str(&after[..after.len() - value.len()]);
        if is_secret_key(key) && len > 0 {
            out.push_str("***");
        } else {
            out.push_str(&value[..len]);
        }
        rest = &value[len..];
        let gap = rest.len() - rest.trim_start_matches([';', ' ', '\t', '\n']).len();
        out.push_str(&rest[..gap]);
        rest = &rest[gap..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            redact("postgres://app:s3cr@t@db.example:5432/hq?sslmode=require&password=x"),
            "postgres://app:***@db.example:5432/hq?sslmode=require&password=***"
        );
        assert_eq!(
            redact("mongodb+srv://u:p@cluster0.mongodb.net/"),
            "mongodb+srv://u:***@cluster0.mongodb.net/"
        );
        // A password holding `/` or `?`: drivers read it to the `@`.
        assert_eq!(
            redact("postgres://app:s3cr/t@db.example.com/shop"),
            "postgres://app:***@db.example.com/shop"
        );
        assert_eq!(
            redact("postgres://app:a?b/c@db/shop?password=x"),
            "postgres://app:***@db/shop?password=***"
        );
        assert_eq!(
            redact("postgres://u:p@ss/w@host/db"),
            "postgres://u:***@host/db"
        );
        // An '@' in the query is no userinfo; the query is still redacted.
        assert_eq!(
            redact("postgres://h.example:5432/db?user=admin@srv&password=SECRET"),
            "postgres://h.example:5432/db?user=admin@srv&password=***"
        );
        assert_eq!(
            redact("postgres://localhost/shop?user=a@b&password=SECRET"),
            "postgres://localhost/shop?user=a@b&password=***"
        );
        assert_eq!(redact("postgres://localhost/db"), "postgres://localhost/db");
        assert_eq!(
            redact("postgres://user@localhost/db"),
            "postgres://user@localhost/db"
        );
    }

    #[test]
    fn key_value_secrets_are_hidden() {
        assert_eq!(
            redact("Server=tcp:x,1433;Database=d;User Id=sa;Password=Very;Secret;"),
            "Server=tcp:x,1433;Database=d;User Id=sa;Password=***;Secret;"
        );
        assert_eq!(
            redact("Driver={IBM DB2 ODBC DRIVER};Hostname=h;Uid=db2;Pwd={a;b=c};Port=50000;"),
            "Driver={IBM DB2 ODBC DRIVER};Hostname=h;Uid=db2;Pwd=***;Port=50000;"
        );
        assert_eq!(
            redact("AccountEndpoint=https://a.documents.azure.com:443/;AccountKey=abc==;"),
            "AccountEndpoint=https://a.documents.azure.com:443/;AccountKey=***;"
        );
    }

    #[test]
    fn libpq_keyword_secrets_are_hidden() {
        assert_eq!(
            redact("host=db.example port=5432 user=app password=s3cret dbname=hq"),
            "host=db.example port=5432 user=app password=*** dbname=hq"
        );
        assert_eq!(
            redact("host=h password='a b\\'c' sslmode=verify-full"),
            "host=h password=*** sslmode=verify-full"
        );
        assert_eq!(redact("Password=x"), "Password=***");
    }

    #[test]
    fn secrets_never_survive_in_any_output() {
        for s in [
            "postgres://u:topsecret@h/db",
            "Password=topsecret",
            "pwd=topsecret;",
            "mongodb://u:topsecret@h/?authSource=admin",
            "host=h user=u password=topsecret dbname=d",
            "host=h password = 'top secret\\' topsecret' sslmode=require",
            "host=h sslpassword={topsecret}",
            "password=top;secret host=h",
            "host=h password='top;secret' dbname=d",
        ] {
            assert!(!redact(s).contains("topsecret"), "{s} → {}", redact(s));
        }
    }
}
