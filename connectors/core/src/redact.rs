//! Connection strings never reach logs or `status` whole: passwords, keys
//! and tokens are replaced by `***`.
//!
//! Two shapes are handled: URLs (`postgres://user:secret@host/db`,
//! `mongodb+srv://…`, with `?password=` style query parameters too) and
//! `key=value;` strings (ADO.NET / ODBC / Cosmos DB: `Password=…;`, `Pwd=…;`,
//! `AccountKey=…;`).

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
        _ => redact_pairs(conn),
    }
}

fn redact_url(conn: &str, scheme_end: usize) -> String {
    let rest_start = scheme_end + 3;
    let rest = &conn[rest_start..];
    // userinfo ends at the last '@' before the path (passwords may hold '@').
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = conn[..rest_start].to_string();
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
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

fn redact_pairs(conn: &str) -> String {
    // Values may be braced (`Pwd={a;b}`), so split by hand.
    let mut out = String::new();
    let mut rest = conn;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let key = &rest[..eq];
        let after = &rest[eq + 1..];
        let value_len = if after.trim_start().starts_with('{') {
            after.find('}').map(|i| i + 1).unwrap_or(after.len())
        } else {
            after.find(';').unwrap_or(after.len())
        };
        out.push_str(key);
        out.push('=');
        if is_secret_key(key) && value_len > 0 {
            out.push_str("***");
        } else {
            out.push_str(&after[..value_len]);
        }
        rest = &after[value_len..];
        if let Some(stripped) = rest.strip_prefix(';') {
            out.push(';');
            rest = stripped;
        }
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
    fn secrets_never_survive_in_any_output() {
        for s in [
            "postgres://u:topsecret@h/db",
            "Password=topsecret",
            "pwd=topsecret;",
            "mongodb://u:topsecret@h/?authSource=admin",
        ] {
            assert!(!redact(s).contains("topsecret"), "{s} → {}", redact(s));
        }
    }
}
