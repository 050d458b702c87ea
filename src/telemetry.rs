//! Logging set-up: human-readable by default, JSON on request, filtered by
//! `RUST_LOG`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `json` selects one JSON object per line.
/// Colours only go to a terminal, so a log file or a journal stays plain text.
pub fn init(json: bool, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json { builder.json().try_init() } else { builder.compact().try_init() };
}

/// An error and its causes, `outer: cause: …` as anyhow's `{:#}` prints them,
/// except a cause whose text ends the message before it: sqlx's errors
/// quote their cause in their own message (`error communicating with
/// database: Connection reset by peer (os error 104)`), which `{:#}` then
/// printed a second time. And without the line of PostgreSQL's source that
/// sqlx 0.9 appends to PostgreSQL's errors, wherever the chain quotes one
/// (`database "x" does not exist at line 948`), which reads as a line of
/// the user's config or SQL.
pub fn chain<'a>(e: &'a (dyn std::error::Error + Send + Sync + 'static)) -> Chain<'a> {
    Chain(e)
}

/// See [`chain`].
pub struct Chain<'a>(&'a (dyn std::error::Error + Send + Sync + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut texts = Vec::new();
        // Each database error's text with the source line, and without.
        let mut lines = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        while let Some(e) = next {
            if let Some(sqlx::Error::Database(db)) = e.downcast_ref::<sqlx::Error>() {
                let said = db.to_string();
                if said
                    .strip_prefix(db.message())
                    .and_then(|rest| rest.strip_prefix(" at line "))
                    .is_some_and(|line| !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()))
                {
                    lines.push((said, db.message().to_owned()));
                }
            }
            texts.push(e.to_string());
            next = e.source();
        }
        let mut last: Option<String> = None;
        for mut text in texts {
            for (with, without) in &lines {
                text = text.replace(with.as_str(), without);
            }
            match &last {
                None => f.write_str(&text)?,
                Some(before) if before.ends_with(&text) => {}
                Some(_) => write!(f, ": {text}")?,
            }
            last = Some(text);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[test]
    fn a_cause_already_quoted_by_the_error_above_it_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "Connection reset by peer (os error 104)");
        let e = anyhow::Error::new(sqlx::Error::Io(io)).context("no database connection for a batch of writes");
        assert_eq!(
            format!("{e:#}"),
            "no database connection for a batch of writes: error communicating with database: \
             Connection reset by peer (os error 104): Connection reset by peer (os error 104)",
            "anyhow alone says it twice"
        );
        assert_eq!(
            chain(e.as_ref()).to_string(),
            "no database connection for a batch of writes: error communicating with database: \
             Connection reset by peer (os error 104)"
        );
        // Causes that are not quoted above them all stay.
        let e = anyhow::anyhow!("disk full").context("writing the WAL").context("a batch of writes");
        assert_eq!(chain(e.as_ref()).to_string(), "a batch of writes: writing the WAL: disk full");
        assert_eq!(chain(e.as_ref()).to_string(), format!("{e:#}"));
    }

    /// A database's error as sqlx has it: `said` its text, `message` its message.
    #[derive(Debug)]
    struct Db {
        said: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for Db {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.said)
        }
    }

    impl std::error::Error for Db {}

    impl sqlx::error::DatabaseError for Db {
        fn message(&self) -> &str {
            self.message
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// As sqlx 0.9 says PostgreSQL's errors: the message, then the line of
    /// PostgreSQL's source that raised it.
    const REFUSED: Db =
        Db { said: "database \"x\" does not exist at line 948", message: "database \"x\" does not exist" };

    #[test]
    fn a_database_error_is_its_message_once_without_the_servers_source_line() {
        let e = anyhow::Error::new(sqlx::Error::Database(Box::new(REFUSED))).context("opening database");
        assert!(format!("{e:#}").contains("at line 948"), "sqlx's own text: {e:#}");
        assert_eq!(
            chain(e.as_ref()).to_string(),
            "opening database: error returned from database: database \"x\" does not exist"
        );
        // Quoted by an error above it (a migration's): once, and without the line there too.
        let migration = sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(Box::new(REFUSED)));
        let e = anyhow::Error::new(migration).context("migrating the database");
        assert_eq!(
            chain(e.as_ref()).to_string(),
            "migrating the database: while executing migrations: error returned from database: database \"x\" \
             does not exist"
        );
    }

    /// SQLite's: no source line, and the code before the message.
    const LOCKED: Db = Db { said: "(code: 5) database is locked", message: "database is locked" };

    #[test]
    fn a_database_error_without_a_source_line_keeps_its_code() {
        let e = anyhow::Error::new(sqlx::Error::Database(Box::new(LOCKED))).context("a batch of writes");
        assert_eq!(
            chain(e.as_ref()).to_string(),
            "a batch of writes: error returned from database: (code: 5) database is locked"
        );
    }
}
