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
/// printed a second time.
pub fn chain<'a>(e: &'a (dyn std::error::Error + Send + Sync + 'static)) -> Chain<'a> {
    Chain(e)
}

/// See [`chain`].
pub struct Chain<'a>(&'a (dyn std::error::Error + Send + Sync + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        let mut last: Option<String> = None;
        while let Some(e) = next {
            let text = e.to_string();
            match &last {
                None => f.write_str(&text)?,
                Some(before) if before.ends_with(&text) => {}
                Some(_) => write!(f, ": {text}")?,
            }
            last = Some(text);
            next = e.source();
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
}
