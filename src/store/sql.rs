//! The few SQL operations the writer's transaction needs, over either
//! driver: sqlx's `Any` connection (PostgreSQL, and in-memory SQLite) or a
//! rusqlite connection owned by the SQLite writer thread ([`super::lite`]).
//!
//! Statements are `&'static str` with `$N` placeholders and only integer and
//! text values, so one statement text runs on both. Rows are read by column
//! position.

use std::future::Future;

use anyhow::Context as _;
use sqlx::Row as _;

/// One bound value. The type stays with a NULL: PostgreSQL refuses a NULL
/// typed as an integer for a text column.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

/// `args![a, b, …]`: the values of `$1`, `$2`, … in order.
macro_rules! args {
    ($($e:expr),* $(,)?) => { &[$($crate::store::sql::Arg::from($e)),*] };
}
pub(super) use args;

/// An INSERT of one row into a table whose key is `id`, as written and with
/// `RETURNING id`: see [`Conn::insert_id`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Insert {
    pub(super) plain: &'static str,
    pub(super) returning: &'static str,
}

/// `insert!("INSERT …")`: the statement, and the same with `RETURNING id`.
macro_rules! insert {
    ($sql:literal) => {
        $crate::store::sql::Insert { plain: $sql, returning: concat!($sql, " RETURNING id") }
    };
}
pub(super) use insert;

/// One value read back.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// One row read back, by column position.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Row(pub(super) Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> anyhow::Result<&Cell> {
        self.0.get(i).with_context(|| format!("no column {i} in a row of {}", self.0.len()))
    }

    pub(super) fn int(&self, i: usize) -> anyhow::Result<i64> {
        self.opt_int(i)?.with_context(|| format!("column {i} is NULL"))
    }

    pub(super) fn opt_int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            Cell::Text(_) => anyhow::bail!("column {i} is text, not an integer"),
        }
    }

    pub(super) fn text(&self, i: usize) -> anyhow::Result<String> {
        self.opt_text(i)?.with_context(|| format!("column {i} is NULL"))
    }

    pub(super) fn opt_text(&self, i: usize) -> anyhow::Result<Option<String>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s.clone())),
            Cell::Int(_) => anyhow::bail!("column {i} is an integer, not text"),
        }
    }
}

/// A connection inside the writer's transaction.
///
/// The rusqlite side answers at once (its futures are ready on first poll);
/// the sqlx side goes to the database.
pub(super) trait Conn {
    /// True on PostgreSQL, where several instances write at once (row locks,
    /// `SKIP LOCKED`); SQLite has one writer at a time.
    fn postgres(&self) -> bool {
        false
    }

    /// Runs a statement that returns no rows; how many rows it changed.
    fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> impl Future<Output = anyhow::Result<u64>>;

    /// Runs a query (or a statement with RETURNING) and reads every row.
    fn fetch(&mut self, sql: &'static str, args: &[Arg<'_>]) -> impl Future<Output = anyhow::Result<Vec<Row>>>;

    /// Runs `insert`; the new row's id, or None when it inserted nothing
    /// (`ON CONFLICT … DO NOTHING`). Through `RETURNING id` here; SQLite's
    /// writer reads the id from its connection instead, since SQLite's
    /// RETURNING first collects the rows in a B-tree of their own, made and
    /// dropped each time (~1% of the server's CPU under the bench).
    fn insert_id(&mut self, insert: Insert, args: &[Arg<'_>]) -> impl Future<Output = anyhow::Result<Option<i64>>> {
        async move { self.fetch_optional(insert.returning, args).await?.map(|r| r.int(0)).transpose() }
    }

    /// The first row, if any.
    fn fetch_optional(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = anyhow::Result<Option<Row>>> {
        async move { Ok(self.fetch(sql, args).await?.into_iter().next()) }
    }
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for a in args {
        q = match *a {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
        };
    }
    q
}

impl Conn for sqlx::AnyConnection {
    fn postgres(&self) -> bool {
        self.backend_name() == "PostgreSQL"
    }

    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> anyhow::Result<u64> {
        Ok(bind(sqlx::query(sql), args).execute(&mut *self).await?.rows_affected())
    }

    async fn fetch(&mut self, sql: &'static str, args: &[Arg<'_>]) -> anyhow::Result<Vec<Row>> {
        let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self).await?;
        rows.iter().map(any_row).collect()
    }
}

/// Reads an `Any` row: each column is an integer, text or NULL.
fn any_row(r: &sqlx::any::AnyRow) -> anyhow::Result<Row> {
    (0..r.len())
        .map(|i| {
            if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                return Ok(v.map_or(Cell::Null, Cell::Int));
            }
            let v: Option<String> = r.try_get(i).with_context(|| format!("column {i} is neither integer nor text"))?;
            Ok(v.map_or(Cell::Null, Cell::Text))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Row)
}
