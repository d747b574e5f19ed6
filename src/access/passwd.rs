//! `tablecast passwd`: a password's argon2id hash, for the access file's `users`.

use std::io::{BufRead, IsTerminal};

use argon2::{Argon2, PasswordHasher};

/// The argon2id hash of `password` (default parameters, a random salt), in PHC form.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Reads a password (asked for twice at a terminal; the first line of standard input
/// otherwise) and returns its hash.
pub fn run() -> Result<String, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords differ".to_owned());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    hash(&password)
}
